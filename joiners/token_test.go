package joiners_test

import (
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/joiners"
)

func TestTokenProof(t *testing.T) {
	got, err := proof(t, "token", map[string]string{"MBOT_JOIN_SECRET": "s3cret\n"}, "acme")
	if err != nil || got != "s3cret" {
		t.Errorf("Proof = %q, %v; want the secret", got, err)
	}
	_, err = proof(t, "token", map[string]string{"MBOT_JOIN_SECRET": ""}, "acme")
	if err == nil || !strings.Contains(err.Error(), "MBOT_JOIN_SECRET is unset") || !strings.Contains(err.Error(), "mbot tokens add") {
		t.Errorf("Proof without MBOT_JOIN_SECRET: err = %v, want one naming the variable", err)
	}
}

// A token join is chosen with --join-method token, never detected: a
// secret in the environment says nothing about the platform.
func TestTokenNotDetected(t *testing.T) {
	if j, err := joiners.Detect(envOf(map[string]string{"MBOT_JOIN_SECRET": "s3cret"})); err == nil {
		t.Errorf("Detect picked %s from MBOT_JOIN_SECRET", j.Method())
	}
	if j, err := joiners.Detect(envOf(merge(githubEnv, map[string]string{"MBOT_JOIN_SECRET": "s3cret"}))); err != nil || j.Method() != "github" {
		t.Errorf("Detect in GitHub Actions with MBOT_JOIN_SECRET: %v, %v; want github", j, err)
	}
}
