package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestRemoteAdminCLI drives the admin commands through the admin API with
// the admin identity the authority wrote on first start, as an operator
// off the authority host would.
func TestRemoteAdminCLI(t *testing.T) {
	c := startCluster(t)
	adminDir := filepath.Join(filepath.Dir(c.config), "data", "admin")
	env := baseEnv(c.home)

	var bots []struct {
		Metadata struct{ Name string }
	}
	out := mustMbot(t, env, "get", "bots", "--auth", adminDir, "-o", "json").stdout
	if err := json.Unmarshal([]byte(out), &bots); err != nil || len(bots) != 1 || bots[0].Metadata.Name != botName {
		t.Fatalf("mbot get bots --auth: %v\n%s", err, out)
	}

	rolePath := filepath.Join(t.TempDir(), "role.yaml")
	writeFile(t, rolePath, "kind: role\nversion: v1\nmetadata: {name: remote-made}\nspec: {logins: [nobody]}\n", 0o600)
	if res := mustMbot(t, env, "apply", "--auth", adminDir, "-f", rolePath); !strings.Contains(res.stdout, "role/remote-made") {
		t.Errorf("mbot apply --auth printed %q", res.stdout)
	}
	// The local view of the same store sees the change.
	if res := mustMbot(t, env, "get", "roles", "--config", c.config); !strings.Contains(res.stdout, "remote-made") {
		t.Errorf("the role applied remotely is not in the store:\n%s", res.stdout)
	}
	res := mustMbot(t, env, "audit", "--auth", adminDir, "-o", "json")
	if !strings.Contains(res.stdout, `"resource.apply"`) || !strings.Contains(res.stdout, "admin admin from 127.0.0.1") {
		t.Errorf("the remote change is not in the audit log as the admin's:\n%s", res.stdout)
	}

	// A bot identity is not an admin identity.
	botDir := filepath.Join(t.TempDir(), "bot")
	c.issue(t, c.jobEnv(gitHubJob(t, c)), tokenGitHub, botDir)
	writeFile(t, filepath.Join(botDir, "admin.json"), readFile(t, filepath.Join(adminDir, "admin.json")), 0o600)
	res = mbot(t, env, "rm", "role/remote-made", "--auth", botDir)
	if res.code == 0 || !strings.Contains(res.stderr, "admin_required") {
		t.Errorf("a bot identity removed a role: %s", res)
	}
}

// TestReadOnlyAdminCLI: mbot sign --admin NAME --read-only writes an admin
// identity that mbot get and audit use through the admin API and that mbot
// lock and apply are refused with (admin_read_only), changing nothing; one
// signed without --read-only locks that admin by name.
func TestReadOnlyAdminCLI(t *testing.T) {
	c := startCluster(t)
	env := baseEnv(c.home)
	carol := filepath.Join(t.TempDir(), "carol")
	res := mustMbot(t, env, "sign", "--config", c.config, "--admin", "carol", "--read-only", "--out", carol)
	if !strings.Contains(res.stderr, `read-only admin identity for "carol"`) || !strings.Contains(res.stderr, "--auth "+carol) {
		t.Errorf("mbot sign --admin --read-only does not say what it wrote:\n%s", res.stderr)
	}
	if res := mustMbot(t, env, "get", "bots", "--auth", carol); !strings.Contains(res.stdout, botName) {
		t.Errorf("mbot get bots with the read-only identity (the authority named in its admin.json):\n%s", res.stdout)
	}
	res = mbot(t, env, "lock", "bot/"+botName, "--reason", "test", "--auth", carol)
	if res.code == 0 || !strings.Contains(res.stderr, "admin_read_only") || !strings.Contains(res.stderr, "without --read-only") {
		t.Errorf("mbot lock with a read-only identity: %s", res)
	}
	rolePath := filepath.Join(t.TempDir(), "role.yaml")
	writeFile(t, rolePath, "kind: role\nversion: v1\nmetadata: {name: read-only-made}\nspec: {logins: [nobody]}\n", 0o600)
	if res := mbot(t, env, "apply", "-f", rolePath, "--auth", carol); res.code == 0 || !strings.Contains(res.stderr, "admin_read_only") {
		t.Errorf("mbot apply with a read-only identity: %s", res)
	}
	if res := mustMbot(t, env, "get", "locks", "--config", c.config); strings.Contains(res.stdout, botName) {
		t.Errorf("a refused lock is in force:\n%s", res.stdout)
	}
	if res := mustMbot(t, env, "get", "roles", "--config", c.config); strings.Contains(res.stdout, "read-only-made") {
		t.Errorf("a refused apply made a role:\n%s", res.stdout)
	}
	res = mustMbot(t, env, "audit", "--denied", "--auth", carol, "-o", "json")
	if strings.Count(res.stdout, `"admin_read_only"`) != 2 || !strings.Contains(res.stdout, "admin carol from 127.0.0.1") {
		t.Errorf("the refusals are not in the audit log as carol's:\n%s", res.stdout)
	}

	dave := filepath.Join(t.TempDir(), "dave")
	mustMbot(t, env, "sign", "--config", c.config, "--admin", "dave", "--ttl", "1h", "--out", dave)
	mustMbot(t, env, "lock", "--admin", "carol", "--reason", "left the team", "--auth", dave)
	if res := mbot(t, env, "get", "bots", "--auth", carol); res.code == 0 || !strings.Contains(res.stderr, "admin_locked") {
		t.Errorf("mbot get with a locked read-only identity: %s", res)
	}
	if res := mbot(t, env, "sign", "--config", c.config, "--user", "x", "--admin", "y", "--out", t.TempDir()); res.code == 0 || !strings.Contains(res.stderr, "one of --host, --user and --admin") {
		t.Errorf("mbot sign --user --admin: %s", res)
	}
}
