package verify_test

import (
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/identity"
)

// codefreshAccount is the account of testdata/claims/codefresh.json.
const codefreshAccount = "5f30ebd30312313ae7f17948"

func init() {
	platforms = append(platforms, platform{
		name:     "codefresh",
		audience: "acme",
		section: func(issuer string) string {
			return "issuer: " + issuer + "\nallow:\n  - account_id: " + codefreshAccount + "\n    pipeline_name: app/deploy\n"
		},
		claims: policy.Claims{
			"sub":                {"account:" + codefreshAccount + ":pipeline:64de5cd47626b3ca134e760a:scm_repo_url:https://github.com/acme/app:scm_user_name:octocat:scm_ref:main"},
			"account_id":         {codefreshAccount},
			"account_name":       {"acme"},
			"pipeline_id":        {"64de5cd47626b3ca134e760a"},
			"pipeline_name":      {"app/deploy"},
			"workflow_id":        {"65a1b2c3d4e5f6a7b8c9d0e1"},
			"scm_repo_url":       {"https://github.com/acme/app"},
			"scm_user_name":      {"octocat"},
			"scm_ref":            {"main"},
			"runner_environment": {"hybrid"},
			"platform_url":       {"https://g.codefresh.io"},
		},
	})
}

func TestCodefreshRules(t *testing.T) {
	runRuleCases(t, platformByName(t, "codefresh"), jose.RS256, []ruleCase{
		{name: "account and pipeline", allow: "  - account_id: " + codefreshAccount + "\n    pipeline_name: app/deploy\n", wantMatch: true},
		{name: "sub of the account's pipeline", allow: "  - sub: account:" + codefreshAccount + ":pipeline:64de5cd47626b3ca134e760a:*\n", wantMatch: true},
		{
			name: "every documented rule field",
			allow: "  - account_id: " + codefreshAccount + "\n    account_name: acme\n    pipeline_id: 64de5cd47626b3ca134e760a\n    pipeline_name: app/deploy\n" +
				"    scm_repo_url: https://github.com/acme/app\n    scm_user_name: octocat\n    scm_ref: main\n    runner_environment: hybrid\n",
			wantMatch: true,
		},
		{
			name:  "another account",
			allow: "  - account_id: " + codefreshAccount + "\n",
			edit: func(c map[string]any) {
				c["account_id"] = "000000000000000000000001"
				c["sub"] = "account:000000000000000000000001:pipeline:64de5cd47626b3ca134e760a"
			},
			wantInReason: []string{"account_id wants " + codefreshAccount + ", token has 000000000000000000000001"},
		},
		{
			name:  "sub of another account than account_id",
			allow: "  - account_id: " + codefreshAccount + "\n",
			edit: func(c map[string]any) {
				c["sub"] = "account:000000000000000000000001:pipeline:64de5cd47626b3ca134e760a"
			},
			wantCode: identity.CodeProofInvalid,
		},
		{
			name:     "no account_id claim",
			allow:    "  - account_id: " + codefreshAccount + "\n",
			edit:     func(c map[string]any) { delete(c, "account_id") },
			wantCode: identity.CodeClaimMissing,
		},
	})
}

func TestCodefreshCompile(t *testing.T) {
	const notPinned = "does not pin the owner"
	runCompileCases(t, "codefresh", []compileCase{
		{"account", "allow:\n  - account_id: " + codefreshAccount + "\n", ""},
		{"pipeline alone", "allow:\n  - pipeline_name: app/deploy\n", notPinned},
		{"account by name only", "allow:\n  - account_name: acme\n", notPinned},
		{"sub of any account", "allow:\n  - sub: \"account:*\"\n", notPinned},
		// runner_type never was a Codefresh claim: say what to write instead.
		{"retired runner_type", "allow:\n  - account_id: " + codefreshAccount + "\n    runner_type: hybrid\n", "allow[0].runner_type: Codefresh sends no runner_type claim (a rule on it never matched); its tokens carry runner_environment (such as hybrid): rename the field to runner_environment"},
	})
}
