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
