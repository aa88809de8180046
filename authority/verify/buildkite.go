package verify

import (
	"encoding/json"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/mbot-dev/mbot/authority/policy"
)

// BuildkiteIssuer is the issuer of the tokens `buildkite-agent oidc
// request-token` prints, for every Buildkite organization.
const BuildkiteIssuer = "https://agent.buildkite.com"

// buildkiteClaims are the claims of a Buildkite job's OIDC token, as
// documented in "OIDC with Buildkite" and `buildkite-agent oidc`.
type buildkiteClaims struct {
	Sub               string      `json:"sub"`
	OrganizationSlug  string      `json:"organization_slug"`
	OrganizationID    string      `json:"organization_id"`
	PipelineSlug      string      `json:"pipeline_slug"`
	PipelineID        string      `json:"pipeline_id"`
	BuildNumber       json.Number `json:"build_number"`
	BuildBranch       string      `json:"build_branch"`
	BuildTag          string      `json:"build_tag"`
	BuildCommit       string      `json:"build_commit"`
	BuildSource       string      `json:"build_source"`
	StepKey           string      `json:"step_key"` // null for steps without a key
	JobID             string      `json:"job_id"`
	AgentID           string      `json:"agent_id"`
	RunnerEnvironment string      `json:"runner_environment"`
}

func init() {
	register(&oidcPlatform{
		name:       "buildkite",
		label:      "Buildkite",
		ruleFields: []string{"organization_slug", "pipeline_slug", "build_branch"},
		// Any Buildkite job can ask for a token with our audience.
		scope: &policy.OwnerScope{
			Issuer: "agent.buildkite.com issues tokens to every Buildkite organization",
			Fields: []policy.OwnerField{{Name: "organization_slug", Shape: "acme", Example: "<your organization slug>"}},
		},
		issuer: func(s *oidcSection) (string, error) {
			if s.Issuer != "" {
				return s.Issuer, nil
			}
			return BuildkiteIssuer, nil
		},
		audience: func(_ *oidcSection, env *Env) string { return env.Audience },
		claims: func(tok *oidc.IDToken) (policy.Claims, error) {
			var c buildkiteClaims
			if err := tok.Claims(&c); err != nil {
				return nil, err
			}
			if err := requireJWTClaims("sub", c.Sub, "organization_slug", c.OrganizationSlug,
				"pipeline_slug", c.PipelineSlug, "job_id", c.JobID); err != nil {
				return nil, err
			}
			return requireClaims(map[string]string{
				"sub": c.Sub, "organization_slug": c.OrganizationSlug, "organization_id": c.OrganizationID,
				"pipeline_slug": c.PipelineSlug, "pipeline_id": c.PipelineID, "build_number": c.BuildNumber.String(),
				"build_branch": c.BuildBranch, "build_tag": c.BuildTag, "build_commit": c.BuildCommit,
				"build_source": c.BuildSource, "step_key": c.StepKey, "job_id": c.JobID, "agent_id": c.AgentID,
				"runner_environment": c.RunnerEnvironment,
			})
		},
	})
}
