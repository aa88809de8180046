package authority_test

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/authority/store"
)

// TestStoredResourcesThatNoLongerLoad checks an upgrade: resources stored by
// an earlier version whose checks were looser stop the authority at start
// with what to do, and an admin can replace or remove them.
func TestStoredResourcesThatNoLongerLoad(t *testing.T) {
	dir := t.TempDir()
	const files = "kind: role\nversion: v1\nmetadata: {name: deploy}\nspec: {logins: [ci]}\n---\nkind: bot\nversion: v1\nmetadata: {name: deployer}\nspec: {roles: [deploy]}\n"
	if err := os.WriteFile(filepath.Join(dir, "bots.yaml"), []byte(files), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := tryOpen(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	// What an earlier version accepted: a login with a space, a name in upper case.
	stale := []store.StoredResource{
		{Kind: "role", Name: "ops", Body: []byte("kind: role\nversion: v1\nmetadata: {name: ops}\nspec: {logins: [\"ubuntu root\"]}\n")},
		{Kind: "role", Name: "Deploy", Body: []byte("kind: role\nversion: v1\nmetadata: {name: Deploy}\nspec: {logins: [ci]}\n")},
	}
	if err := a.Store().PutResources(t.Context(), stale); err != nil {
		t.Fatal(err)
	}
	a.Close()

	if _, err = tryOpen(t, dir); err == nil || !strings.Contains(err.Error(), "stored role/Deploy") || !strings.Contains(err.Error(), "mbot rm role/Deploy") {
		t.Fatalf("Open = %v; want a refusal naming stored role/Deploy and how to remove it", err)
	}

	cfg, err := authority.ParseConfig(filepath.Join(dir, "authority.yaml"), []byte("cluster_name: acme\ndata_dir: data\n"))
	if err != nil {
		t.Fatal(err)
	}
	local, err := authority.OpenLocal(t.Context(), cfg, authority.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("OpenLocal: %v; admin commands must still open to fix the store", err)
	}
	if r := local.Resources().Roles["Deploy"]; r == nil || len(r.Spec.Logins) != 0 {
		t.Errorf("role Deploy is %+v; want a placeholder that grants nothing", r)
	}
	if _, err := local.SignUser(t.Context(), authority.UserSignRequest{User: "alice", Roles: []string{"ops"}, TTL: time.Hour,
		Dir: filepath.Join(dir, "alice"), OSUser: "operator"}); err == nil || !strings.Contains(err.Error(), "do not load") {
		t.Errorf("SignUser on resources that do not load = %v; want a refusal", err)
	}
	// Deploy is removed and a corrected ops replaces the stored one; each
	// works while the other is still stale.
	if err := local.Delete(t.Context(), "role", "Deploy", "test"); err != nil {
		t.Fatalf("Delete of a stale resource: %v", err)
	}
	if _, ok := local.Resources().Roles["Deploy"]; ok {
		t.Error("role Deploy is still listed after its removal")
	}
	if r := local.Resources().Roles["ops"]; r == nil || len(r.Spec.Logins) != 0 {
		t.Errorf("role ops is %+v; want a placeholder that grants nothing", r)
	}
	fixed, err := resources.Parse("ops.yaml", []byte("kind: role\nversion: v1\nmetadata: {name: ops}\nspec: {logins: [ubuntu, root]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := local.Apply(t.Context(), fixed, "test"); err != nil {
		t.Fatalf("Apply of a corrected role: %v", err)
	}
	if got := local.Resources().Roles["ops"]; got == nil || len(got.Spec.Logins) != 2 {
		t.Errorf("role ops is %+v after apply", got)
	}
	local.Close()
	a2, err := tryOpen(t, dir)
	if err != nil {
		t.Fatalf("Open after the fix: %v", err)
	}
	a2.Close()
}
