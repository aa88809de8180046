package verify

import (
	"fmt"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/mbot-dev/mbot/authority/policy"
)

// CodefreshIssuer issues the ID tokens of every Codefresh account's
// pipelines (SaaS and on-premises alike).
const CodefreshIssuer = "https://oidc.codefresh.io"

// codefreshClaims are the claims of a Codefresh pipeline's ID token, as
// documented in "OIDC in pipelines" and sent by real pipelines (Sigstore
// Fulcio's Codefresh verifier and its fixtures): sub is
// account:<account id>:pipeline:<pipeline id>[:initiator:...][:scm_repo_url:...];
// runner_environment says where the build ran (hybrid: a runner of the
// account's own).
type codefreshClaims struct {
	Sub                        string `json:"sub"`
	AccountID                  string `json:"account_id"`
	AccountName                string `json:"account_name"`
	PipelineID                 string `json:"pipeline_id"`
	PipelineName               string `json:"pipeline_name"`
	WorkflowID                 string `json:"workflow_id"`
	Initiator                  string `json:"initiator"`
	SCMRepoURL                 string `json:"scm_repo_url"`
	SCMUserName                string `json:"scm_user_name"`
	SCMRef                     string `json:"scm_ref"`
	SCMPullRequestTargetBranch string `json:"scm_pull_request_target_branch"`
	RunnerEnvironment          string `json:"runner_environment"`
	PlatformURL                string `json:"platform_url"`
}

func init() {
	register(&oidcPlatform{
		name:          "codefresh",
		label:         "Codefresh",
		sectionFields: []string{"audience"},
		ruleFields: []string{"sub", "account_id", "account_name", "pipeline_id", "pipeline_name", "initiator",
			"scm_repo_url", "scm_user_name", "scm_ref", "scm_pull_request_target_branch", "runner_environment"},
		// mbot read a runner_type claim before; Codefresh never sent one.
		retiredFields: map[string]string{
			"runner_type": "Codefresh sends no runner_type claim (a rule on it never matched); its tokens carry runner_environment (such as hybrid): rename the field to runner_environment",
		},
		// oidc.codefresh.io signs for every account; the account id never
		// changes, the name can.
		scope: &policy.OwnerScope{
			Issuer: "oidc.codefresh.io issues tokens to every Codefresh account",
			Fields: []policy.OwnerField{
				{Name: "account_id", Shape: "the account's id, no globs", Example: "<your Codefresh account id>"},
				{Name: "sub", Pins: segments("account:", ":", 1), Shape: "account:<account id>:pipeline:<pipeline id>:*"},
			},
		},
		issuer: func(s *oidcSection) (string, error) {
			if s.Issuer != "" {
				return s.Issuer, nil
			}
			return CodefreshIssuer, nil
		},
		// The pipeline asks CF_OIDC_REQUEST_URL for a token with this audience.
		audience: func(s *oidcSection, env *Env) string {
			if s.Audience != "" {
				return s.Audience
			}
			return env.Audience
		},
		claims: func(tok *oidc.IDToken) (policy.Claims, error) {
			var c codefreshClaims
			if err := tok.Claims(&c); err != nil {
				return nil, err
			}
			if err := requireJWTClaims("sub", c.Sub, "account_id", c.AccountID, "pipeline_id", c.PipelineID); err != nil {
				return nil, err
			}
			// The sub must name the account the account_id claim names.
			if !strings.HasPrefix(c.Sub, "account:"+c.AccountID+":") {
				return nil, fmt.Errorf("sub %q does not begin with account:%s:, the token's account_id", c.Sub, c.AccountID)
			}
			return requireClaims(map[string]string{
				"sub": c.Sub, "account_id": c.AccountID, "account_name": c.AccountName, "pipeline_id": c.PipelineID,
				"pipeline_name": c.PipelineName, "workflow_id": c.WorkflowID, "initiator": c.Initiator,
				"scm_repo_url": c.SCMRepoURL, "scm_user_name": c.SCMUserName, "scm_ref": c.SCMRef,
				"scm_pull_request_target_branch": c.SCMPullRequestTargetBranch, "runner_environment": c.RunnerEnvironment,
				"platform_url": c.PlatformURL,
			})
		},
	})
}
