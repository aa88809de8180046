package verify_test

import (
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/mbot-dev/mbot/authority/policy"
)

func init() {
	platforms = append(platforms, platform{
		name:     "jenkins",
		audience: "acme",
		section: func(issuer string) string {
			return "issuer: " + issuer + "\nallow:\n  - folder: infra\n"
		},
		claims: policy.Claims{
			"sub":          {"https://jenkins.acme.internal/job/infra/job/deploy/"},
			"job":          {"infra/deploy"},
			"folder":       {"infra"},
			"build_number": {"42"},
		},
	})
}

func TestJenkinsRules(t *testing.T) {
	runRuleCases(t, platformByName(t, "jenkins"), jose.RS256, []ruleCase{
		{name: "folder", allow: "  - folder: infra\n", wantMatch: true},
		{name: "job", allow: "  - job: infra/deploy\n", wantMatch: true},
		{name: "sub", allow: "  - sub: https://jenkins.acme.internal/job/infra/job/deploy/\n", wantMatch: true},
		{name: "jobs of a folder", allow: "  - folder: infra\n    job: infra/*\n", wantMatch: true},
		{
			name:  "a job in nested folders, with an escaped name",
			allow: "  - folder: infra/prod\n    job: infra/prod/deploy app\n",
			edit: func(c map[string]any) {
				c["sub"] = "https://jenkins.acme.internal/job/infra/job/prod/job/deploy%20app/"
			},
			wantMatch: true,
		},
		{
			name:         "a job in another folder",
			allow:        "  - folder: infra\n",
			edit:         func(c map[string]any) { c["sub"] = "https://jenkins.acme.internal/job/sandbox/job/deploy/" },
			wantInReason: []string{"folder wants infra, token has sandbox"},
		},
		{
			name:         "a job at the top has no folder",
			allow:        "  - folder: infra\n",
			edit:         func(c map[string]any) { c["sub"] = "https://jenkins.acme.internal/job/deploy/" },
			wantInReason: []string{"folder wants infra, token has (absent)"},
		},
		{
			name:      "a customized sub keeps sub and build_number",
			allow:     "  - sub: jenkins:main:42\n    build_number: \"42\"\n",
			edit:      func(c map[string]any) { c["sub"] = "jenkins:main:42" },
			wantMatch: true,
		},
	})
}

func TestJenkinsCompile(t *testing.T) {
	runCompileCases(t, "jenkins", []compileCase{
		{"issuer and folder", "issuer: https://jenkins.acme.internal/oidc\nallow:\n  - folder: infra\n", ""},
		{"no issuer", "allow:\n  - folder: infra\n", "issuer is required"},
		{"globs only", "issuer: https://jenkins.acme.internal/oidc\nallow:\n  - job: \"*\"\n", "does not pin the owner"},
		{"build number only", "issuer: https://jenkins.acme.internal/oidc\nallow:\n  - build_number: \"1\"\n", "must set one of sub"},
		{"unknown field", "issuer: https://jenkins.acme.internal/oidc\nallow:\n  - branch: main\n", `unknown field "branch"`},
	})
}
