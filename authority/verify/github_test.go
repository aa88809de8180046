package verify_test

import (
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/mbot-dev/mbot/identity"
)

func TestGitHubRules(t *testing.T) {
	runRuleCases(t, platforms[0], jose.RS256, []ruleCase{
		{
			name:      "repository and ref",
			allow:     "  - repository: acme/app\n    ref: refs/heads/main\n",
			wantMatch: true,
		},
		{
			name:      "every documented rule field",
			allow:     "  - sub: repo:acme/app:environment:production\n    repository: acme/app\n    repository_owner: acme\n    workflow: deploy\n    environment: production\n    actor: octocat\n    ref: refs/heads/main\n    ref_type: branch\n    job_workflow_ref: acme/automation/.github/workflows/oidc.yml@refs/heads/main\n    repository_id: \"74\"\n",
			wantMatch: true,
		},
		{
			name:         "other repository",
			allow:        "  - repository: acme/app\n",
			edit:         func(c map[string]any) { c["repository"] = "acme/app-fork" },
			wantInReason: []string{"rule 1 (line 10)", "repository wants acme/app, token has acme/app-fork"},
		},
		{
			name:      "owner glob",
			allow:     "  - repository: acme/*\n",
			edit:      func(c map[string]any) { c["repository"] = "acme/infra" },
			wantMatch: true,
		},
		{
			name:         "owner glob does not admit another owner",
			allow:        "  - repository: acme/*\n",
			edit:         func(c map[string]any) { c["repository"] = "acme-evil/app" },
			wantInReason: []string{"repository wants acme/*, token has acme-evil/app"},
		},
		{
			name:      "? matches one character",
			allow:     "  - repository_owner: acme\n    ref: refs/heads/release-?\n",
			edit:      func(c map[string]any) { c["ref"] = "refs/heads/release-7" },
			wantMatch: true,
		},
		{
			name:         "? does not match two characters",
			allow:        "  - repository_owner: acme\n    ref: refs/heads/release-?\n",
			edit:         func(c map[string]any) { c["ref"] = "refs/heads/release-10" },
			wantInReason: []string{"ref wants refs/heads/release-?, token has refs/heads/release-10"},
		},
		{
			name:         "regexp metacharacters are literal",
			allow:        "  - repository_owner: acme\n    ref: refs/heads/ma.n\n",
			wantInReason: []string{"ref wants refs/heads/ma.n"},
		},
		{
			name:      "any of several patterns",
			allow:     "  - repository_owner: acme\n    ref: [refs/heads/develop, refs/heads/main]\n",
			wantMatch: true,
		},
		{
			name:      "any of several rules",
			allow:     "  - repository: acme/other\n  - repository: acme/app\n    workflow: deploy\n",
			wantMatch: true,
		},
		{
			name:         "every field of a rule must match",
			allow:        "  - repository: acme/app\n    ref: refs/heads/main\n    actor: hubot\n",
			wantInReason: []string{"actor wants hubot, token has octocat"},
		},
		{
			name:  "reason names each failing rule",
			allow: "  - repository: acme/other\n  - repository: acme/app\n    ref_type: tag\n",
			wantInReason: []string{"rule 1 (line 10): repository wants acme/other, token has acme/app",
				"rule 2 (line 11): ref_type wants tag, token has branch"},
		},
		{
			name:         "environment required but the job has none",
			allow:        "  - repository: acme/app\n    environment: production\n",
			edit:         func(c map[string]any) { delete(c, "environment") },
			wantInReason: []string{"environment wants production, token has (absent)"},
		},
		{
			name:         "no repository claim",
			allow:        "  - repository: acme/app\n",
			edit:         func(c map[string]any) { delete(c, "repository") },
			wantCode:     identity.CodeClaimMissing,
			wantInReason: []string{`"repository"`, "GitHub Actions"},
		},
		{
			name:         "no sub claim",
			allow:        "  - repository: acme/app\n",
			edit:         func(c map[string]any) { delete(c, "sub") },
			wantCode:     identity.CodeClaimMissing,
			wantInReason: []string{`"sub"`},
		},
		// Immutable subject claims (repositories created after mid-2026):
		// repo:<owner>@<owner id>/<repo>@<repo id>:...
		{
			name:      "immutable sub",
			allow:     "  - sub: repo:acme@65/app@74:ref:refs/heads/main\n",
			edit:      func(c map[string]any) { c["sub"] = "repo:acme@65/app@74:ref:refs/heads/main" },
			wantMatch: true,
		},
		{
			name:      "immutable sub of the owner's repositories",
			allow:     "  - sub: repo:acme@65/*\n    ref: refs/heads/main\n",
			edit:      func(c map[string]any) { c["sub"] = "repo:acme@65/app@74:ref:refs/heads/main" },
			wantMatch: true,
		},
		{
			name:         "immutable sub of a re-registered owner name",
			allow:        "  - sub: repo:acme@65/*\n",
			edit:         func(c map[string]any) { c["sub"] = "repo:acme@9001/app@9002:ref:refs/heads/main" },
			wantInReason: []string{"sub wants repo:acme@65/*, token has repo:acme@9001/app@9002:ref:refs/heads/main"},
		},
		{
			name:         "a name-based sub rule does not admit the immutable form",
			allow:        "  - sub: repo:acme/app:ref:refs/heads/main\n",
			edit:         func(c map[string]any) { c["sub"] = "repo:acme@65/app@74:ref:refs/heads/main" },
			wantInReason: []string{"sub wants repo:acme/app:ref:refs/heads/main"},
		},
		{
			name:  "owner id rule survives a rename",
			allow: "  - repository_owner_id: \"65\"\n    repository_id: \"74\"\n",
			edit: func(c map[string]any) {
				c["repository_owner"], c["repository"] = "acme-renamed", "acme-renamed/app"
			},
			wantMatch: true,
		},
		{
			name:  "owner id rule refuses whoever took the old name",
			allow: "  - repository_owner_id: \"65\"\n",
			edit: func(c map[string]any) {
				c["repository_owner_id"], c["repository_id"] = "9001", "9002"
			},
			wantInReason: []string{"repository_owner_id wants 65, token has 9001"},
		},
		{
			name:         "no actor claim",
			allow:        "  - repository: acme/app\n",
			edit:         func(c map[string]any) { delete(c, "actor") },
			wantCode:     identity.CodeClaimMissing,
			wantInReason: []string{`"actor"`},
		},
	})
}
