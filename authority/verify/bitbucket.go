package verify

import (
	"errors"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/mbot-dev/mbot/authority/policy"
)

// bitbucketClaims are the claims of a Bitbucket Pipelines step's OIDC token,
// as documented in "Integrate Pipelines with resource servers using OIDC".
// Bitbucket UUIDs are written with braces: {9a8b...}.
type bitbucketClaims struct {
	Sub                       string `json:"sub"`
	StepUUID                  string `json:"stepUuid"`
	PipelineUUID              string `json:"pipelineUuid"`
	WorkspaceUUID             string `json:"workspaceUuid"`
	RepositoryUUID            string `json:"repositoryUuid"`
	DeploymentEnvironmentUUID string `json:"deploymentEnvironmentUuid"`
	BranchName                string `json:"branchName"`
}

func init() {
	register(&oidcPlatform{
		name:          "bitbucket",
		label:         "Bitbucket Pipelines",
		sectionFields: []string{"identity_provider_url", "audience"},
		ruleFields:    []string{"workspace_uuid", "repository_uuid", "deployment_environment_uuid", "branch_name"},
		issuerField:   "identity_provider_url",
		// Each workspace is its own issuer and audience; both are on the
		// repository's Pipelines > OpenID Connect settings page. They pin
		// the workspace, so rules need no scope; both are required and
		// compared exactly, never as globs.
		issuer: func(s *oidcSection) (string, error) {
			switch {
			case strings.ContainsAny(s.IdentityProviderURL+s.Audience, "*?"):
				return "", errors.New("identity_provider_url and audience are compared exactly: write them as the OpenID Connect settings page shows them, without * or ?")
			case s.Issuer != "":
				return "", errors.New("set the issuer as identity_provider_url, not issuer")
			case s.IdentityProviderURL == "":
				return "", errors.New("identity_provider_url is required: the Identity provider URL on the repository's Pipelines > OpenID Connect settings page, " +
					"https://api.bitbucket.org/2.0/workspaces/<workspace>/pipelines-config/identity/oidc")
			case s.Audience == "":
				return "", errors.New("audience is required: the Audience on the repository's Pipelines > OpenID Connect settings page, ari:cloud:bitbucket::workspace/<uuid>")
			}
			return s.IdentityProviderURL, nil
		},
		audience: func(s *oidcSection, _ *Env) string { return s.Audience },
		claims: func(tok *oidc.IDToken) (policy.Claims, error) {
			var c bitbucketClaims
			if err := tok.Claims(&c); err != nil {
				return nil, err
			}
			if err := requireJWTClaims("sub", c.Sub, "workspaceUuid", c.WorkspaceUUID,
				"repositoryUuid", c.RepositoryUUID, "stepUuid", c.StepUUID); err != nil {
				return nil, err
			}
			return requireClaims(map[string]string{
				"sub": c.Sub, "workspace_uuid": c.WorkspaceUUID, "repository_uuid": c.RepositoryUUID,
				"deployment_environment_uuid": c.DeploymentEnvironmentUUID, "branch_name": c.BranchName,
				"pipeline_uuid": c.PipelineUUID, "step_uuid": c.StepUUID,
			})
		},
	})
}
