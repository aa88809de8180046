package joiners_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/joiners"
)

func TestOIDCProof(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "id-token")
	// Files written by tools usually end with a newline; it is not part of the token.
	if err := os.WriteFile(file, []byte("jwt-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"token file", map[string]string{"MBOT_OIDC_TOKEN_FILE": file}, "jwt-from-file"},
		// Jenkins' OpenID Connect Provider plugin binds the token to a variable.
		{"named variable", map[string]string{"MBOT_OIDC_TOKEN_ENV": "JENKINS_ID_TOKEN", "JENKINS_ID_TOKEN": "jwt-from-env"}, "jwt-from-env"},
		{"file before variable", map[string]string{"MBOT_OIDC_TOKEN_FILE": file, "MBOT_OIDC_TOKEN_ENV": "JENKINS_ID_TOKEN", "JENKINS_ID_TOKEN": "jwt-from-env"}, "jwt-from-file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := proof(t, "oidc", tc.env, "acme")
			if err != nil {
				t.Fatalf("Proof: %v", err)
			}
			if got != tc.want {
				t.Errorf("Proof = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestOIDCProofMissing(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"neither variable", map[string]string{}, []string{"MBOT_OIDC_TOKEN_FILE=<path>", "MBOT_OIDC_TOKEN_ENV=<variable name>"}},
		{"file does not exist", map[string]string{"MBOT_OIDC_TOKEN_FILE": filepath.Join(dir, "missing")}, []string{"MBOT_OIDC_TOKEN_FILE", "no such file"}},
		{"file is empty", map[string]string{"MBOT_OIDC_TOKEN_FILE": empty}, []string{empty, "is empty", `audience "acme"`}},
		{"named variable unset", map[string]string{"MBOT_OIDC_TOKEN_ENV": "JENKINS_ID_TOKEN"}, []string{"JENKINS_ID_TOKEN", "unset or empty"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := proof(t, "oidc", tc.env, "acme")
			if err == nil {
				t.Fatalf("Proof = %q, want an error", got)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

// TestOIDCNotDetected checks that the generic method is used only when asked
// for: a token file says nothing about which issuer minted it.
func TestOIDCNotDetected(t *testing.T) {
	env := map[string]string{"MBOT_OIDC_TOKEN_FILE": "/run/secrets/id-token"}
	if j, err := joiners.Detect(envOf(env)); err == nil && j.Method() == "oidc" {
		t.Error("Detect picked the generic oidc method")
	}
	if j, err := joiners.Detect(envOf(merge(env, spaceliftEnv))); err != nil || j.Method() != "spacelift" {
		t.Errorf("Detect with a token file in a Spacelift run: %v, %v; want spacelift", j, err)
	}
	if _, err := joiners.ByMethod("oidc"); err != nil {
		t.Errorf("ByMethod(oidc): %v", err)
	}
}

// TestDetectNothingNamesNewPlatforms checks that the error of a failed
// detection lists what each new platform is detected by.
func TestDetectNothingNamesNewPlatforms(t *testing.T) {
	_, err := joiners.Detect(envOf(map[string]string{"CI": "true"}))
	if err == nil {
		t.Fatal("Detect picked a platform in an environment of none")
	}
	for _, want := range []string{
		"spacelift (SPACELIFT_OIDC_TOKEN)",
		"terraform_cloud (TFC_WORKLOAD_IDENTITY_TOKEN or TFC_WORKLOAD_IDENTITY_TOKEN_<MBOT_TFC_TAG>)",
		"bitbucket (BITBUCKET_BUILD_NUMBER or BITBUCKET_STEP_OIDC_TOKEN)",
		"buildkite (BUILDKITE=true)",
	} {
		if !strings.Contains(strings.Join(joiners.DetectionSignals(), ", "), want) {
			t.Errorf("detection signals %q do not mention %q", joiners.DetectionSignals(), want)
		}
	}
	if strings.Contains(strings.Join(joiners.DetectionSignals(), ", "), "oidc (") {
		t.Errorf("error %q lists the generic oidc method, which is never detected", err)
	}
}
