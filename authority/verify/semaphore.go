package verify

import (
	"errors"
	"fmt"
	"slices"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/internal/lazyregexp"
)

// semaphoreOrgName is a Semaphore organization name, the first label of
// its https://<organization>.semaphoreci.com address.
var semaphoreOrgName = lazyregexp.New(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// semaphoreClaims are the claims of a Semaphore job's SEMAPHORE_OIDC_TOKEN,
// as documented in "OpenID Connect Token Reference".
type semaphoreClaims struct {
	Sub       string       `json:"sub"`
	Branch    string       `json:"branch"`
	PRBranch  string       `json:"pr_branch"`
	PR        numberOrText `json:"pr"`
	Ref       string       `json:"ref"`
	RefType   string       `json:"ref_type"`
	Tag       string       `json:"tag"`
	Repo      string       `json:"repo"`
	RepoSlug  string       `json:"repo_slug"`
	ProjectID string       `json:"prj_id"`
	Workflow  string       `json:"wf_id"`
	Pipeline  string       `json:"ppl_id"`
	JobType   string       `json:"job_type"`
	JobID     string       `json:"job_id"`
}

func init() {
	register(&oidcPlatform{
		name:          "semaphore",
		label:         "Semaphore",
		sectionFields: []string{"organization", "audience"},
		ruleFields:    []string{"sub", "project_id", "repo", "repo_slug", "branch", "pr_branch", "ref", "ref_type", "tag", "job_type"},
		checkRules:    refuseSemaphorePR,
		// No scope on rules: the required organization makes the issuer the
		// organization's own (https://<organization>.semaphoreci.com).
		issuer: func(s *oidcSection) (string, error) {
			if s.Organization == "" {
				return "", errors.New("organization is required: the Semaphore organization's name, as in https://<organization>.semaphoreci.com, its tokens' issuer")
			}
			if !semaphoreOrgName.MatchString(s.Organization) {
				return "", fmt.Errorf("organization %q is not a Semaphore organization name: the first label of https://<organization>.semaphoreci.com, lower-case letters, digits and -", s.Organization)
			}
			if s.Issuer != "" {
				return s.Issuer, nil
			}
			return "https://" + s.Organization + ".semaphoreci.com", nil
		},
		// Semaphore's tokens are for the organization's own URL.
		audience: func(s *oidcSection, _ *Env) string {
			if s.Audience != "" {
				return s.Audience
			}
			return "https://" + s.Organization + ".semaphoreci.com"
		},
		tokenClaims: []string{"prj_id", "wf_id", "ppl_id", "job_id"},
		claims: func(tok *oidc.IDToken) (policy.Claims, error) {
			var c semaphoreClaims
			if err := tok.Claims(&c); err != nil {
				return nil, err
			}
			if err := requireJWTClaims("sub", c.Sub, "prj_id", c.ProjectID, "job_id", c.JobID); err != nil {
				return nil, err
			}
			return requireClaims(map[string]string{
				"sub": c.Sub, "project_id": c.ProjectID, "repo": c.Repo, "repo_slug": c.RepoSlug, "branch": c.Branch,
				"pr_branch": c.PRBranch, "pr": string(c.PR), "ref": c.Ref, "ref_type": c.RefType, "tag": c.Tag,
				"workflow_id": c.Workflow, "pipeline_id": c.Pipeline, "job_type": c.JobType, "job_id": c.JobID,
			})
		},
	})
}

// refuseSemaphorePR refuses ref_type "pr", which mbot's docs once told
// users to write: Semaphore's pull-request jobs send the claim ref_type
// "pull-request" (its OIDC reference and SEMAPHORE_GIT_REF_TYPE), so such
// a rule never matched. (The sub template of that reference spells it
// "pr"; a sub pattern is left as the user wrote it.)
func refuseSemaphorePR(rules []policy.AllowRule) error {
	for _, r := range rules {
		for _, f := range r.Fields {
			if f.Name == "ref_type" && slices.Contains(f.Patterns, "pr") {
				return fmt.Errorf("line %d: allow rule field ref_type: Semaphore's pull-request jobs send ref_type \"pull-request\", never \"pr\": write ref_type: pull-request", r.Line)
			}
		}
	}
	return nil
}
