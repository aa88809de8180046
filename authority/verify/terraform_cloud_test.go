package verify_test

import (
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/identity"
)

func init() {
	platforms = append(platforms, platform{
		name:     "terraform_cloud",
		audience: "acme",
		section: func(issuer string) string {
			return oidcHead(issuer) + "allow:\n  - organization_name: acme\n    workspace_name: app-production\n    run_phase: apply\n"
		},
		claims: policy.Claims{
			"sub":               {"organization:acme:project:Default Project:workspace:app-production:run_phase:apply"},
			"organization_id":   {"org-GRNbCjYNpBB6NEH9"},
			"organization_name": {"acme"},
			"project_id":        {"prj-vegSA59s1XPwMr2t"},
			"project_name":      {"Default Project"},
			"workspace_id":      {"ws-mbsd5E3Ktt5Rg2Xm"},
			"workspace_name":    {"app-production"},
			"full_workspace":    {"organization:acme:project:Default Project:workspace:app-production"},
			"run_id":            {"run-X3n1AUXNGWbfECsJ"},
			"run_phase":         {"apply"},
		},
	})
}

func TestTerraformCloudRules(t *testing.T) {
	runSectionRuleCases(t, platformByName(t, "terraform_cloud"), oidcHead, jose.RS256, []ruleCase{
		{
			name:      "workspace apply",
			allow:     "  - organization_name: acme\n    workspace_name: app-production\n    run_phase: apply\n",
			wantMatch: true,
		},
		{
			name: "every documented rule field",
			allow: "  - organization_name: acme\n    organization_id: org-GRNbCjYNpBB6NEH9\n    project_name: Default Project\n" +
				"    project_id: prj-vegSA59s1XPwMr2t\n    workspace_name: app-production\n    workspace_id: ws-mbsd5E3Ktt5Rg2Xm\n    run_phase: apply\n",
			wantMatch: true,
		},
		{
			name:         "plan phase refused where only apply may join",
			allow:        "  - organization_id: org-GRNbCjYNpBB6NEH9\n    run_phase: apply\n",
			edit:         func(c map[string]any) { c["terraform_run_phase"] = "plan" },
			wantInReason: []string{"run_phase wants apply, token has plan"},
		},
		{
			name:         "another organization",
			allow:        "  - organization_name: acme\n",
			edit:         func(c map[string]any) { c["terraform_organization_name"] = "acme-evil" },
			wantInReason: []string{"organization_name wants acme, token has acme-evil"},
		},
		{
			name:      "workspaces by glob",
			allow:     "  - organization_name: acme\n    workspace_name: app-*\n",
			edit:      func(c map[string]any) { c["terraform_workspace_name"] = "app-staging" },
			wantMatch: true,
		},
		{
			name:         "another project",
			allow:        "  - organization_id: org-GRNbCjYNpBB6NEH9\n    project_name: Platform\n",
			wantInReason: []string{"project_name wants Platform, token has Default Project"},
		},
		{
			name:         "no terraform_organization_id claim",
			allow:        "  - organization_name: acme\n",
			edit:         func(c map[string]any) { delete(c, "terraform_organization_id") },
			wantCode:     identity.CodeClaimMissing,
			wantInReason: []string{`"terraform_organization_id"`, "Terraform Cloud"},
		},
		{
			name:         "no terraform_run_phase claim",
			allow:        "  - organization_name: acme\n",
			edit:         func(c map[string]any) { delete(c, "terraform_run_phase") },
			wantCode:     identity.CodeClaimMissing,
			wantInReason: []string{`"terraform_run_phase"`},
		},
		{
			// Terraform Enterprise releases before projects send no project claims.
			name:      "no project claims",
			allow:     "  - organization_name: acme\n",
			edit:      func(c map[string]any) { delete(c, "terraform_project_id"); delete(c, "terraform_project_name") },
			wantMatch: true,
		},
		{
			name:         "default audience of a workspace without TFC_WORKLOAD_IDENTITY_AUDIENCE",
			allow:        "  - organization_name: acme\n",
			edit:         func(c map[string]any) { c["aud"] = "aws.workload.identity" },
			wantCode:     identity.CodeWrongAudience,
			wantInReason: []string{`expects audience "acme"`, "aws.workload.identity"},
		},
	})
}

// TestTerraformCloudIssuerAndAudience checks the issuer of HCP Terraform,
// hostname: for Terraform Enterprise, and audience: instead of the authority's.
func TestTerraformCloudIssuerAndAudience(t *testing.T) {
	t.Run("HCP Terraform by default", func(t *testing.T) {
		v := mustCompile(t, "terraform_cloud", "allow:\n  - organization_name: acme\n", newEnv(nil))
		iss := startIssuer(t, jose.ES256)
		_, err := v.Verify(t.Context(), iss.Sign(t, tokenClaims(t, "terraform_cloud", iss.URL, "acme")))
		wantRefusal(t, err, identity.CodeWrongIssuer, "https://"+verify.TerraformCloudHost, "spec.terraform_cloud.hostname")
	})
	t.Run("Terraform Enterprise by hostname", func(t *testing.T) {
		v := mustCompile(t, "terraform_cloud", "hostname: tfe.acme.internal\nallow:\n  - organization_name: acme\n", newEnv(nil))
		iss := startIssuer(t, jose.ES256)
		_, err := v.Verify(t.Context(), iss.Sign(t, tokenClaims(t, "terraform_cloud", iss.URL, "acme")))
		wantRefusal(t, err, identity.CodeWrongIssuer, "https://tfe.acme.internal")
	})
	iss := startIssuer(t, jose.ES256)
	section := oidcHead(iss.URL) + "audience: mbot.acme.internal\nallow:\n  - organization_name: acme\n"
	t.Run("audience: replaces the authority's", func(t *testing.T) {
		v := mustCompile(t, "terraform_cloud", section, newEnv(iss.Client))
		if _, err := v.Verify(t.Context(), iss.Sign(t, tokenClaims(t, "terraform_cloud", iss.URL, "mbot.acme.internal"))); err != nil {
			t.Fatalf("refused: %v", err)
		}
		_, err := v.Verify(t.Context(), iss.Sign(t, tokenClaims(t, "terraform_cloud", iss.URL, "acme")))
		wantRefusal(t, err, identity.CodeWrongAudience, `expects audience "mbot.acme.internal"`)
	})
}

func TestTerraformCloudCompile(t *testing.T) {
	runCompileCases(t, "terraform_cloud", []compileCase{
		{"organization by name", "allow:\n  - organization_name: acme\n    workspace_name: app-production\n", ""},
		{"organization by id", "allow:\n  - organization_id: org-GRNbCjYNpBB6NEH9\n", ""},
		{"Terraform Enterprise", "hostname: tfe.acme.internal\naudience: mbot\nallow:\n  - organization_name: acme\n", ""},
		// Every HCP Terraform organization can mint a token for our audience.
		{"rule without an organization", "allow:\n  - organization_name: acme\n  - workspace_name: app-production\n",
			"line 10: allow[1] does not pin the owner: app.terraform.io issues tokens to every HCP Terraform organization"},
		{"hostname as a URL", "hostname: https://tfe.acme.internal\nallow:\n  - organization_name: acme\n", "must be the bare host name"},
		{"claim name instead of rule field", "allow:\n  - terraform_organization_name: acme\n", `unknown field "terraform_organization_name"`},
		{"unknown section field", "organization: acme\nallow:\n  - organization_name: acme\n", "spec.terraform_cloud.organization is not a known field"},
	})
}
