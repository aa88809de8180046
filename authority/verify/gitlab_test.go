package verify_test

import (
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/mbot-dev/mbot/identity"
)

func TestGitLabRules(t *testing.T) {
	runRuleCases(t, platforms[1], jose.RS256, []ruleCase{
		{
			name:      "project on a protected ref, YAML boolean",
			allow:     "  - project_path: acme/app\n    ref_protected: true\n",
			wantMatch: true,
		},
		{
			name:      "ref_protected as a quoted string",
			allow:     "  - project_path: acme/app\n    ref_protected: \"true\"\n",
			wantMatch: true,
		},
		{
			name:         "ref_protected: false does not admit a protected ref",
			allow:        "  - project_path: acme/app\n    ref_protected: false\n",
			wantInReason: []string{"ref_protected wants false, token has true"},
		},
		{
			name:         "ref_protected: true does not admit an unprotected ref",
			allow:        "  - project_path: acme/app\n    ref_protected: true\n",
			edit:         func(c map[string]any) { c["ref"], c["ref_protected"] = "feature-branch-1", "false" },
			wantInReason: []string{"ref_protected wants true, token has false"},
		},
		{
			name:      "protected production environment",
			allow:     "  - namespace_path: acme\n    environment: production\n    environment_protected: true\n    deployment_tier: production\n",
			wantMatch: true,
		},
		{
			name:      "every documented rule field",
			allow:     "  - sub: project_path:acme/app:ref_type:branch:ref:main\n    ref: main\n    ref_type: branch\n    namespace_path: acme\n    project_path: acme/app\n    pipeline_source: push\n    environment: production\n    user_login: sample-user\n    ref_protected: true\n    environment_protected: true\n    ci_config_ref_uri: gitlab.com/acme/app//.gitlab-ci.yml@refs/heads/main\n    deployment_tier: production\n    project_visibility: private\n",
			wantMatch: true,
		},
		{
			name:      "group glob",
			allow:     "  - project_path: acme/*\n",
			edit:      func(c map[string]any) { c["project_path"] = "acme/platform/api" },
			wantMatch: true,
		},
		{
			name:         "tag rule refuses a branch",
			allow:        "  - project_path: acme/app\n    ref_type: tag\n    ref: v?.*\n",
			wantInReason: []string{"ref_type wants tag, token has branch", "ref wants v?.*, token has main"},
		},
		{
			name:         "merge request pipeline refused",
			allow:        "  - project_path: acme/app\n    pipeline_source: [push, web]\n",
			edit:         func(c map[string]any) { c["pipeline_source"] = "merge_request_event" },
			wantInReason: []string{"pipeline_source wants push or web, token has merge_request_event"},
		},
		{
			name:         "no project_path claim",
			allow:        "  - namespace_path: acme\n",
			edit:         func(c map[string]any) { delete(c, "project_path") },
			wantCode:     identity.CodeClaimMissing,
			wantInReason: []string{`"project_path"`, "GitLab CI"},
		},
		{
			name:         "no ref_type claim",
			allow:        "  - namespace_path: acme\n",
			edit:         func(c map[string]any) { delete(c, "ref_type") },
			wantCode:     identity.CodeClaimMissing,
			wantInReason: []string{`"ref_type"`},
		},
	})
}
