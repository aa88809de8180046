package ci

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/internal/cispec"
)

// TestIntegrationsWriteOutsideTheCheckout checks that each integration's
// default identity directory is the platform's per-job temporary space, not
// the repository checkout, where artifacts, caches, git add and container
// builds would pick up the private keys (docs/issue.md, "Where the identity goes").
func TestIntegrationsWriteOutsideTheCheckout(t *testing.T) {
	t.Run("GitHub Action", func(t *testing.T) {
		var a actionMeta
		unmarshal(t, filepath.Join(root, "action.yml"), &a)
		if d := a.Inputs["out"].Default; d == nil || *d != "" {
			t.Errorf("input out should default to empty (mbot writes to $RUNNER_TEMP/mbot)")
		}
		script := readFile(t, filepath.Join(root, "action", "issue.sh"))
		for _, want := range []string{"export MBOT_OUT=$RUNNER_TEMP/mbot", `"$GITHUB_WORKSPACE"/*`, "::warning title=mbot::"} {
			if !strings.Contains(script, want) {
				t.Errorf("action/issue.sh lacks %q (default to RUNNER_TEMP, warn about an out in the workspace)", want)
			}
		}
	})
	t.Run("GitLab component", func(t *testing.T) {
		comp, err := cispec.LoadGitLabComponent(filepath.Join(root, "templates", "mbot-issue.yml"))
		if err != nil {
			t.Fatal(err)
		}
		if d := comp.Inputs["out"].Default; d == nil || *d != "" {
			t.Errorf("input out should default to empty (a mktemp -d directory outside $CI_PROJECT_DIR)")
		}
		cfg, err := comp.Render(map[string]string{"authority": "https://auth.example:8443", "token": "t", "audience": "acme"})
		if err != nil {
			t.Fatal(err)
		}
		job, _ := cfg[".mbot-issue"].(map[string]any)
		vars, _ := job["variables"].(map[string]any)
		if vars["MBOT_OUT"] != "" {
			t.Errorf("MBOT_OUT = %v by default, want empty", vars["MBOT_OUT"])
		}
		script, _ := job["before_script"].([]any)
		if len(script) < 2 {
			t.Fatalf("before_script %v", script)
		}
		// The step before mbot issue picks the directory and exports it to script:.
		prep, _ := script[len(script)-2].(string)
		for _, want := range []string{`MBOT_OUT="$(mktemp -d)/mbot"`, "export MBOT_OUT MBOT_IDENTITY_DIR"} {
			if !strings.Contains(prep, want) {
				t.Errorf("the before_script step before mbot issue lacks %q:\n%s", want, prep)
			}
		}
		for _, block := range docBlocks(t, "yaml") {
			if strings.Contains(block, "extends: .mbot-issue") && strings.Contains(block, "-F mbot/") {
				t.Errorf("a documented GitLab pipeline uses the identity in the checkout (mbot/); use $MBOT_IDENTITY_DIR:\n%s", block)
			}
		}
	})
	t.Run("CircleCI orb", func(t *testing.T) {
		orb, err := cispec.PackOrb(filepath.Join(root, "orb", "src"))
		if err != nil {
			t.Fatal(err)
		}
		steps, err := orb.CommandRunSteps("issue", nil)
		if err != nil {
			t.Fatal(err)
		}
		last := steps[len(steps)-1]
		if last.Environment["MBOT_PARAM_OUT"] != "" {
			t.Errorf("parameter out defaults to %q, want empty (a mktemp -d directory)", last.Environment["MBOT_PARAM_OUT"])
		}
		if !strings.Contains(last.Command, "MBOT_OUT=$(mktemp -d)/mbot") {
			t.Errorf("the issue step does not default MBOT_OUT to a mktemp -d directory:\n%s", last.Command)
		}
	})
}
