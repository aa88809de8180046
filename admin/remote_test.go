package admin_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/admin"
	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/client"
	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/authoritytest"
	"github.com/mbot-dev/mbot/internal/simci"
)

// botsYAML is the admin tests' resources: bot deployer and its join token.
const botsYAML = authoritytest.DeployerYAML

// startAuthority serves an authority on loopback and returns it with its data_dir.
func startAuthority(t *testing.T) (*authority.Authority, string, *simci.Issuer) {
	t.Helper()
	e := authoritytest.Start(t, "admin.test", botsYAML, "require_session_mfa: true\n")
	return e.Authority, e.DataDir, e.Issuer
}

func TestRemoteAdmin(t *testing.T) {
	a, dataDir, _ := startAuthority(t)
	adminDir := filepath.Join(dataDir, authority.AdminDirName)
	if st, err := os.Stat(filepath.Join(adminDir, identity.FileTLSKey)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("admin identity key: %v %v", st, err)
	}
	r, err := admin.OpenRemote(adminDir, "")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := t.Context()

	applied, err := r.Apply(ctx, "new.yaml", []byte("kind: role\nversion: v1\nmetadata: {name: audit-read}\nspec: {logins: [auditor]}\n"))
	if err != nil || len(applied) != 1 || applied[0] != "role/audit-read" {
		t.Fatalf("Apply = %v, %v", applied, err)
	}
	if _, ok := a.Resources().Roles["audit-read"]; !ok {
		t.Error("the running authority does not have the applied role")
	}
	set, err := r.Resources(ctx)
	if err != nil || set.Roles["audit-read"] == nil || set.Bots["deployer"] == nil || set.JoinTokens["github-deploy"] == nil {
		t.Fatalf("Resources = %+v, %v", set, err)
	}
	_, err = r.Apply(ctx, "bad.yaml", []byte("kind: role\nversion: v1\nmetadata: {name: x}\nspec: {loginz: [a]}\n"))
	if err == nil || !strings.Contains(err.Error(), "bad.yaml:4") {
		t.Errorf("a bad document was not refused with its line: %v", err)
	}
	if err := r.Delete(ctx, "role", "deploy"); err == nil || !strings.Contains(err.Error(), "deployer") {
		t.Errorf("deleting a role a bot holds: %v", err)
	}
	if err := r.Delete(ctx, "role", "audit-read"); err != nil {
		t.Errorf("Delete: %v", err)
	}
	if _, ok := a.Resources().Roles["audit-read"]; ok {
		t.Error("the deleted role is still in effect")
	}
	s, err := r.Settings(ctx)
	if err != nil || s.ClusterName != "admin.test" || !s.RequireSessionMFA || s.MaxAdminTTL != "8760h0m0s" {
		t.Errorf("Settings = %+v, %v", s, err)
	}
	events, err := r.Audit(ctx, store.AuditFilter{Since: time.Now().Add(-time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, ev := range events {
		kinds = append(kinds, ev.Event+":"+ev.Message)
		if strings.HasPrefix(ev.Event, "resource.") && ev.Message == "role/audit-read" && !strings.HasPrefix(ev.Remote, "admin admin from ") {
			t.Errorf("resource change recorded with actor %q", ev.Remote)
		}
	}
	want := []string{"resource.rm:role/audit-read", "resource.apply:role/audit-read"}
	if len(kinds) < 2 || kinds[0] != want[0] || kinds[1] != want[1] {
		t.Errorf("newest audit events %v, want %v first", kinds, want)
	}
}

func TestAdminAPIRefusesNonAdmins(t *testing.T) {
	a, dataDir, iss := startAuthority(t)
	info, err := os.ReadFile(filepath.Join(dataDir, authority.AdminDirName, "admin.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ai authority.AdminInfo
	if err := json.Unmarshal(info, &ai); err != nil {
		t.Fatal(err)
	}
	// A bot identity, signed by the same CA, is not an admin.
	botDir := filepath.Join(t.TempDir(), "bot")
	env := iss.GitHubEnv()
	if _, err := client.Issue(t.Context(), client.IssueOptions{Authority: ai.Authority, CAPin: ai.CAPin, Token: "github-deploy",
		Out: botDir, Env: func(k string) string { return env[k] }}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(botDir, "admin.json"), info, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := admin.OpenRemote(botDir, "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Apply(t.Context(), "x.yaml", []byte("kind: role\nversion: v1\nmetadata: {name: sneaky}\nspec: {logins: [root]}\n"))
	var ie *identity.Error
	if !errors.As(err, &ie) || ie.Code != identity.CodeAdminRequired || !strings.Contains(ie.Message, "bot identities cannot") {
		t.Errorf("a bot identity on the admin API: %v", err)
	}
	if _, ok := a.Resources().Roles["sneaky"]; ok {
		t.Error("a bot identity applied a role")
	}
	// No client certificate at all.
	pool := a.CAs().TLSCert
	plain := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: func() *x509.CertPool { p := x509.NewCertPool(); p.AddCert(pool); return p }(),
	}}}
	resp, err := plain.Get(ai.Authority + authority.PathAdminResources)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no client certificate: status %d, want 401", resp.StatusCode)
	}
}
