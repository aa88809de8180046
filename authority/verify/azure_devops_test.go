package verify_test

import (
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/identity"
)

// azureDevOpsOrg is the organization of testdata/claims/azure_devops.json.
const azureDevOpsOrg = "0f8e4c2b-1a2b-4c3d-9e8f-123456789abc"

func init() {
	platforms = append(platforms, platform{
		name:     "azure_devops",
		audience: verify.AzureDevOpsAudience,
		section: func(issuer string) string {
			return azureDevOpsHead(issuer) + "allow:\n  - project_name: infra\n    repository_ref: refs/heads/main\n"
		},
		claims: policy.Claims{
			"sub":                {"sc://acme/infra/mbot-deploy"},
			"organization_name":  {"acme"},
			"organization_id":    {azureDevOpsOrg},
			"project_name":       {"infra"},
			"project_id":         {"6d1b9f2e-3c4d-4e5f-8a9b-0c1d2e3f4a5b"},
			"service_connection": {"mbot-deploy"},
			"definition_id":      {"42"},
			"repository_id":      {"a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"},
			"repository_uri":     {"https://dev.azure.com/acme/infra/_git/app"},
			"repository_version": {"e1b4c8a5f9f5b4e1f2d5c8a9b7e6d5c4b3a29180"},
			"repository_ref":     {"refs/heads/main"},
			"run_id":             {"1234"},
		},
	})
}

func azureDevOpsHead(issuer string) string {
	return "organization_id: " + azureDevOpsOrg + "\nissuer: " + issuer + "\n"
}

func TestAzureDevOpsRules(t *testing.T) {
	runSectionRuleCases(t, platformByName(t, "azure_devops"), azureDevOpsHead, jose.RS256, []ruleCase{
		{
			name:      "project and ref",
			allow:     "  - project_name: infra\n    repository_ref: refs/heads/main\n",
			wantMatch: true,
		},
		{
			name: "every documented rule field",
			allow: "  - sub: p://acme/infra/deploy\n    organization_name: acme\n    project_name: infra\n    pipeline_name: deploy\n" +
				"    project_id: 6d1b9f2e-3c4d-4e5f-8a9b-0c1d2e3f4a5b\n    definition_id: \"42\"\n    repository_id: a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d\n" +
				"    repository_uri: https://dev.azure.com/acme/infra/_git/app\n    repository_version: e1b4c8a5f9f5b4e1f2d5c8a9b7e6d5c4b3a29180\n    repository_ref: refs/heads/main\n",
			edit:      func(c map[string]any) { c["sub"] = "p://acme/infra/deploy" },
			wantMatch: true,
		},
		{
			// As Teleport's RFD 211 shows one: its sub and the standard claims.
			name:  "a service connection's token as Azure DevOps sends it",
			allow: "  - organization_name: acme\n    project_name: infra\n    service_connection: mbot-deploy\n",
			edit: func(c map[string]any) {
				for _, k := range []string{"org_id", "prj_id", "def_id", "rpo_id", "rpo_uri", "rpo_ver", "rpo_ref", "run_id"} {
					delete(c, k)
				}
			},
			wantMatch: true,
		},
		{
			name:      "a pipeline's own token names the pipeline",
			allow:     "  - project_name: infra\n    pipeline_name: deploy\n",
			edit:      func(c map[string]any) { c["sub"] = "p://acme/infra/deploy" },
			wantMatch: true,
		},
		{
			name:         "another organization's name in sub",
			allow:        "  - organization_name: acme\n",
			edit:         func(c map[string]any) { c["sub"] = "sc://acme-evil/infra/mbot-deploy" },
			wantInReason: []string{"organization_name wants acme, token has acme-evil"},
		},
		{
			name:         "another project",
			allow:        "  - project_name: infra\n",
			edit:         func(c map[string]any) { c["sub"] = "sc://acme/sandbox/mbot-deploy" },
			wantInReason: []string{"project_name wants infra, token has sandbox"},
		},
		{
			name:         "a branch the rule does not name",
			allow:        "  - project_name: infra\n    repository_ref: refs/heads/main\n",
			edit:         func(c map[string]any) { c["rpo_ref"] = "refs/heads/feature" },
			wantInReason: []string{"repository_ref wants refs/heads/main, token has refs/heads/feature"},
		},
		{
			name:         "sub of another shape",
			allow:        "  - project_name: infra\n",
			edit:         func(c map[string]any) { c["sub"] = "acme/infra/deploy" },
			wantCode:     identity.CodeProofInvalid,
			wantInReason: []string{"p://<organization>/<project>/<pipeline>"},
		},
		{
			name:         "a pipeline's token without org_id",
			allow:        "  - project_name: infra\n",
			edit:         func(c map[string]any) { c["sub"] = "p://acme/infra/deploy"; delete(c, "org_id") },
			wantCode:     identity.CodeClaimMissing,
			wantInReason: []string{`"org_id"`, "Azure Pipelines"},
		},
	})
}

func TestAzureDevOpsCompile(t *testing.T) {
	runCompileCases(t, "azure_devops", []compileCase{
		{"organization id", "organization_id: " + azureDevOpsOrg + "\nallow:\n  - project_name: infra\n", ""},
		{"no organization", "allow:\n  - project_name: infra\n", "organization_id is required"},
		{"organization by name", "organization_id: acme\nallow:\n  - project_name: infra\n", `organization_id "acme" is not an Azure DevOps organization id`},
		{"organization glob", "organization_id: \"*\"\nallow:\n  - project_name: infra\n", "is not an Azure DevOps organization id"},
		{"unknown rule field", "organization_id: " + azureDevOpsOrg + "\nallow:\n  - branch: main\n", `unknown field "branch"`},
		// A service connection's token carries no repository or pipeline
		// claims: such a rule could never match.
		{"service connection and ref", "organization_id: " + azureDevOpsOrg + "\nallow:\n  - service_connection: mbot-deploy\n    repository_ref: refs/heads/main\n",
			"names service_connection and repository_ref, but a service connection's token"},
		{"service connection and pipeline", "organization_id: " + azureDevOpsOrg + "\nallow:\n  - project_name: infra\n  - service_connection: mbot-deploy\n    pipeline_name: deploy\n",
			"allow[1] names service_connection and pipeline_name"},
		{"service connection", "organization_id: " + azureDevOpsOrg + "\nallow:\n  - project_name: infra\n    service_connection: mbot-deploy\n", ""},
	})
	// The issuer is the organization's own, by default.
	v, err := compile(t, "azure_devops", "organization_id: "+azureDevOpsOrg+"\nallow:\n  - project_name: infra\n", newEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	iss := startIssuer(t, jose.ES256)
	claims := tokenClaims(t, "azure_devops", iss.URL, verify.AzureDevOpsAudience)
	_, err = v.Verify(t.Context(), iss.Sign(t, claims))
	wantRefusal(t, err, identity.CodeWrongIssuer, verify.AzureDevOpsIssuerPrefix+azureDevOpsOrg)
}

// TestAzureDevOpsUnverifiedClaims: a refused token's audit record keeps the
// claims that say whose it is, by their names in the token (org_id, not a
// rule field), and nothing else the presenter chose.
func TestAzureDevOpsUnverifiedClaims(t *testing.T) {
	iss := startIssuer(t, jose.ES256)
	v := mustCompile(t, "azure_devops", azureDevOpsHead(iss.URL)+"allow:\n  - project_name: infra\n", newEnv(iss.Client))
	claims := tokenClaims(t, "azure_devops", "https://issuer.attacker.example", verify.AzureDevOpsAudience)
	claims["note"] = "chosen by the presenter"
	got := v.(verify.UnverifiedClaimer).UnverifiedClaims(iss.Sign(t, claims))
	for name, want := range map[string]string{"org_id": azureDevOpsOrg, "rpo_ref": "refs/heads/main", "sub": "sc://acme/infra/mbot-deploy", "iss": "https://issuer.attacker.example"} {
		if v := got[name]; len(v) != 1 || v[0] != want {
			t.Errorf("unverified claim %s = %v, want %s", name, v, want)
		}
	}
	if _, ok := got["note"]; ok {
		t.Errorf("kept a claim no rule or record asks for: %v", got)
	}
}
