package verify_test

import (
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/identity"
)

// The tenant and subscription of testdata/claims/azure.json.
const (
	azureTenant       = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	azureSubscription = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"
	azureVMID         = "/subscriptions/" + azureSubscription + "/resourcegroups/CI-Runners/providers/Microsoft.Compute/virtualMachines/ci-runner-7"
)

func init() {
	platforms = append(platforms, platform{
		name:     "azure",
		audience: "acme",
		section: func(issuer string) string {
			return azureHead(issuer) + "allow:\n  - subscription: " + azureSubscription + "\n    resource_groups: [ci-runners]\n"
		},
		claims: policy.Claims{
			"subscription":    {azureSubscription},
			"resource_groups": {"ci-runners"},
			"oid":             {"9c3e5a7b-1d2f-4a6c-8e0b-3f5d7a9c1e2b"},
			"tid":             {azureTenant},
			"client_id":       {"2f4b6d8e-0a1c-4e3f-9b5d-7c9e1a3b5d7f"},
			"resource_id":     {azureVMID},
			"identity_id":     {"/subscriptions/" + azureSubscription + "/resourcegroups/Identities/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mbot-ci"},
		},
	})
}

func azureHead(issuer string) string {
	return "tenant_id: " + azureTenant + "\nissuer: " + issuer + "\n"
}

// systemAssigned makes the token one of the virtual machine's own identity:
// xms_mirid names the machine and there is no xms_az_rid.
func systemAssigned(c map[string]any) {
	c["xms_mirid"] = azureVMID
	delete(c, "xms_az_rid")
}

func TestAzureRules(t *testing.T) {
	runSectionRuleCases(t, platformByName(t, "azure"), azureHead, jose.RS256, []ruleCase{
		{
			name:      "subscription and resource group",
			allow:     "  - subscription: " + azureSubscription + "\n    resource_groups: ci-runners\n",
			wantMatch: true,
		},
		{
			name:      "resource group as the portal spells it",
			allow:     "  - subscription: " + azureSubscription + "\n    resource_groups: CI-Runners\n",
			wantMatch: true,
		},
		{
			name:      "resource group in capitals, subscription in capitals",
			allow:     "  - subscription: " + strings.ToUpper(azureSubscription) + "\n    resource_groups: [CI-RUNNERS]\n",
			wantMatch: true,
		},
		{
			name:      "token spells the resource group in capitals",
			allow:     "  - subscription: " + azureSubscription + "\n    resource_groups: ci-runners\n",
			edit:      func(c map[string]any) { c["xms_az_rid"] = strings.ToUpper(azureVMID) },
			wantMatch: true,
		},
		{
			name:      "resource groups by glob, any case",
			allow:     "  - subscription: " + azureSubscription + "\n    resource_groups: CI-*\n",
			wantMatch: true,
		},
		{
			name:      "subscription alone",
			allow:     "  - subscription: " + azureSubscription + "\n",
			wantMatch: true,
		},
		{
			// A user-assigned identity may live in another resource group than
			// the machine it is attached to; rules name the machine's.
			name:         "the identity's resource group is not the machine's",
			allow:        "  - subscription: " + azureSubscription + "\n    resource_groups: identities\n",
			wantInReason: []string{"resource_groups wants identities, token has ci-runners"},
		},
		{
			name:      "system-assigned identity: the machine is in xms_mirid",
			allow:     "  - subscription: " + azureSubscription + "\n    resource_groups: ci-runners\n",
			edit:      systemAssigned,
			wantMatch: true,
		},
		{
			name:  "another subscription",
			allow: "  - subscription: " + azureSubscription + "\n",
			edit: func(c map[string]any) {
				c["xms_az_rid"] = strings.Replace(azureVMID, azureSubscription, "5a1b2c3d-0000-4000-8000-00000000beef", 1)
			},
			wantInReason: []string{"subscription wants " + azureSubscription + ", token has 5a1b2c3d-0000-4000-8000-00000000beef"},
		},
		{
			name:      "one identity by its object id",
			allow:     "  - oid: 9C3E5A7B-1D2F-4A6C-8E0B-3F5D7A9C1E2B\n",
			wantMatch: true,
		},
		{
			name:         "no xms_mirid claim",
			allow:        "  - subscription: " + azureSubscription + "\n",
			edit:         func(c map[string]any) { delete(c, "xms_mirid") },
			wantCode:     identity.CodeClaimMissing,
			wantInReason: []string{`"xms_mirid"`, "Azure managed identity"},
		},
		{
			name:         "no oid claim",
			allow:        "  - subscription: " + azureSubscription + "\n",
			edit:         func(c map[string]any) { delete(c, "oid") },
			wantCode:     identity.CodeClaimMissing,
			wantInReason: []string{`"oid"`},
		},
		{
			name:         "resource id that is not one",
			allow:        "  - subscription: " + azureSubscription + "\n",
			edit:         func(c map[string]any) { c["xms_az_rid"] = "ci-runner-7" },
			wantCode:     identity.CodeProofInvalid,
			wantInReason: []string{`xms_az_rid claim "ci-runner-7" is not an Azure resource id`},
		},
		{
			name:         "token for Azure Resource Manager",
			allow:        "  - subscription: " + azureSubscription + "\n",
			edit:         func(c map[string]any) { c["aud"] = "https://management.azure.com/" },
			wantCode:     identity.CodeWrongAudience,
			wantInReason: []string{`expects audience "acme"`, "https://management.azure.com/"},
		},
	})
}

// TestAzureAudience checks spec.azure.audience: an application ID URI of
// the tenant replaces the authority's audience.
func TestAzureAudience(t *testing.T) {
	const appURI = "api://mbot-acme"
	head := func(issuer string) string { return azureHead(issuer) + "audience: " + appURI + "\n" }
	p := platformByName(t, "azure")
	p.audience = appURI
	runSectionRuleCases(t, p, head, jose.RS256, []ruleCase{
		{name: "the application ID URI", allow: "  - subscription: " + azureSubscription + "\n", wantMatch: true},
		{
			name:         "the authority's audience",
			allow:        "  - subscription: " + azureSubscription + "\n",
			edit:         func(c map[string]any) { c["aud"] = "acme" },
			wantCode:     identity.CodeWrongAudience,
			wantInReason: []string{`expects audience "` + appURI + `"`},
		},
	})
}

// TestAzureDefaultIssuer checks that a join token trusts the v1.0 issuer of
// its tenant, and refuses another tenant's.
func TestAzureDefaultIssuer(t *testing.T) {
	v := mustCompile(t, "azure", "tenant_id: "+strings.ToUpper(azureTenant)+"\nallow:\n  - subscription: "+azureSubscription+"\n", newEnv(nil))
	iss := startIssuer(t, jose.RS256)
	other := "https://sts.windows.net/5a1b2c3d-0000-4000-8000-00000000beef/"
	_, err := v.Verify(t.Context(), iss.Sign(t, tokenClaims(t, "azure", other, "acme")))
	wantRefusal(t, err, identity.CodeWrongIssuer, "https://sts.windows.net/"+azureTenant+"/", other, "spec.azure.issuer")
}

func TestAzureCompile(t *testing.T) {
	runCompileCases(t, "azure", []compileCase{
		{"tenant and subscription", "tenant_id: " + azureTenant + "\nallow:\n  - subscription: " + azureSubscription + "\n    resource_groups: [ci-runners, CI-Runners-EU]\n", ""},
		{"no tenant_id", "allow:\n  - subscription: " + azureSubscription + "\n", "line 8: spec.azure: tenant_id is required"},
		{"tenant by domain name", "tenant_id: acme.onmicrosoft.com\nallow:\n  - subscription: " + azureSubscription + "\n",
			`tenant_id "acme.onmicrosoft.com" is not a directory (tenant) id`},
		{"resource group alone admits the whole tenant", "tenant_id: " + azureTenant + "\nallow:\n  - resource_groups: ci-runners\n",
			"line 10: allow[0] does not pin the owner: any identity of the tenant"},
		{"resource_group in the singular", "tenant_id: " + azureTenant + "\nallow:\n  - subscription: x\n    resource_group: ci-runners\n",
			`unknown field "resource_group"; fields for this method are: subscription, resource_groups, oid`},
	})
}

// TestAzureRulesKeepTheResource checks that lower-casing the rules for
// comparison leaves the join token as written, for mbot get and audits.
func TestAzureRulesKeepTheResource(t *testing.T) {
	res, err := resources.Parse("tokens.yaml", []byte(joinTokenYAML("azure",
		"tenant_id: "+azureTenant+"\nallow:\n  - subscription: "+azureSubscription+"\n    resource_groups: [CI-Runners]\n")))
	if err != nil {
		t.Fatal(err)
	}
	section := res[0].JoinToken.Spec.Section()
	if _, err := verify.Methods["azure"].Compile(tokenName, section, newEnv(nil)); err != nil {
		t.Fatal(err)
	}
	again := res[0].JoinToken.Spec.Section()
	rg := resources.Lookup(resources.Lookup(again, "allow").Content[0], "resource_groups")
	if got := rg.Content[0].Value; got != "CI-Runners" {
		t.Errorf("the stored rule now reads resource_groups: [%s]", got)
	}
}
