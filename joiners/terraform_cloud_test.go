package joiners_test

import (
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/joiners"
)

// tfcEnv is the environment of an HCP Terraform run whose workspace sets
// TFC_WORKLOAD_IDENTITY_AUDIENCE.
var tfcEnv = map[string]string{
	"TFC_RUN_ID":                  "run-X3n1AUXNGWbfECsJ",
	"TFC_WORKSPACE_NAME":          "app-production",
	"TFC_WORKSPACE_SLUG":          "acme/app-production",
	"TFC_WORKLOAD_IDENTITY_TOKEN": "tfc-jwt",
}

func TestTerraformCloudDetect(t *testing.T) {
	tagged := map[string]string{
		"TFC_RUN_ID": "run-X3n1AUXNGWbfECsJ", "MBOT_TFC_TAG": "MBOT", "TFC_WORKLOAD_IDENTITY_TOKEN_MBOT": "tfc-jwt-mbot",
	}
	tests := []struct {
		name string
		env  map[string]string
		want string // empty: not detected
	}{
		{"untagged token", tfcEnv, "terraform_cloud"},
		{"tagged token selected by MBOT_TFC_TAG", tagged, "terraform_cloud"},
		{"tagged token without MBOT_TFC_TAG", map[string]string{"TFC_WORKLOAD_IDENTITY_TOKEN_MBOT": "tfc-jwt-mbot"}, ""},
		{"run without a workload identity token", map[string]string{"TFC_RUN_ID": "run-X3n1AUXNGWbfECsJ"}, ""},
		{"Terraform Cloud agent on AWS", merge(tfcEnv, awsEnv), "terraform_cloud"},
		{"CircleCI job with a TFC token", merge(circleciEnv, tfcEnv), "circleci"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			j, err := joiners.Detect(envOf(tc.env))
			switch {
			case tc.want == "" && err == nil && j.Method() == "terraform_cloud":
				t.Errorf("Detect picked terraform_cloud")
			case tc.want == "":
			case err != nil:
				t.Fatalf("Detect: %v", err)
			case j.Method() != tc.want:
				t.Errorf("Detect picked %s, want %s", j.Method(), tc.want)
			}
		})
	}
}

func TestTerraformCloudProof(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"untagged", tfcEnv, "tfc-jwt"},
		{"tagged", merge(tfcEnv, map[string]string{"MBOT_TFC_TAG": "MBOT", "TFC_WORKLOAD_IDENTITY_TOKEN_MBOT": "tfc-jwt-mbot"}), "tfc-jwt-mbot"},
		{"tag is case-sensitive, as HCP Terraform names it", merge(tfcEnv, map[string]string{
			"MBOT_TFC_TAG": "mbot", "TFC_WORKLOAD_IDENTITY_TOKEN_mbot": "tfc-jwt-lower", "TFC_WORKLOAD_IDENTITY_TOKEN_MBOT": "tfc-jwt-upper",
		}), "tfc-jwt-lower"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := proof(t, "terraform_cloud", tc.env, "acme")
			if err != nil {
				t.Fatalf("Proof: %v", err)
			}
			if got != tc.want {
				t.Errorf("Proof = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestTerraformCloudProofMissing(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"no token", map[string]string{"TFC_RUN_ID": "run-1"},
			[]string{"TFC_WORKLOAD_IDENTITY_TOKEN is unset", "TFC_WORKLOAD_IDENTITY_AUDIENCE=acme", "MBOT_TFC_TAG"}},
		// The untagged token is for another audience: no fallback to it.
		{"tagged token missing", merge(tfcEnv, map[string]string{"MBOT_TFC_TAG": "MBOT"}),
			[]string{"TFC_WORKLOAD_IDENTITY_TOKEN_MBOT is unset", "TFC_WORKLOAD_IDENTITY_AUDIENCE_MBOT=acme"}},
		{"tag that cannot be part of a variable name", merge(tfcEnv, map[string]string{"MBOT_TFC_TAG": "MBOT-1"}),
			[]string{`MBOT_TFC_TAG="MBOT-1" is not a tag`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := proof(t, "terraform_cloud", tc.env, "acme")
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
