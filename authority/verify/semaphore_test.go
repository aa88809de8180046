package verify_test

import (
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/identity"
)

// semaphoreProject is the project of testdata/claims/semaphore.json.
const semaphoreProject = "936a5312-a3b8-4921-8b3f-2cec8baac574"

func init() {
	platforms = append(platforms, platform{
		name:     "semaphore",
		audience: "https://acme.semaphoreci.com",
		section: func(issuer string) string {
			return semaphoreHead(issuer) + "allow:\n  - project_id: " + semaphoreProject + "\n    branch: main\n"
		},
		claims: policy.Claims{
			"sub":         {"org:acme:project:" + semaphoreProject + ":repo:web:ref_type:branch:ref:refs/heads/main"},
			"project_id":  {semaphoreProject},
			"repo":        {"web"},
			"repo_slug":   {"acme/web"},
			"branch":      {"main"},
			"ref":         {"refs/heads/main"},
			"ref_type":    {"branch"},
			"workflow_id": {"1be81412-6ab8-4fc0-9d0d-7af33335a6ec"},
			"pipeline_id": {"1e1fcfb5-09c0-487e-b051-2d0b5514c42a"},
			"job_type":    {"pipeline_job"},
			"job_id":      {"c117e453-1189-4eaf-b03a-dd6538eb49b2"},
		},
	})
}

func semaphoreHead(issuer string) string { return "organization: acme\nissuer: " + issuer + "\n" }

func TestSemaphoreRules(t *testing.T) {
	runSectionRuleCases(t, platformByName(t, "semaphore"), semaphoreHead, jose.ES256, []ruleCase{
		{name: "project and branch", allow: "  - project_id: " + semaphoreProject + "\n    branch: main\n", wantMatch: true},
		{
			name: "every documented rule field",
			allow: "  - sub: org:acme:project:" + semaphoreProject + ":*\n    project_id: " + semaphoreProject + "\n    repo: web\n    repo_slug: acme/web\n" +
				"    branch: main\n    ref: refs/heads/main\n    ref_type: branch\n    job_type: pipeline_job\n",
			wantMatch: true,
		},
		{
			name:         "a debug job",
			allow:        "  - project_id: " + semaphoreProject + "\n    job_type: pipeline_job\n",
			edit:         func(c map[string]any) { c["job_type"] = "debug_job" },
			wantInReason: []string{"job_type wants pipeline_job, token has debug_job"},
		},
		{
			name:         "a pull request's token",
			allow:        "  - repo_slug: acme/web\n    ref_type: branch\n",
			edit:         func(c map[string]any) { c["ref_type"], c["pr"], c["pr_branch"] = "pr", 123, "feature" },
			wantInReason: []string{"ref_type wants branch, token has pr"},
		},
		{
			name:     "no prj_id claim",
			allow:    "  - branch: main\n",
			edit:     func(c map[string]any) { delete(c, "prj_id") },
			wantCode: identity.CodeClaimMissing,
		},
	})
}

func TestSemaphoreCompile(t *testing.T) {
	runCompileCases(t, "semaphore", []compileCase{
		{"organization", "organization: acme\nallow:\n  - branch: main\n", ""},
		{"no organization", "allow:\n  - branch: main\n", "organization is required"},
		{"organization as a URL", "organization: https://acme.semaphoreci.com\nallow:\n  - branch: main\n", "is not a Semaphore organization name"},
		{"organization glob", "organization: \"*\"\nallow:\n  - branch: main\n", "is not a Semaphore organization name"},
		// Semaphore sends ref_type "pull-request"; "pr" (in mbot's docs once) never matched.
		{"ref_type pr", "organization: acme\nallow:\n  - branch: main\n    ref_type: pr\n", `Semaphore's pull-request jobs send ref_type "pull-request", never "pr": write ref_type: pull-request`},
		{"ref_type pull-request", "organization: acme\nallow:\n  - pr_branch: main\n    ref_type: pull-request\n", ""},
	})
	// Another organization's tokens come from another issuer.
	v, err := compile(t, "semaphore", "organization: acme\nallow:\n  - branch: main\n", newEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	iss := startIssuer(t, jose.ES256)
	claims := tokenClaims(t, "semaphore", "https://acme-evil.semaphoreci.com", "https://acme.semaphoreci.com")
	_, err = v.Verify(t.Context(), iss.Sign(t, claims))
	wantRefusal(t, err, identity.CodeWrongIssuer, "https://acme.semaphoreci.com", "https://acme-evil.semaphoreci.com")
}
