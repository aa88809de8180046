package admin_test

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/admin"
	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/locks"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/authoritytest"
)

// signAdmin writes an admin identity signed by a (mbot sign --admin) to a
// new directory and opens it against the authority at url.
func signAdmin(t *testing.T, a *authority.Authority, url string, req authority.AdminSignRequest) (*admin.Remote, *x509.Certificate) {
	t.Helper()
	signed, err := a.SignAdmin(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), req.Admin)
	if err := identity.WriteDir(dir, signed.Files); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, identity.FileTLSCert))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	var info authority.AdminInfo
	if data, err := os.ReadFile(filepath.Join(dir, "admin.json")); err != nil || json.Unmarshal(data, &info) != nil ||
		info.Name != req.Admin || info.ReadOnly != req.ReadOnly || info.CAPin != a.CAs().Pin() {
		t.Fatalf("admin.json: %+v, %v", info, err)
	}
	remote, err := admin.OpenRemote(dir, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { remote.Close() })
	return remote, cert
}

// TestReadOnlyAdminIdentity: mbot sign --admin NAME --read-only makes an
// identity that the admin API answers every read of and refuses every
// change of with admin_read_only, recorded in the audit log, changing
// nothing; one signed without --read-only changes things; both are
// admin NAME to mbot lock --admin; both signings are in the audit log.
func TestReadOnlyAdminIdentity(t *testing.T) {
	e := authoritytest.Start(t, "admin.test", botsYAML, "")
	ctx := t.Context()
	carol, cert := signAdmin(t, e.Authority, e.URL, authority.AdminSignRequest{Admin: "carol", ReadOnly: true, OSUser: "root"})
	if !carol.ReadOnly() {
		t.Error("the read-only identity's Remote does not say it is read-only")
	}
	if got := cert.URIs[0].String(); got != "spiffe://admin.test/admin/carol" || !slices.Equal(cert.Subject.OrganizationalUnit, []string{authority.AdminReadOnly}) {
		t.Errorf("the read-only identity's certificate: URI %s, OU %v", got, cert.Subject.OrganizationalUnit)
	}
	if left := time.Until(cert.NotAfter); left > 24*time.Hour || left < 23*time.Hour {
		t.Errorf("it expires in %s, want admin_identity_ttl (24h)", left.Round(time.Minute))
	}

	// Every read works.
	if _, err := carol.Settings(ctx); err != nil {
		t.Fatalf("a read-only admin reading the settings: %v", err)
	}
	if set, err := carol.Resources(ctx); err != nil || set.Bots["deployer"] == nil {
		t.Fatalf("a read-only admin listing resources: %v", err)
	}
	for name, read := range map[string]func() error{
		"audit": func() error { _, err := carol.Audit(ctx, store.AuditFilter{Limit: 5}); return err },
		"audit summary": func() error {
			_, err := carol.AuditSummary(ctx, store.SummaryFilter{Since: time.Now().Add(-time.Hour)})
			return err
		},
		"locks":         func() error { _, err := carol.Locks(ctx); return err },
		"bot instances": func() error { _, err := carol.BotInstances(ctx, ""); return err },
		"cas":           func() error { _, err := carol.CAStatus(ctx); return err },
		"leaf tunnels":  func() error { _, err := carol.LeafTunnels(ctx); return err },
		"issued":        func() error { _, err := carol.Issued(ctx, 1); return err },
	} {
		if err := read(); err != nil {
			t.Errorf("a read-only admin reading %s: %v", name, err)
		}
	}

	// Every change is refused, and changes nothing.
	changes := map[string]func() error{
		"lock": func() error {
			_, err := carol.Lock(ctx, admin.LockRequest{Kind: locks.KindBot, Target: "deployer", Reason: "x"})
			return err
		},
		"unlock":          func() error { _, err := carol.UnlockLock(ctx, locks.KindBot, "deployer"); return err },
		"unlock bot":      func() error { _, err := carol.Unlock(ctx, "deployer"); return err },
		"lock admin":      func() error { _, err := carol.LockAdmin(ctx, "admin", "x"); return err },
		"unlock admin":    func() error { _, err := carol.UnlockAdmin(ctx, "admin"); return err },
		"unlock token":    func() error { _, err := carol.UnlockJoinToken(ctx, "github-deploy"); return err },
		"unlock instance": func() error { _, err := carol.UnlockInstance(ctx, "x"); return err },
		"delete":          func() error { return carol.Delete(ctx, "join_token", "github-deploy") },
		"apply": func() error {
			_, err := carol.Apply(ctx, "r.yaml", []byte("kind: role\nversion: v1\nmetadata: {name: extra}\nspec: {logins: [x]}\n"))
			return err
		},
	}
	for name, change := range changes {
		var refusal *identity.Error
		if err := change(); !errors.As(err, &refusal) || refusal.Code != identity.CodeAdminReadOnly ||
			!strings.Contains(refusal.Message, `admin "carol" has a read-only identity`) || !strings.Contains(refusal.Message, "mbot sign --admin NAME without --read-only") {
			t.Errorf("a read-only admin's %s: %v, want admin_read_only naming what to use", name, err)
		}
	}
	e.Authority.Refresh(ctx)
	if l := e.Authority.Locks().List(time.Now()); len(l) != 0 {
		t.Errorf("refused changes left locks: %+v", l)
	}
	set, err := carol.Resources(ctx)
	if err != nil || set.JoinTokens["github-deploy"] == nil || set.Roles["extra"] != nil {
		t.Errorf("refused changes changed the resources: %v", err)
	}
	refused, err := e.Authority.Store().ListAudit(ctx, store.AuditFilter{Event: "admin.refused", Code: string(identity.CodeAdminReadOnly)})
	if err != nil || len(refused) != len(changes) {
		t.Fatalf("audit records of the refusals: %d, %v; want %d", len(refused), err, len(changes))
	}
	for _, ev := range refused {
		if ev.Allowed || ev.Claims["admin"] != "carol" || !strings.HasPrefix(ev.Remote, "admin carol from ") || ev.Claims["request"] == "" {
			t.Errorf("a refusal's record: %+v", ev)
		}
	}

	// An identity signed without --read-only changes things, and the two
	// are locked by name.
	dave, cert := signAdmin(t, e.Authority, e.URL, authority.AdminSignRequest{Admin: "dave", TTL: 2 * time.Hour, OSUser: "root"})
	if dave.ReadOnly() || len(cert.Subject.OrganizationalUnit) != 0 {
		t.Errorf("an identity signed without --read-only is read-only: OU %v", cert.Subject.OrganizationalUnit)
	}
	if left := time.Until(cert.NotAfter); left > 2*time.Hour || left < 2*time.Hour-time.Minute {
		t.Errorf("--ttl 2h: it expires in %s", left.Round(time.Minute))
	}
	if _, err := dave.LockAdmin(ctx, "carol", "left the team"); err != nil {
		t.Fatalf("a full admin locking carol: %v", err)
	}
	var refusal *identity.Error
	if _, err := carol.Settings(ctx); !errors.As(err, &refusal) || refusal.Code != identity.CodeAdminLocked {
		t.Errorf("a locked read-only admin reading: %v, want admin_locked", err)
	}

	signings, err := e.Authority.Store().ListAudit(ctx, store.AuditFilter{Event: "sign.admin", Claims: map[string]string{"os_user": "root"}})
	if err != nil || len(signings) != 2 {
		t.Fatalf("audit records of the signings: %d, %v", len(signings), err)
	}
	if ev := signings[1]; !ev.Allowed || ev.Claims["admin"] != "carol" || ev.Claims["read_only"] != "true" || len(ev.Serials) != 1 ||
		!strings.Contains(ev.Message, "read-only admin identity") {
		t.Errorf("carol's signing: %+v", ev)
	}

	// Refused signings say what to change and are recorded.
	for _, tc := range []struct {
		req  authority.AdminSignRequest
		want string
	}{
		{authority.AdminSignRequest{Admin: "Bad Name"}, "--admin"},
		{authority.AdminSignRequest{Admin: "erin", TTL: 9000 * time.Hour}, "above max_admin_ttl"},
		{authority.AdminSignRequest{Admin: "erin", TTL: -time.Hour}, "negative"},
	} {
		if _, err := e.Authority.SignAdmin(ctx, tc.req); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("SignAdmin(%+v): %v, want %q", tc.req, err, tc.want)
		}
	}
	if list, err := e.Authority.Store().ListAudit(ctx, store.AuditFilter{Event: "sign.admin", DeniedOnly: true}); err != nil || len(list) != 3 {
		t.Errorf("audit records of the refused signings: %d, %v", len(list), err)
	}
}
