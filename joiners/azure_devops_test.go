package joiners_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// azureDevOpsEnv is an Azure Pipelines step that maps System.AccessToken.
func azureDevOpsEnv(reqURL string) map[string]string {
	return map[string]string{
		"TF_BUILD":              "True",
		"SYSTEM_TEAMPROJECT":    "infra",
		"SYSTEM_OIDCREQUESTURI": reqURL,
		"SYSTEM_ACCESSTOKEN":    "access-token",
	}
}

// startOIDCTokenAPI answers like Azure DevOps' "Oidctoken - Create": POST,
// bearer access token, api-version, an optional serviceConnectionId.
func startOIDCTokenAPI(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Header.Get("Authorization") != "Bearer access-token" {
			http.Error(w, `{"message":"TF400813"}`, http.StatusUnauthorized)
			return
		}
		if r.URL.Query().Get("api-version") != "7.1" || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, `{"message":"bad request"}`, http.StatusBadRequest)
			return
		}
		sub := "p://acme/infra/deploy"
		if id := r.URL.Query().Get("serviceConnectionId"); id != "" {
			sub = "sc://acme/infra/" + id
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"oidcToken": "jwt-" + sub})
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestAzureDevOpsDetect(t *testing.T) {
	runDetectCases(t, []detectCase{
		{"Azure Pipelines", azureDevOpsEnv("https://dev.azure.com/acme/x/oidctoken"), "azure_devops"},
		{"Azure Pipelines on an agent with AWS credentials", merge(azureDevOpsEnv(""), awsEnv), "azure_devops"},
	})
}

func TestAzureDevOpsProof(t *testing.T) {
	srv := startOIDCTokenAPI(t)
	env := azureDevOpsEnv(srv.URL + "/acme/infra/_apis/distributedtask/hubs/build/plans/p/jobs/j/oidctoken")
	got, err := proof(t, "azure_devops", env, "acme")
	if err != nil || got != "jwt-p://acme/infra/deploy" {
		t.Errorf("the pipeline's token: %q, %v", got, err)
	}
	env["MBOT_AZURE_SERVICE_CONNECTION_ID"] = "mbot-deploy"
	if got, err := proof(t, "azure_devops", env, "acme"); err != nil || got != "jwt-sc://acme/infra/mbot-deploy" {
		t.Errorf("the service connection's token: %q, %v", got, err)
	}
	env["SYSTEM_ACCESSTOKEN"] = ""
	if _, err := proof(t, "azure_devops", env, "acme"); err == nil || !strings.Contains(err.Error(), "SYSTEM_ACCESSTOKEN: $(System.AccessToken)") {
		t.Errorf("no access token: error %v, want the mapping to add", err)
	}
	env["SYSTEM_ACCESSTOKEN"] = "stale"
	if _, err := proof(t, "azure_devops", env, "acme"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("a refused access token: error %v, want the 401", err)
	}
}
