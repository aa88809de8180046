package joiners

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// AzureServiceConnectionEnv names the variable holding the id of the
// Azure DevOps service connection whose OIDC token the job asks for;
// unset, the token is the pipeline's own.
const AzureServiceConnectionEnv = "MBOT_AZURE_SERVICE_CONNECTION_ID"

// azureDevOps asks Azure Pipelines' oidctoken API for the job's OIDC token.
type azureDevOps struct{}

func init() { register(azureDevOps{}, priorityAzureDevOps) }

func (azureDevOps) Method() string { return "azure_devops" }

func (azureDevOps) Signals() string { return "TF_BUILD=True" }

// Detect: Azure Pipelines sets TF_BUILD=True in every job.
func (azureDevOps) Detect(env Env) bool { return strings.EqualFold(env("TF_BUILD"), "true") }

// Proof posts to SYSTEM_OIDCREQUESTURI with the job's access token, which a
// pipeline hands to a step only when mapped (env: SYSTEM_ACCESSTOKEN:
// $(System.AccessToken)). Azure DevOps mints the token for Entra ID, so
// audience is not asked for; the join token names it.
func (azureDevOps) Proof(ctx context.Context, env Env, _ string) (string, error) {
	reqURL, accessToken := env("SYSTEM_OIDCREQUESTURI"), env("SYSTEM_ACCESSTOKEN")
	if reqURL == "" {
		return "", errors.New("this Azure Pipelines job has no SYSTEM_OIDCREQUESTURI; run mbot issue in a job of Azure DevOps Services (not Server)")
	}
	if accessToken == "" {
		return "", errors.New("this Azure Pipelines step cannot request an OIDC token: SYSTEM_ACCESSTOKEN is unset. Map it in the step:\n" +
			"  env:\n    SYSTEM_ACCESSTOKEN: $(System.AccessToken)")
	}
	u, err := url.Parse(reqURL)
	if err != nil {
		return "", fmt.Errorf("SYSTEM_OIDCREQUESTURI is not a URL: %w", err)
	}
	q := u.Query()
	q.Set("api-version", "7.1")
	if id := env(AzureServiceConnectionEnv); id != "" {
		q.Set("serviceConnectionId", id)
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader([]byte("{}")))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	return requestIDToken(req, "Azure Pipelines", "oidcToken",
		"; check that the job's access token may use the service connection ("+AzureServiceConnectionEnv+")")
}
