package joiners_test

import (
	"strings"
	"testing"
)

// bitbucketEnv is the environment of a Bitbucket Pipelines step with `oidc: true`.
var bitbucketEnv = map[string]string{
	"CI":                        "true",
	"BITBUCKET_BUILD_NUMBER":    "118",
	"BITBUCKET_WORKSPACE":       "acme",
	"BITBUCKET_REPO_SLUG":       "app",
	"BITBUCKET_BRANCH":          "main",
	"BITBUCKET_STEP_UUID":       "{8b7a6c5d-2e1f-4a3b-9c8d-7e6f5a4b3c2d}",
	"BITBUCKET_STEP_OIDC_TOKEN": "bitbucket-jwt",
}

func TestBitbucketDetect(t *testing.T) {
	withoutOIDC := merge(bitbucketEnv)
	delete(withoutOIDC, "BITBUCKET_STEP_OIDC_TOKEN")
	tests := []detectCase{
		{"step with oidc: true", bitbucketEnv, "bitbucket"},
		// Detected, so that Proof can say to add `oidc: true`.
		{"step without oidc: true", withoutOIDC, "bitbucket"},
		{"only the token", map[string]string{"BITBUCKET_STEP_OIDC_TOKEN": "bitbucket-jwt"}, "bitbucket"},
		// A GitLab runner whose environment carries Bitbucket variables
		// (a mirrored pipeline): GitLab comes first (SPEC §4).
		{"Bitbucket variables on a GitLab runner", merge(bitbucketEnv, gitlabEnv), "gitlab"},
		{"Bitbucket variables in GitHub Actions", merge(bitbucketEnv, githubEnv), "github"},
		{"Terraform Cloud token in a Bitbucket step", merge(bitbucketEnv, tfcEnv), "terraform_cloud"},
		{"Bitbucket self-hosted runner on AWS", merge(bitbucketEnv, awsEnv), "bitbucket"},
	}
	runDetectCases(t, tests)
}

func TestBitbucketProof(t *testing.T) {
	// Bitbucket mints the token for the workspace's audience; ours is ignored.
	got, err := proof(t, "bitbucket", bitbucketEnv, "acme")
	if err != nil {
		t.Fatalf("Proof: %v", err)
	}
	if got != "bitbucket-jwt" {
		t.Errorf("Proof = %q, want BITBUCKET_STEP_OIDC_TOKEN", got)
	}

	got, err = proof(t, "bitbucket", map[string]string{"BITBUCKET_BUILD_NUMBER": "118"}, "acme")
	if err == nil {
		t.Fatalf("Proof without BITBUCKET_STEP_OIDC_TOKEN = %q, want an error", got)
	}
	for _, want := range []string{"BITBUCKET_STEP_OIDC_TOKEN", "oidc: true", "bitbucket-pipelines.yml"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}
