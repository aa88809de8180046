package verify

import (
	"fmt"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/mbot-dev/mbot/authority/policy"
)

// TerraformCloudHost is the host of HCP Terraform (Terraform Cloud), whose
// workload identity tokens have the issuer https://app.terraform.io.
const TerraformCloudHost = "app.terraform.io"

// terraformCloudClaims are the claims of an HCP Terraform or Terraform
// Enterprise workload identity token, as documented in "Workload identity".
type terraformCloudClaims struct {
	Sub              string `json:"sub"`
	OrganizationID   string `json:"terraform_organization_id"`
	OrganizationName string `json:"terraform_organization_name"`
	ProjectID        string `json:"terraform_project_id"`
	ProjectName      string `json:"terraform_project_name"`
	WorkspaceID      string `json:"terraform_workspace_id"`
	WorkspaceName    string `json:"terraform_workspace_name"`
	FullWorkspace    string `json:"terraform_full_workspace"`
	RunID            string `json:"terraform_run_id"`
	RunPhase         string `json:"terraform_run_phase"`
}

func init() {
	register(&oidcPlatform{
		name:          "terraform_cloud",
		label:         "Terraform Cloud",
		sectionFields: []string{"hostname", "audience"},
		ruleFields: []string{"organization_name", "organization_id", "project_name", "project_id",
			"workspace_name", "workspace_id", "run_phase"},
		// Every HCP Terraform organization can ask for a token with our audience.
		scope: &policy.OwnerScope{
			Issuer: "app.terraform.io issues tokens to every HCP Terraform organization",
			Fields: []policy.OwnerField{
				{Name: "organization_name", Shape: "acme", Example: "<your organization>"},
				{Name: "organization_id", Shape: "org-..."},
			},
		},
		issuerField: "hostname",
		issuer: func(s *oidcSection) (string, error) {
			if strings.ContainsAny(s.Hostname, ":/") {
				return "", fmt.Errorf("hostname %q must be the bare host name of Terraform Enterprise, without https:// or a path", s.Hostname)
			}
			if s.Issuer != "" {
				return s.Issuer, nil
			}
			if s.Hostname != "" {
				return "https://" + s.Hostname, nil
			}
			return "https://" + TerraformCloudHost, nil
		},
		// The workspace sets TFC_WORKLOAD_IDENTITY_AUDIENCE to this value.
		audience: func(s *oidcSection, env *Env) string {
			if s.Audience != "" {
				return s.Audience
			}
			return env.Audience
		},
		claims: func(tok *oidc.IDToken) (policy.Claims, error) {
			var c terraformCloudClaims
			if err := tok.Claims(&c); err != nil {
				return nil, err
			}
			if err := requireJWTClaims("sub", c.Sub, "terraform_organization_id", c.OrganizationID,
				"terraform_organization_name", c.OrganizationName, "terraform_workspace_id", c.WorkspaceID,
				"terraform_workspace_name", c.WorkspaceName, "terraform_run_phase", c.RunPhase); err != nil {
				return nil, err
			}
			return requireClaims(map[string]string{
				"sub": c.Sub, "organization_id": c.OrganizationID, "organization_name": c.OrganizationName,
				"project_id": c.ProjectID, "project_name": c.ProjectName, "workspace_id": c.WorkspaceID,
				"workspace_name": c.WorkspaceName, "full_workspace": c.FullWorkspace, "run_id": c.RunID,
				"run_phase": c.RunPhase,
			})
		},
	})
}
