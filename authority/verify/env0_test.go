package verify_test

import (
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/identity"
)

// env0Org is the organization of testdata/claims/env0.json.
const env0Org = "5c6d7e8f-0000-4000-8000-0000000000e0"

func init() {
	platforms = append(platforms, platform{
		name:     "env0",
		audience: verify.Env0Audience,
		section: func(issuer string) string {
			return "issuer: " + issuer + "\nallow:\n  - organization_id: " + env0Org + "\n    environment_name: network-prod\n"
		},
		claims: policy.Claims{
			"sub":               {"auth0|62e0f8a1b2c3d4e5f6a7b8c9"},
			"organization_id":   {env0Org},
			"project_id":        {"9a8b7c6d-0000-4000-8000-0000000000e1"},
			"project_name":      {"platform"},
			"template_id":       {"1f2e3d4c-0000-4000-8000-0000000000e2"},
			"template_name":     {"network"},
			"environment_id":    {"7e6d5c4b-0000-4000-8000-0000000000e3"},
			"environment_name":  {"network-prod"},
			"workspace_name":    {"network-prod"},
			"deployment_log_id": {"3b4c5d6e-0000-4000-8000-0000000000e4"},
			"deployer_email":    {"jane@acme.example"},
		},
	})
}

func TestEnv0Rules(t *testing.T) {
	runRuleCases(t, platformByName(t, "env0"), jose.RS256, []ruleCase{
		{name: "organization and environment", allow: "  - organization_id: " + env0Org + "\n    environment_name: network-prod\n", wantMatch: true},
		{
			name: "every documented rule field",
			allow: "  - organization_id: " + env0Org + "\n    project_id: 9a8b7c6d-0000-4000-8000-0000000000e1\n    project_name: platform\n" +
				"    template_id: 1f2e3d4c-0000-4000-8000-0000000000e2\n    template_name: network\n    environment_id: 7e6d5c4b-0000-4000-8000-0000000000e3\n" +
				"    environment_name: network-prod\n    workspace_name: network-prod\n    deployer_email: jane@acme.example\n",
			wantMatch: true,
		},
		{
			name:         "another organization's deployment",
			allow:        "  - organization_id: " + env0Org + "\n",
			edit:         func(c map[string]any) { c["organizationId"] = "00000000-0000-4000-8000-0000000000ff" },
			wantInReason: []string{"organization_id wants " + env0Org + ", token has 00000000-0000-4000-8000-0000000000ff"},
		},
		{
			name:         "no organizationId claim",
			allow:        "  - organization_id: " + env0Org + "\n",
			edit:         func(c map[string]any) { delete(c, "organizationId") },
			wantCode:     identity.CodeClaimMissing,
			wantInReason: []string{`"organizationId"`, "env0"},
		},
	})
}

func TestEnv0Compile(t *testing.T) {
	const notPinned = "does not pin the owner"
	runCompileCases(t, "env0", []compileCase{
		{"organization", "allow:\n  - organization_id: " + env0Org + "\n", ""},
		{"environment alone", "allow:\n  - environment_name: prod\n", notPinned},
		{"globbed organization", "allow:\n  - organization_id: \"5c6d*\"\n", notPinned},
	})
}
