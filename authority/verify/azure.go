package verify

import (
	"errors"
	"fmt"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/internal/lazyregexp"
)

// azureClaims are the claims of a managed identity's access token, as
// documented in "Access token claims reference".
type azureClaims struct {
	Sub      string `json:"sub"`
	OID      string `json:"oid"`
	TID      string `json:"tid"`
	AppID    string `json:"appid"`
	MIRID    string `json:"xms_mirid"`
	AzureRID string `json:"xms_az_rid"`
}

// azureTenant is a directory (tenant) id: a GUID.
var azureTenant = lazyregexp.New(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

func init() {
	register(&oidcPlatform{
		name:          "azure",
		label:         "Azure managed identity",
		sectionFields: []string{"tenant_id", "audience"},
		ruleFields:    []string{"subscription", "resource_groups", "oid"},
		// Azure compares subscription ids and resource group names without case,
		// and tokens spell resource groups as they were created.
		foldCaseFields: []string{"subscription", "resource_groups", "oid"},
		// Any identity of the tenant can get a token for the authority's audience.
		scope: &policy.OwnerScope{
			Issuer: "any identity of the tenant can get a token for the authority's audience",
			Fields: []policy.OwnerField{
				{Name: "subscription", Shape: "a subscription id, no globs", Example: "<your subscription id>"},
				{Name: "oid", Shape: "the managed identity's object id, no globs"},
			},
		},
		issuer: func(s *oidcSection) (string, error) {
			if s.TenantID == "" {
				return "", errors.New("tenant_id is required: the directory (tenant) id of your Microsoft Entra ID, such as 72f988bf-86f1-41af-91ab-2d7cd011db47")
			}
			if !azureTenant.MatchString(s.TenantID) {
				return "", fmt.Errorf("tenant_id %q is not a directory (tenant) id: a GUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47", s.TenantID)
			}
			if s.Issuer != "" {
				return s.Issuer, nil
			}
			// Managed identities get v1.0 access tokens unless the resource's
			// app registration asks for v2.0 (issuer
			// https://login.microsoftonline.com/<tenant>/v2.0, set it as issuer:).
			return "https://sts.windows.net/" + strings.ToLower(s.TenantID) + "/", nil
		},
		// The authority's audience, or the application ID URI of an app
		// registration in the tenant (Entra ID only issues tokens for those).
		audience: func(s *oidcSection, env *Env) string {
			if s.Audience != "" {
				return s.Audience
			}
			return env.Audience
		},
		claims: azureIdentity,
	})
}

// azureIdentity reads the subscription and resource group of the resource
// the identity is attached to. xms_az_rid names that resource when the
// identity is user-assigned (xms_mirid is then the identity's own id);
// with a system-assigned identity only xms_mirid is sent, and names it.
func azureIdentity(tok *oidc.IDToken) (policy.Claims, error) {
	var c azureClaims
	if err := tok.Claims(&c); err != nil {
		return nil, err
	}
	if err := requireJWTClaims("oid", c.OID, "tid", c.TID, "xms_mirid", c.MIRID); err != nil {
		return nil, err
	}
	claim, rid := "xms_mirid", c.MIRID
	if c.AzureRID != "" {
		claim, rid = "xms_az_rid", c.AzureRID
	}
	sub, rg, ok := parseAzureResourceID(rid)
	if !ok {
		return nil, fmt.Errorf("the token's %s claim %q is not an Azure resource id (/subscriptions/<id>/resourceGroups/<name>/providers/...)", claim, rid)
	}
	out := policy.Claims{
		"subscription":    {sub},
		"resource_groups": {rg},
		"oid":             {strings.ToLower(c.OID)},
		"tid":             {strings.ToLower(c.TID)},
		"resource_id":     {rid},
	}
	if c.AzureRID != "" {
		out["identity_id"] = []string{c.MIRID}
	}
	if c.AppID != "" {
		out["client_id"] = []string{strings.ToLower(c.AppID)}
	}
	return out, nil
}

// parseAzureResourceID reads the subscription and resource group of a
// resource id, lower-cased: Azure compares both without case.
func parseAzureResourceID(id string) (subscription, resourceGroup string, ok bool) {
	parts := strings.Split(id, "/")
	if len(parts) < 5 || parts[0] != "" || !strings.EqualFold(parts[1], "subscriptions") || !strings.EqualFold(parts[3], "resourceGroups") ||
		parts[2] == "" || parts[4] == "" {
		return "", "", false
	}
	return strings.ToLower(parts[2]), strings.ToLower(parts[4]), true
}
