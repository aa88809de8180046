package e2e

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/internal/simci"
)

// TestRulesThatAdmitStrangers applies, with the built binary to a running
// authority, two join tokens whose rules read as pinned but admit
// strangers, and checks both are refused with the line to change: a
// Jenkins rule on build_number alone (the first build of every job on the
// instance) and a Forgejo rule on an immutable-id sub alone, which the
// old-form sub of a user named acme-1234 reads the same as. With the owner
// id added, the real owner joins and the look-alike is refused.
func TestRulesThatAdmitStrangers(t *testing.T) {
	pc := startPlatformsCluster(t)
	c := pc.cluster
	dir := t.TempDir()
	apply := func(name, yaml string) result {
		file := filepath.Join(dir, name+".yaml")
		writeFile(t, file, "kind: join_token\nversion: v1\nmetadata: {name: "+name+"}\nspec:\n  bot: "+botName+"\n"+yaml, 0o600)
		return mbot(t, baseEnv(c.home), "apply", "--config", c.config, "-f", file)
	}

	res := apply("jenkins-first-builds", "  method: jenkins\n  jenkins:\n    issuer: https://jenkins.acme.internal/oidc\n    allow:\n      - build_number: \"1\"\n")
	if res.code == 0 || !strings.Contains(res.stderr, "must set one of sub") || !strings.Contains(res.stderr, "job") || !strings.Contains(res.stderr, "folder") {
		t.Errorf("a Jenkins rule on build_number alone: want it refused, naming sub, job and folder:\n%s", res)
	}

	forgejo := "  method: forgejo\n  forgejo:\n    instance: " + pc.forgejo.Base + "\n    allow:\n      - sub: \"repo:acme-1234/app-5678:*\"\n"
	res = apply("forgejo-ids", forgejo)
	if res.code == 0 || !strings.Contains(res.stderr, "old-form sub of a user named acme-1234") || !strings.Contains(res.stderr, `repository_owner_id: "1234"`) {
		t.Errorf("a Forgejo rule on an immutable-id sub alone: want it refused with the line to add:\n%s", res)
	}
	if res := apply("forgejo-ids", forgejo+"        repository_owner_id: \"1234\"\n"); res.code != 0 {
		t.Fatalf("the rule with the owner id: %s", res)
	}

	owner := c.jobEnv(pc.forgejo.ForgejoEnv(simci.ForgejoClaims()))
	if res := c.issue(t, owner, "forgejo-ids", filepath.Join(t.TempDir(), "mbot")); res.code != 0 {
		t.Fatalf("the owner's job: %s", res)
	}
	// A user named acme-1234 with a repository app-5678 created before the
	// immutable ids: its sub is the same text, its owner id its own.
	lookalike := c.jobEnv(pc.forgejo.ForgejoEnv(withOverride(simci.ForgejoClaims(), map[string]any{
		"repository": "acme-1234/app-5678", "repository_owner": "acme-1234", "repository_owner_id": "77031", "repository_id": "90210"})))
	wantRefused(t, c, lookalike, "forgejo-ids", "rule_mismatch")
}
