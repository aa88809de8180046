package verify_test

import (
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/identity"
)

// The workspace of testdata/claims/bitbucket.json and its OIDC audience.
const (
	bitbucketWorkspace = "{3c9d7e2a-8b1f-4e6d-a5c4-2b3a1d0e9f8c}"
	bitbucketRepo      = "{6a0e5b1c-4f3d-4c2b-9a8e-7d6c5b4a3f21}"
	bitbucketEnvUUID   = "{d2c4e6f8-1a3b-4c5d-8e7f-9a0b1c2d3e4f}"
	bitbucketAudience  = "ari:cloud:bitbucket::workspace/3c9d7e2a-8b1f-4e6d-a5c4-2b3a1d0e9f8c"
)

func init() {
	platforms = append(platforms, platform{
		name:     "bitbucket",
		audience: bitbucketAudience,
		section: func(issuer string) string {
			return bitbucketHead(issuer) + "allow:\n  - workspace_uuid: \"" + bitbucketWorkspace + "\"\n    repository_uuid: \"" + bitbucketRepo + "\"\n"
		},
		claims: policy.Claims{
			"sub":                         {bitbucketRepo + ":" + bitbucketEnvUUID + ":{8b7a6c5d-2e1f-4a3b-9c8d-7e6f5a4b3c2d}"},
			"workspace_uuid":              {bitbucketWorkspace},
			"repository_uuid":             {bitbucketRepo},
			"deployment_environment_uuid": {bitbucketEnvUUID},
			"branch_name":                 {"main"},
			"pipeline_uuid":               {"{1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b}"},
			"step_uuid":                   {"{8b7a6c5d-2e1f-4a3b-9c8d-7e6f5a4b3c2d}"},
		},
	})
}

// bitbucketHead is the section of a join token for the workspace, with
// identity_provider_url pointing at the test issuer.
func bitbucketHead(issuer string) string {
	return "identity_provider_url: " + issuer + "\naudience: " + bitbucketAudience + "\n"
}

func TestBitbucketRules(t *testing.T) {
	runSectionRuleCases(t, platformByName(t, "bitbucket"), bitbucketHead, jose.ES256, []ruleCase{
		{
			name:      "repository of the workspace",
			allow:     "  - workspace_uuid: \"" + bitbucketWorkspace + "\"\n    repository_uuid: \"" + bitbucketRepo + "\"\n",
			wantMatch: true,
		},
		{
			name: "every documented rule field",
			allow: "  - workspace_uuid: \"" + bitbucketWorkspace + "\"\n    repository_uuid: \"" + bitbucketRepo + "\"\n" +
				"    deployment_environment_uuid: \"" + bitbucketEnvUUID + "\"\n    branch_name: main\n",
			wantMatch: true,
		},
		{
			name:         "a feature branch",
			allow:        "  - repository_uuid: \"" + bitbucketRepo + "\"\n    branch_name: main\n",
			edit:         func(c map[string]any) { c["branchName"] = "feature/login" },
			wantInReason: []string{"branch_name wants main, token has feature/login"},
		},
		{
			name:  "a step that deploys to no environment",
			allow: "  - repository_uuid: \"" + bitbucketRepo + "\"\n    deployment_environment_uuid: \"" + bitbucketEnvUUID + "\"\n",
			edit: func(c map[string]any) {
				delete(c, "deploymentEnvironmentUuid")
				c["sub"] = bitbucketRepo + ":{8b7a6c5d-2e1f-4a3b-9c8d-7e6f5a4b3c2d}"
			},
			wantInReason: []string{"deployment_environment_uuid wants " + bitbucketEnvUUID + ", token has (absent)"},
		},
		{
			name:         "another repository",
			allow:        "  - repository_uuid: \"" + bitbucketRepo + "\"\n",
			edit:         func(c map[string]any) { c["repositoryUuid"] = "{00000000-0000-4000-8000-00000000beef}" },
			wantInReason: []string{"repository_uuid wants " + bitbucketRepo + ", token has {00000000-0000-4000-8000-00000000beef}"},
		},
		{
			name:         "no workspaceUuid claim",
			allow:        "  - repository_uuid: \"" + bitbucketRepo + "\"\n",
			edit:         func(c map[string]any) { delete(c, "workspaceUuid") },
			wantCode:     identity.CodeClaimMissing,
			wantInReason: []string{`"workspaceUuid"`, "Bitbucket Pipelines"},
		},
		{
			name:         "no repositoryUuid claim",
			allow:        "  - workspace_uuid: \"" + bitbucketWorkspace + "\"\n",
			edit:         func(c map[string]any) { delete(c, "repositoryUuid") },
			wantCode:     identity.CodeClaimMissing,
			wantInReason: []string{`"repositoryUuid"`},
		},
		{
			// The step asked for a custom audience (oidc: audiences:).
			name:         "a custom audience of the step",
			allow:        "  - repository_uuid: \"" + bitbucketRepo + "\"\n",
			edit:         func(c map[string]any) { c["aud"] = "https://vault.acme.internal" },
			wantCode:     identity.CodeWrongAudience,
			wantInReason: []string{`expects audience "` + bitbucketAudience + `"`},
		},
		{
			// Bitbucket sends every audience the step asked for; ours among them is enough.
			name:      "several audiences",
			allow:     "  - repository_uuid: \"" + bitbucketRepo + "\"\n",
			edit:      func(c map[string]any) { c["aud"] = []string{"https://vault.acme.internal", bitbucketAudience} },
			wantMatch: true,
		},
	})
}

// TestBitbucketWrongWorkspace checks that a token of another workspace, a
// different issuer, is refused and the message names the field to change.
func TestBitbucketWrongWorkspace(t *testing.T) {
	iss := startIssuer(t, jose.RS256)
	const ours = "https://api.bitbucket.org/2.0/workspaces/acme/pipelines-config/identity/oidc"
	v := mustCompile(t, "bitbucket", "identity_provider_url: "+ours+"\naudience: "+bitbucketAudience+
		"\nallow:\n  - repository_uuid: \""+bitbucketRepo+"\"\n", newEnv(iss.Client))
	_, err := v.Verify(t.Context(), iss.Sign(t, tokenClaims(t, "bitbucket", iss.URL, bitbucketAudience)))
	wantRefusal(t, err, identity.CodeWrongIssuer, ours, iss.URL, "spec.bitbucket.identity_provider_url")
}

func TestBitbucketCompile(t *testing.T) {
	const url = "https://api.bitbucket.org/2.0/workspaces/acme/pipelines-config/identity/oidc"
	runCompileCases(t, "bitbucket", []compileCase{
		{"workspace and repository", "identity_provider_url: " + url + "\naudience: " + bitbucketAudience +
			"\nallow:\n  - workspace_uuid: \"" + bitbucketWorkspace + "\"\n    repository_uuid: \"" + bitbucketRepo + "\"\n", ""},
		{"no identity_provider_url", "audience: " + bitbucketAudience + "\nallow:\n  - branch_name: main\n",
			"line 8: spec.bitbucket: identity_provider_url is required"},
		{"no audience", "identity_provider_url: " + url + "\nallow:\n  - branch_name: main\n",
			"spec.bitbucket: audience is required"},
		{"issuer instead of identity_provider_url", "issuer: " + url + "\naudience: " + bitbucketAudience + "\nallow:\n  - branch_name: main\n",
			"set the issuer as identity_provider_url"},
		// YAML reads {…} as a mapping: UUIDs must be quoted.
		{"unquoted UUID", "identity_provider_url: " + url + "\naudience: " + bitbucketAudience + "\nallow:\n  - workspace_uuid: " + bitbucketWorkspace + "\n",
			"allow[0].workspace_uuid: must be a string"},
		{"claim name instead of rule field", "identity_provider_url: " + url + "\naudience: " + bitbucketAudience + "\nallow:\n  - workspaceUuid: \"" + bitbucketWorkspace + "\"\n",
			`unknown field "workspaceUuid"; fields for this method are: workspace_uuid, repository_uuid, deployment_environment_uuid, branch_name`},
	})
}
