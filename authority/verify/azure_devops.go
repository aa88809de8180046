package verify

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/mbot-dev/mbot/authority/policy"
)

// AzureDevOpsIssuerPrefix is followed by the organization's id in the
// issuer of Azure Pipelines OIDC tokens.
const AzureDevOpsIssuerPrefix = "https://vstoken.dev.azure.com/"

// AzureDevOpsAudience is the aud of every Azure Pipelines OIDC token: the
// oidctoken API takes no audience, it mints tokens for Entra ID federation.
const AzureDevOpsAudience = "api://AzureADTokenExchange"

// azureDevOpsClaims are the claims of an Azure Pipelines OIDC token, as
// the "Oidctoken - Create" API returns it (and as Teleport's azure_devops
// method reads them).
type azureDevOpsClaims struct {
	Sub               string      `json:"sub"`
	OrganizationID    string      `json:"org_id"`
	ProjectID         string      `json:"prj_id"`
	DefinitionID      json.Number `json:"def_id"`
	RepositoryID      string      `json:"rpo_id"`
	RepositoryURI     string      `json:"rpo_uri"`
	RepositoryVersion string      `json:"rpo_ver"`
	RepositoryRef     string      `json:"rpo_ref"`
	RunID             json.Number `json:"run_id"`
}

func init() {
	register(&oidcPlatform{
		name:          "azure_devops",
		label:         "Azure Pipelines",
		sectionFields: []string{"organization_id", "audience"},
		ruleFields: []string{"sub", "organization_name", "project_name", "pipeline_name", "service_connection",
			"project_id", "definition_id", "repository_id", "repository_uri", "repository_version", "repository_ref"},
		// No scope on rules: the required organization_id, a literal UUID,
		// makes the issuer the organization's own.
		issuer: func(s *oidcSection) (string, error) {
			if s.OrganizationID == "" {
				return "", errors.New("organization_id is required: the Azure DevOps organization's id, whose tokens' issuer is " +
					AzureDevOpsIssuerPrefix + "<organization_id> (shown by `az devops invoke --area Location --resource ConnectionData`, or in the token's org_id claim)")
			}
			if !uuidShape.MatchString(s.OrganizationID) {
				return "", fmt.Errorf("organization_id %q is not an Azure DevOps organization id: a UUID such as 0f8e4c2b-1a2b-4c3d-9e8f-123456789abc", s.OrganizationID)
			}
			if s.Issuer != "" {
				return s.Issuer, nil
			}
			return AzureDevOpsIssuerPrefix + strings.ToLower(s.OrganizationID), nil
		},
		audience: func(s *oidcSection, _ *Env) string {
			if s.Audience != "" {
				return s.Audience
			}
			return AzureDevOpsAudience
		},
		checkRules:  checkAzureDevOpsRules,
		tokenClaims: []string{"org_id", "prj_id", "def_id", "rpo_id", "rpo_uri", "rpo_ref"},
		claims:      azureDevOpsIdentity,
	})
}

// azureDevOpsIdentity reads the token's claims; the names in its sub,
// p://<organization>/<project>/<pipeline> for a pipeline's own token or
// sc://<organization>/<project>/<service connection> for a service
// connection's, become organization_name, project_name and pipeline_name
// or service_connection.
func azureDevOpsIdentity(tok *oidc.IDToken) (policy.Claims, error) {
	var c azureDevOpsClaims
	if err := tok.Claims(&c); err != nil {
		return nil, err
	}
	if err := requireJWTClaims("sub", c.Sub); err != nil {
		return nil, err
	}
	kind, path, ok := strings.Cut(c.Sub, "://")
	// A pipeline's token names its run; a service connection's carries only
	// the standard claims and its sub (Teleport's RFD 211 shows both), its
	// organization pinned by the issuer.
	if kind == "p" {
		if err := requireJWTClaims("org_id", c.OrganizationID, "prj_id", c.ProjectID); err != nil {
			return nil, err
		}
	}
	parts := strings.Split(path, "/")
	if !ok || (kind != "p" && kind != "sc") || len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return nil, fmt.Errorf("sub %q is not of the form p://<organization>/<project>/<pipeline> or sc://<organization>/<project>/<service connection>", c.Sub)
	}
	fields := map[string]string{
		"sub": c.Sub, "organization_name": parts[0], "project_name": parts[1], "organization_id": c.OrganizationID,
		"project_id": c.ProjectID, "definition_id": c.DefinitionID.String(), "repository_id": c.RepositoryID,
		"repository_uri": c.RepositoryURI, "repository_version": c.RepositoryVersion, "repository_ref": c.RepositoryRef,
		"run_id": c.RunID.String(),
	}
	if kind == "p" {
		fields["pipeline_name"] = parts[2]
	} else {
		fields["service_connection"] = parts[2]
	}
	return requireClaims(fields)
}

// azureDevOpsPipelineOnly are the rule fields only a pipeline's own token
// (sub p://...) carries: a service connection's token has its sub and the
// standard claims alone.
var azureDevOpsPipelineOnly = []string{"pipeline_name", "project_id", "definition_id", "repository_id",
	"repository_uri", "repository_version", "repository_ref"}

// checkAzureDevOpsRules refuses a rule that names a service connection and a
// field its token never carries, which could never match.
func checkAzureDevOpsRules(rules []policy.AllowRule) error {
	for i, r := range rules {
		var sc bool
		var never []string
		for _, f := range r.Fields {
			switch {
			case f.Name == "service_connection":
				sc = true
			case slices.Contains(azureDevOpsPipelineOnly, f.Name):
				never = append(never, f.Name)
			}
		}
		if sc && len(never) > 0 {
			return fmt.Errorf("line %d: allow[%d] names service_connection and %s, but a service connection's token (sub sc://<organization>/<project>/<connection>) "+
				"carries no %s: the rule could never match; drop %s (the connection's own settings say which pipelines may use it), or rule on pipeline_name for the pipeline's own token",
				r.Line, i, strings.Join(never, ", "), strings.Join(never, ", "), strings.Join(never, ", "))
		}
	}
	return nil
}
