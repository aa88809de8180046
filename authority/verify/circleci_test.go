package verify_test

import (
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/mbot-dev/mbot/identity"
)

func TestCircleCIRules(t *testing.T) {
	runRuleCases(t, platforms[2], jose.ES256, []ruleCase{
		{
			name:      "project",
			allow:     "  - project_id: 8f2b3c4d-0000-4000-8000-000000000002\n",
			wantMatch: true,
		},
		{
			name:      "context_id matches the first context",
			allow:     "  - project_id: 8f2b3c4d-0000-4000-8000-000000000002\n    context_id: a74579f1-2e7d-451e-b009-5c082ad2729e\n",
			wantMatch: true,
		},
		{
			name:      "context_id matches any of the job's contexts",
			allow:     "  - context_id: cb32986e-2f6f-4f43-b2bd-d3c2fd98e903\n",
			wantMatch: true,
		},
		{
			name:  "context the job does not use",
			allow: "  - context_id: 00000000-0000-4000-8000-00000000dead\n",
			wantInReason: []string{"context_id wants 00000000-0000-4000-8000-00000000dead, token has " +
				"a74579f1-2e7d-451e-b009-5c082ad2729e,cb32986e-2f6f-4f43-b2bd-d3c2fd98e903"},
		},
		{
			name:         "job without contexts",
			allow:        "  - context_id: a74579f1-2e7d-451e-b009-5c082ad2729e\n",
			edit:         func(c map[string]any) { delete(c, "oidc.circleci.com/context-ids") },
			wantInReason: []string{"context_id wants a74579f1-2e7d-451e-b009-5c082ad2729e, token has (absent)"},
		},
		{
			name:         "other project",
			allow:        "  - project_id: 8f2b3c4d-0000-4000-8000-000000000002\n",
			edit:         func(c map[string]any) { c["oidc.circleci.com/project-id"] = "11111111-0000-4000-8000-000000000000" },
			wantInReason: []string{"project_id wants 8f2b3c4d-0000-4000-8000-000000000002, token has 11111111-0000-4000-8000-000000000000"},
		},
		{
			name:         "no project-id claim",
			allow:        "  - project_id: 8f2b3c4d-0000-4000-8000-000000000002\n",
			edit:         func(c map[string]any) { delete(c, "oidc.circleci.com/project-id") },
			wantCode:     identity.CodeClaimMissing,
			wantInReason: []string{`"project_id"`, "CircleCI"},
		},
		{
			name:         "sub not of the documented form",
			allow:        "  - project_id: 8f2b3c4d-0000-4000-8000-000000000002\n",
			edit:         func(c map[string]any) { c["sub"] = "repo:acme/app:ref:refs/heads/main" },
			wantCode:     identity.CodeProofInvalid,
			wantInReason: []string{"org/<org>/project/<project>/user/<user>"},
		},
		{
			// CircleCI mints tokens for the organization; a token requested for
			// the authority's own audience is not one CircleCI issues.
			name:         "audience is the authority, not the organization",
			allow:        "  - project_id: 8f2b3c4d-0000-4000-8000-000000000002\n",
			edit:         func(c map[string]any) { c["aud"] = "acme" },
			wantCode:     identity.CodeWrongAudience,
			wantInReason: []string{`expects audience "` + circleciOrg + `"`},
		},
	})
}

// TestCircleCIDefaultIssuer checks that without an issuer override a join
// token trusts the organization's issuer on oidc.circleci.com.
func TestCircleCIDefaultIssuer(t *testing.T) {
	v := mustCompile(t, "circleci", "organization_id: "+circleciOrg+"\nallow:\n  - project_id: x\n", newEnv(nil))
	iss := startIssuer(t, jose.ES256)
	_, err := v.Verify(t.Context(), iss.Sign(t, tokenClaims(t, "circleci", iss.URL, circleciOrg)))
	wantRefusal(t, err, identity.CodeWrongIssuer, "https://oidc.circleci.com/org/"+circleciOrg)
}
