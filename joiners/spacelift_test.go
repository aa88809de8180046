package joiners_test

import (
	"strings"
	"testing"
)

// spaceliftEnv is the environment of a Spacelift run of stack infra.
var spaceliftEnv = map[string]string{
	"SPACELIFT_OIDC_TOKEN":         "spacelift-jwt",
	"TF_VAR_spacelift_run_id":      "01GQ2Z9M6VHK9V0R4J6Q4K6Z3N",
	"TF_VAR_spacelift_stack_id":    "infra",
	"TF_VAR_spacelift_run_trigger": "manual",
}

func TestSpaceliftDetect(t *testing.T) {
	tests := []detectCase{
		{"Spacelift run", spaceliftEnv, "spacelift"},
		{"Spacelift on AWS with credentials", merge(spaceliftEnv, awsEnv), "spacelift"},
		// SPEC §4 order: the CI platforms first, then Spacelift.
		{"GitHub Actions job with SPACELIFT_OIDC_TOKEN", merge(githubEnv, map[string]string{"SPACELIFT_OIDC_TOKEN": "stray"}), "github"},
		{"GitLab job with SPACELIFT_OIDC_TOKEN", merge(gitlabEnv, map[string]string{"SPACELIFT_OIDC_TOKEN": "stray"}), "gitlab"},
		// Spacelift comes before Terraform Cloud, whose token a run may also carry.
		{"Spacelift run with a TFC token", merge(spaceliftEnv, map[string]string{"TFC_WORKLOAD_IDENTITY_TOKEN": "tfc-jwt"}), "spacelift"},
	}
	runDetectCases(t, tests)
}

func TestSpaceliftProof(t *testing.T) {
	// Spacelift mints the token for the account's host; the audience is ignored.
	got, err := proof(t, "spacelift", spaceliftEnv, "acme")
	if err != nil {
		t.Fatalf("Proof: %v", err)
	}
	if got != "spacelift-jwt" {
		t.Errorf("Proof = %q, want SPACELIFT_OIDC_TOKEN", got)
	}

	got, err = proof(t, "spacelift", map[string]string{"TF_VAR_spacelift_run_id": "x"}, "acme")
	if err == nil {
		t.Fatalf("Proof without SPACELIFT_OIDC_TOKEN = %q, want an error", got)
	}
	if !strings.Contains(err.Error(), "SPACELIFT_OIDC_TOKEN") {
		t.Errorf("error %q does not name SPACELIFT_OIDC_TOKEN", err)
	}
}
