package joiners_test

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/internal/simci"
	"github.com/mbot-dev/mbot/joiners"
)

func TestAzureDetect(t *testing.T) {
	for _, signal := range []struct{ name, value string }{
		{"IDENTITY_ENDPOINT", "http://localhost:42356/msi/token"},
		{"MSI_ENDPOINT", "http://localhost:50342/oauth2/token"},
		{"MBOT_AZURE_CLIENT_ID", simci.AzureClientID},
		{"MBOT_AZURE_IMDS_ENDPOINT", "http://127.0.0.1:8080"},
	} {
		t.Run(signal.name, func(t *testing.T) {
			j, err := joiners.Detect(envOf(map[string]string{signal.name: signal.value}))
			if err != nil || j.Method() != "azure" {
				t.Fatalf("Detect with %s set: %v, %v; want azure", signal.name, j, err)
			}
		})
	}
	t.Run("Azure virtual machine", func(t *testing.T) {
		defer joiners.SetAzureAssetTagPath(dmiFile(t, "7783-7084-3265-9085-8269-3286-77"))()
		j, err := joiners.Detect(envOf(nil))
		if err != nil || j.Method() != "azure" {
			t.Fatalf("Detect on an Azure VM: %v, %v; want azure", j, err)
		}
	})
	t.Run("Hyper-V virtual machine elsewhere", func(t *testing.T) {
		defer joiners.SetAzureAssetTagPath(dmiFile(t, "0000-0000-0000-0000-0000-0000-00"))()
		if j, err := joiners.Detect(envOf(nil)); err == nil {
			t.Errorf("Detect picked %s", j.Method())
		}
	})
	t.Run("AZURE_CLIENT_ID alone is a service principal", func(t *testing.T) {
		_, err := joiners.Detect(envOf(map[string]string{"AZURE_CLIENT_ID": simci.AzureClientID, "AZURE_TENANT_ID": simci.AzureTenantID}))
		if err == nil || !strings.Contains(strings.Join(joiners.DetectionSignals(), ", "), "azure (IDENTITY_ENDPOINT, MSI_ENDPOINT, MBOT_AZURE_CLIENT_ID") {
			t.Errorf("Detect: %v; want an error naming what azure looks for", err)
		}
	})
	t.Run("GitLab runner on an Azure VM", func(t *testing.T) {
		defer joiners.SetAzureAssetTagPath(dmiFile(t, "7783-7084-3265-9085-8269-3286-77"))()
		j, err := joiners.Detect(envOf(gitlabEnv))
		if err != nil || j.Method() != "gitlab" {
			t.Errorf("Detect: %v, %v; want gitlab", j, err)
		}
	})
}

// azureIMDS starts the managed identity stand-in with an issuer, and
// clears the variables azidentity reads from the process environment.
func azureIMDS(t *testing.T) *simci.AzureIMDS {
	t.Helper()
	for _, name := range []string{"IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT"} {
		t.Setenv(name, "")
	}
	iss, err := simci.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { iss.Close() })
	a, err := simci.StartAzureIMDS(iss, simci.AzureClaims())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// IMDS is asked to bypass its token cache (each token joins once).
// azidentity keeps tokens for the process's lifetime, per identity and
// resource; each case asks for an audience of its own so that every case
// reaches the stand-in.
func TestAzureProof(t *testing.T) {
	for _, tc := range []struct {
		name     string
		env      func(a *simci.AzureIMDS) map[string]string
		audience string
		want     simci.AzureTokenRequest
	}{
		{
			name: "IMDS, user-assigned identity",
			env: func(a *simci.AzureIMDS) map[string]string {
				return map[string]string{"MBOT_AZURE_IMDS_ENDPOINT": a.URL, "MBOT_AZURE_CLIENT_ID": simci.AzureClientID}
			},
			audience: "api://mbot-acme",
			want:     simci.AzureTokenRequest{Endpoint: "imds", Resource: "api://mbot-acme", ClientID: simci.AzureClientID, BypassCache: true},
		},
		{
			name: "IMDS, system-assigned identity",
			env: func(a *simci.AzureIMDS) map[string]string {
				a.SetSystemAssigned(simci.AzureClaims())
				return map[string]string{"MBOT_AZURE_IMDS_ENDPOINT": a.URL}
			},
			audience: "api://mbot-acme/system",
			want:     simci.AzureTokenRequest{Endpoint: "imds", Resource: "api://mbot-acme/system", BypassCache: true},
		},
		{
			name: "MBOT_AZURE_AUDIENCE names the join token's audience",
			env: func(a *simci.AzureIMDS) map[string]string {
				return map[string]string{"MBOT_AZURE_IMDS_ENDPOINT": a.URL, "MBOT_AZURE_CLIENT_ID": simci.AzureClientID,
					"MBOT_AZURE_AUDIENCE": "api://2f4b6d8e-app"}
			},
			audience: "acme",
			want:     simci.AzureTokenRequest{Endpoint: "imds", Resource: "api://2f4b6d8e-app", ClientID: simci.AzureClientID, BypassCache: true},
		},
		{
			name: "App Service, user-assigned identity",
			env: func(a *simci.AzureIMDS) map[string]string {
				return merge(a.AppServiceEnv(), map[string]string{"MBOT_AZURE_CLIENT_ID": simci.AzureClientID})
			},
			audience: "api://mbot-acme/app-service",
			want:     simci.AzureTokenRequest{Endpoint: "app_service", Resource: "api://mbot-acme/app-service", ClientID: simci.AzureClientID},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := azureIMDS(t)
			env := tc.env(a)
			for k, v := range env {
				t.Setenv(k, v) // azidentity reads IDENTITY_ENDPOINT and IDENTITY_HEADER itself
			}
			tok, err := proof(t, "azure", env, tc.audience)
			if err != nil {
				t.Fatalf("azure Proof: %v", err)
			}
			if got := jwtClaims(t, tok)["aud"]; got != tc.want.Resource {
				t.Errorf("aud %v, want %q", got, tc.want.Resource)
			}
			if got := a.Requests(); !reflect.DeepEqual(got, []simci.AzureTokenRequest{tc.want}) {
				t.Errorf("the endpoint was asked %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestAzureProofRefused(t *testing.T) {
	t.Run("identity not attached", func(t *testing.T) {
		a := azureIMDS(t)
		_, err := proof(t, "azure", map[string]string{"MBOT_AZURE_IMDS_ENDPOINT": a.URL, "MBOT_AZURE_CLIENT_ID": "00000000-0000-4000-8000-00000000dead"}, "api://mbot-acme/refused")
		if err == nil || !strings.Contains(err.Error(), "isn't assigned") || !strings.Contains(err.Error(), "MBOT_AZURE_CLIENT_ID") {
			t.Errorf("err = %v, want one saying the identity is not assigned", err)
		}
	})
	t.Run("App Service secret wrong", func(t *testing.T) {
		a := azureIMDS(t)
		env := a.AppServiceEnv()
		env["IDENTITY_HEADER"] = "not-the-secret"
		for k, v := range env {
			t.Setenv(k, v)
		}
		_, err := proof(t, "azure", env, "api://mbot-acme/wrong-header")
		if err == nil || !strings.Contains(err.Error(), "401") {
			t.Errorf("err = %v, want the endpoint's 401", err)
		}
	})
	t.Run("endpoint not a URL", func(t *testing.T) {
		azureIMDS(t)
		_, err := proof(t, "azure", map[string]string{"MBOT_AZURE_IMDS_ENDPOINT": "169.254.169.254"}, "acme")
		if err == nil || !strings.Contains(err.Error(), "MBOT_AZURE_IMDS_ENDPOINT") {
			t.Errorf("err = %v, want one naming MBOT_AZURE_IMDS_ENDPOINT", err)
		}
	})
	t.Run("no audience", func(t *testing.T) {
		a := azureIMDS(t)
		j, _ := joiners.ByMethod("azure")
		if _, err := j.Proof(context.Background(), envOf(map[string]string{"MBOT_AZURE_IMDS_ENDPOINT": a.URL}), ""); err == nil {
			t.Error("asked for a token of no audience")
		}
		if n := len(a.Requests()); n != 0 {
			t.Errorf("%d requests reached the endpoint", n)
		}
	})
}
