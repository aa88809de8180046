package verify_test

import (
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/identity"
)

func init() {
	platforms = append(platforms, platform{
		name:     "buildkite",
		audience: "acme",
		section: func(issuer string) string {
			return oidcHead(issuer) + "allow:\n  - organization_slug: acme-inc\n    pipeline_slug: super-duper-app\n"
		},
		claims: policy.Claims{
			"sub":                {"organization:acme-inc:pipeline:super-duper-app:ref:refs/heads/main:commit:9f3182061f1e2cca4702c368cbc039b7dc9d4485:step:build"},
			"organization_slug":  {"acme-inc"},
			"pipeline_slug":      {"super-duper-app"},
			"build_number":       {"1"},
			"build_branch":       {"main"},
			"build_tag":          {"v1.0.0"},
			"build_commit":       {"9f3182061f1e2cca4702c368cbc039b7dc9d4485"},
			"step_key":           {"build"},
			"job_id":             {"0184990a-477b-4fa8-9968-496074483cee"},
			"agent_id":           {"0184990a-4782-42b5-afc1-16715b10b8ff"},
			"build_source":       {"ui"},
			"runner_environment": {"buildkite-hosted"},
		},
	})
}

func TestBuildkiteRules(t *testing.T) {
	runSectionRuleCases(t, platformByName(t, "buildkite"), oidcHead, jose.ES256, []ruleCase{
		{
			name:      "pipeline of the organization",
			allow:     "  - organization_slug: acme-inc\n    pipeline_slug: super-duper-app\n",
			wantMatch: true,
		},
		{
			name:      "every documented rule field",
			allow:     "  - organization_slug: acme-inc\n    pipeline_slug: super-duper-app\n    build_branch: main\n",
			wantMatch: true,
		},
		{
			name:         "another organization",
			allow:        "  - organization_slug: acme-inc\n",
			edit:         func(c map[string]any) { c["organization_slug"] = "acme-evil" },
			wantInReason: []string{"organization_slug wants acme-inc, token has acme-evil"},
		},
		{
			name:         "a branch build",
			allow:        "  - organization_slug: acme-inc\n    build_branch: main\n",
			edit:         func(c map[string]any) { c["build_branch"] = "feature/login" },
			wantInReason: []string{"build_branch wants main, token has feature/login"},
		},
		{
			name:      "pipelines by glob",
			allow:     "  - organization_slug: acme-inc\n    pipeline_slug: super-*\n",
			wantMatch: true,
		},
		{
			// step_key is null for steps without a key; build_number may be a string.
			name:  "null step_key",
			allow: "  - organization_slug: acme-inc\n",
			edit: func(c map[string]any) {
				c["step_key"] = nil
				c["build_number"] = "1"
			},
			wantMatch: true,
		},
		{
			name:         "no organization_slug claim",
			allow:        "  - organization_slug: acme-inc\n",
			edit:         func(c map[string]any) { delete(c, "organization_slug") },
			wantCode:     identity.CodeClaimMissing,
			wantInReason: []string{`"organization_slug"`, "Buildkite"},
		},
		{
			name:         "no job_id claim",
			allow:        "  - organization_slug: acme-inc\n",
			edit:         func(c map[string]any) { delete(c, "job_id") },
			wantCode:     identity.CodeClaimMissing,
			wantInReason: []string{`"job_id"`},
		},
		{
			// Without --audience the agent API answers for https://buildkite.com/<org>.
			name:         "default audience of request-token",
			allow:        "  - organization_slug: acme-inc\n",
			edit:         func(c map[string]any) { c["aud"] = "https://buildkite.com/acme-inc" },
			wantCode:     identity.CodeWrongAudience,
			wantInReason: []string{`expects audience "acme"`},
		},
	})
}

func TestBuildkiteDefaultIssuer(t *testing.T) {
	v := mustCompile(t, "buildkite", "allow:\n  - organization_slug: acme-inc\n", newEnv(nil))
	iss := startIssuer(t, jose.RS256)
	_, err := v.Verify(t.Context(), iss.Sign(t, tokenClaims(t, "buildkite", iss.URL, "acme")))
	wantRefusal(t, err, identity.CodeWrongIssuer, verify.BuildkiteIssuer)
}

func TestBuildkiteCompile(t *testing.T) {
	runCompileCases(t, "buildkite", []compileCase{
		{"organization and pipeline", "allow:\n  - organization_slug: acme-inc\n    pipeline_slug: super-duper-app\n", ""},
		// Every Buildkite organization can mint a token for our audience.
		{"rule without organization_slug", "allow:\n  - pipeline_slug: super-duper-app\n",
			"line 9: allow[0] does not pin the owner: agent.buildkite.com issues tokens to every Buildkite organization"},
		{"rule field Buildkite does not offer here", "allow:\n  - organization_slug: acme-inc\n    step_key: build\n",
			`unknown field "step_key"; fields for this method are: organization_slug, pipeline_slug, build_branch`},
		{"no allow rules", "issuer: https://agent.buildkite.com\n", "needs at least one allow rule (fields: organization_slug, pipeline_slug, build_branch)"},
	})
}
