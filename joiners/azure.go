package joiners

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

const (
	// AzureClientIDEnv selects a user-assigned managed identity by its client id.
	AzureClientIDEnv = "MBOT_AZURE_CLIENT_ID"
	// AzureAudienceEnv names the audience to request instead of the
	// authority's: the application ID URI a join token's spec.azure.audience names.
	AzureAudienceEnv = "MBOT_AZURE_AUDIENCE"
	// AzureIMDSEndpointEnv sends the requests for the instance metadata
	// service (http://169.254.169.254) to another host: a proxy, a test.
	AzureIMDSEndpointEnv = "MBOT_AZURE_IMDS_ENDPOINT"
)

// azureIMDSHost is the instance metadata service's address, fixed in azidentity.
const azureIMDSHost = "169.254.169.254"

// azureTokenTimeout bounds the token request: IMDS asks callers to retry for
// up to 70 seconds while a newly assigned identity is set up.
var azureTokenTimeout = 90 * time.Second

// azureAssetTagPath holds the DMI chassis asset tag, which is the same
// well-known value on every Azure virtual machine.
var azureAssetTagPath = "/sys/class/dmi/id/chassis_asset_tag"

const azureAssetTag = "7783-7084-3265-9085-8269-3286-77"

// azure gets an access token of the machine's managed identity for the
// authority's audience, through azidentity: from IMDS on virtual machines
// and scale sets, from IDENTITY_ENDPOINT on App Service, Functions and
// Container Apps, from MSI_ENDPOINT in Cloud Shell, and from Azure Arc.
type azure struct{}

func init() { register(azure{}, priorityAzure) }

func (azure) Method() string { return "azure" }

// azureSignals are set where a managed identity endpoint other than IMDS
// serves the job, or by the user. AZURE_CLIENT_ID is not one: it names a
// service principal or an AKS workload identity as often as a managed one.
var azureSignals = []string{"IDENTITY_ENDPOINT", "MSI_ENDPOINT", AzureClientIDEnv, AzureIMDSEndpointEnv}

func (azure) Signals() string {
	return strings.Join(azureSignals, ", ") + " or an Azure virtual machine"
}

// Detect looks at variables and at the DMI asset tag (one file read); it
// does not ask IMDS, which off Azure waits for a connection timeout.
func (azure) Detect(env Env) bool {
	for _, name := range azureSignals {
		if env(name) != "" {
			return true
		}
	}
	tag, err := os.ReadFile(azureAssetTagPath)
	return err == nil && strings.TrimSpace(string(tag)) == azureAssetTag
}

func (azure) Proof(ctx context.Context, env Env, audience string) (string, error) {
	if a := env(AzureAudienceEnv); a != "" {
		audience = a
	}
	if audience == "" {
		return "", errors.New("the authority announced no audience to request the Azure managed identity token for")
	}
	opts := &azidentity.ManagedIdentityCredentialOptions{}
	if id := env(AzureClientIDEnv); id != "" {
		opts.ID = azidentity.ClientID(id)
	}
	imds := imdsPolicy{}
	if raw := env(AzureIMDSEndpointEnv); raw != "" {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return "", fmt.Errorf("%s=%q is not an http(s) URL", AzureIMDSEndpointEnv, raw)
		}
		imds.to = u
	}
	opts.ClientOptions = azcore.ClientOptions{PerCallPolicies: []policy.Policy{imds}}
	// azidentity reads IDENTITY_ENDPOINT, IDENTITY_HEADER, MSI_ENDPOINT and
	// IMDS_ENDPOINT from the process environment to pick the endpoint.
	cred, err := azidentity.NewManagedIdentityCredential(opts)
	if err != nil {
		return "", fmt.Errorf("setting up the Azure managed identity: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, azureTokenTimeout)
	defer cancel()
	// Managed identity endpoints take a resource; azidentity makes it of the
	// scope by cutting /.default, so the token's aud is audience as it is.
	tok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{audience + "/.default"}})
	if err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("the Azure managed identity endpoint did not answer within %s; run on an Azure resource with a managed identity", azureTokenTimeout)
		}
		return "", fmt.Errorf("getting a managed identity token for audience %q (the application ID URI of an app registration in the tenant; "+
			"set %s to choose another, %s for a user-assigned identity): %w", audience, AzureAudienceEnv, AzureClientIDEnv, err)
	}
	return tok.Token, nil
}

// imdsPolicy asks IMDS for a token fresh from Entra ID rather than the one
// it cached (the documented bypass_cache parameter): a token is accepted
// once, and IMDS would hand out the same one for hours. With to set, it
// also sends the requests for IMDS there.
type imdsPolicy struct{ to *url.URL }

func (p imdsPolicy) Do(req *policy.Request) (*http.Response, error) {
	raw := req.Raw()
	if raw.URL.Host == azureIMDSHost && raw.URL.Path == "/metadata/identity/oauth2/token" {
		q := raw.URL.Query()
		q.Set("bypass_cache", "true")
		raw.URL.RawQuery = q.Encode()
		if p.to != nil {
			raw.URL.Scheme, raw.URL.Host = p.to.Scheme, p.to.Host
			raw.Host = ""
		}
	}
	return req.Next()
}
