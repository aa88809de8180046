package verify

import (
	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/mbot-dev/mbot/authority/policy"
)

// GitHubIssuer is the issuer of GitHub Actions OIDC tokens on github.com.
const GitHubIssuer = "https://token.actions.githubusercontent.com"

// githubClaims are the claims of a GitHub Actions OIDC token, as documented in
// "About security hardening with OpenID Connect".
type githubClaims struct {
	Sub                  string `json:"sub"`
	Repository           string `json:"repository"`
	RepositoryID         string `json:"repository_id"`
	RepositoryOwner      string `json:"repository_owner"`
	RepositoryOwnerID    string `json:"repository_owner_id"`
	RepositoryVisibility string `json:"repository_visibility"`
	Workflow             string `json:"workflow"`
	WorkflowRef          string `json:"workflow_ref"`
	JobWorkflowRef       string `json:"job_workflow_ref"`
	Environment          string `json:"environment"`
	Actor                string `json:"actor"`
	Ref                  string `json:"ref"`
	RefType              string `json:"ref_type"`
	EventName            string `json:"event_name"`
	RunID                string `json:"run_id"`
	SHA                  string `json:"sha"`
}

// githubScope: GitHub's issuer signs a token for any repository that asks,
// so a rule names the owner, by name or id. job_workflow_ref does not:
// any repository can call a public reusable workflow.
var githubScope = &policy.OwnerScope{
	Issuer: "GitHub's issuer signs tokens for every repository (on github.com, every repository in the world)",
	Fields: []policy.OwnerField{
		{Name: "repository_owner", Shape: "acme", Example: "<your org or user>"},
		{Name: "repository", Pins: firstSegment("", "/"), Shape: "acme/app or acme/*"},
		{Name: "repository_owner_id", Shape: "the owner's numeric id"},
		{Name: "repository_id", Shape: "the repository's numeric id"},
		// The default sub is repo:<owner>/<repo>:...; an owner can customize
		// it to start with its own name or id instead.
		{Name: "sub", Pins: anyOf(firstSegment("repo:", "/"), firstSegment("repository_owner:", ":"), firstSegment("repository_owner_id:", ":")),
			Shape: "repo:acme/app:ref:refs/heads/main or repo:acme/*"},
	},
}

func init() {
	register(&oidcPlatform{
		name:  "github",
		label: "GitHub Actions",
		ruleFields: []string{"sub", "repository", "repository_owner", "workflow", "environment", "actor",
			"ref", "ref_type", "job_workflow_ref", "repository_id", "repository_owner_id"},
		scope: githubScope,
		issuer: func(s *oidcSection) (string, error) {
			if s.Issuer != "" {
				return s.Issuer, nil
			}
			return GitHubIssuer, nil
		},
		audience: func(_ *oidcSection, env *Env) string { return env.Audience },
		claims: func(tok *oidc.IDToken) (policy.Claims, error) {
			var c githubClaims
			if err := tok.Claims(&c); err != nil {
				return nil, err
			}
			return requireClaims(map[string]string{
				"sub": c.Sub, "repository": c.Repository, "repository_owner": c.RepositoryOwner,
				"workflow": c.Workflow, "environment": c.Environment, "actor": c.Actor, "ref": c.Ref,
				"ref_type": c.RefType, "job_workflow_ref": c.JobWorkflowRef, "repository_id": c.RepositoryID,
				"repository_owner_id": c.RepositoryOwnerID,
				"event_name":          c.EventName, "run_id": c.RunID, "sha": c.SHA,
			}, "sub", "repository", "repository_owner", "ref", "actor")
		},
	})
}
