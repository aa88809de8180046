package verify

import (
	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/mbot-dev/mbot/authority/policy"
)

// Env0Issuer issues the ENV0_OIDC_TOKEN of every env0 organization's
// deployments; the trailing slash is part of it.
const Env0Issuer = "https://login.app.env0.com/"

// Env0Audience is the fixed audience of env0's tokens.
const Env0Audience = "https://prod.env0.com"

// env0Claims are the claims of an env0 deployment's OIDC token, as
// documented in "OIDC Integrations" and "OIDC Additional Claims".
type env0Claims struct {
	Sub             string `json:"sub"`
	OrganizationID  string `json:"organizationId"`
	ProjectID       string `json:"projectId"`
	ProjectName     string `json:"projectName"`
	TemplateID      string `json:"templateId"`
	TemplateName    string `json:"templateName"`
	EnvironmentID   string `json:"environmentId"`
	EnvironmentName string `json:"environmentName"`
	WorkspaceName   string `json:"workspaceName"`
	DeploymentLogID string `json:"deploymentLogId"`
	DeployerEmail   string `json:"deployerEmail"`
	APIKeyType      string `json:"apiKeyType"`
}

func init() {
	register(&oidcPlatform{
		name:          "env0",
		label:         "env0",
		sectionFields: []string{"audience"},
		ruleFields: []string{"organization_id", "project_id", "project_name", "template_id", "template_name",
			"environment_id", "environment_name", "workspace_name", "deployer_email"},
		// One issuer and one audience for every env0 organization.
		scope: &policy.OwnerScope{
			Issuer: "login.app.env0.com issues tokens, all with the same audience, to every env0 organization",
			Fields: []policy.OwnerField{{Name: "organization_id", Shape: "the organization's UUID, no globs", Example: "<your env0 organization id>"}},
		},
		issuer: func(s *oidcSection) (string, error) {
			if s.Issuer != "" {
				return s.Issuer, nil
			}
			return Env0Issuer, nil
		},
		audience: func(s *oidcSection, _ *Env) string {
			if s.Audience != "" {
				return s.Audience
			}
			return Env0Audience
		},
		tokenClaims: []string{"organizationId", "projectId", "environmentId", "environmentName", "deployerEmail"},
		claims: func(tok *oidc.IDToken) (policy.Claims, error) {
			var c env0Claims
			if err := tok.Claims(&c); err != nil {
				return nil, err
			}
			if err := requireJWTClaims("sub", c.Sub, "organizationId", c.OrganizationID, "environmentId", c.EnvironmentID); err != nil {
				return nil, err
			}
			return requireClaims(map[string]string{
				"sub": c.Sub, "organization_id": c.OrganizationID, "project_id": c.ProjectID, "project_name": c.ProjectName,
				"template_id": c.TemplateID, "template_name": c.TemplateName, "environment_id": c.EnvironmentID,
				"environment_name": c.EnvironmentName, "workspace_name": c.WorkspaceName,
				"deployment_log_id": c.DeploymentLogID, "deployer_email": c.DeployerEmail,
			})
		},
	})
}
