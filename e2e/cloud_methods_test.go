package e2e

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/internal/simci"
)

// cloudTokensYAML are join tokens of the gcp, azure and kubernetes methods
// trusting the simulated issuer %[2]s: for each, one whose rules admit the
// job of this file and one whose rules do not.
const cloudTokensYAML = `kind: join_token
version: v1
metadata: {name: gcp-e2e}
spec:
  bot: %[1]s
  method: gcp
  gcp:
    issuer: %[2]s
    allow:
      - project_ids: acme-ci
        locations: us-central1
---
kind: join_token
version: v1
metadata: {name: gcp-e2e-europe}
spec:
  bot: %[1]s
  method: gcp
  gcp:
    issuer: %[2]s
    allow:
      - project_ids: acme-ci
        locations: europe-west4
---
kind: join_token
version: v1
metadata: {name: azure-e2e}
spec:
  bot: %[1]s
  method: azure
  azure:
    tenant_id: %[3]s
    issuer: %[2]s
    allow:
      - subscription: %[4]s
        resource_groups: [ci-runners]
---
kind: join_token
version: v1
metadata: {name: azure-e2e-prod}
spec:
  bot: %[1]s
  method: azure
  azure:
    tenant_id: %[3]s
    issuer: %[2]s
    allow:
      - subscription: %[4]s
        resource_groups: [Prod-Runners]
---
kind: join_token
version: v1
metadata: {name: kubernetes-e2e}
spec:
  bot: %[1]s
  method: kubernetes
  kubernetes:
    type: static_jwks
    static_jwks: '%[5]s'
    issuer: %[2]s
    allow:
      - service_account: ci:deployer
---
kind: join_token
version: v1
metadata: {name: kubernetes-e2e-oidc}
spec:
  bot: %[1]s
  method: kubernetes
  kubernetes:
    type: oidc
    issuer: %[2]s
    allow:
      - service_account: ci:*
---
kind: join_token
version: v1
metadata: {name: kubernetes-e2e-prod}
spec:
  bot: %[1]s
  method: kubernetes
  kubernetes:
    type: static_jwks
    static_jwks: '%[5]s'
    issuer: %[2]s
    allow:
      - service_account: prod:*
`

// startCloudCluster is startCluster with the join tokens of cloudTokensYAML applied.
func startCloudCluster(t *testing.T) *cluster {
	t.Helper()
	c := startCluster(t)
	applyCloudTokens(t, c)
	return c
}

// applyCloudTokens applies cloudTokensYAML to the running authority of c.
func applyCloudTokens(t *testing.T, c *cluster) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "cloud.yaml")
	writeFile(t, file, fmt.Sprintf(cloudTokensYAML, botName, c.ci.URL, simci.AzureTenantID, simci.AzureSubscriptionID, c.ci.JWKS()), 0o600)
	mustMbot(t, baseEnv(c.home), "apply", "--config", c.config, "-f", file)
	time.Sleep(300 * time.Millisecond) // the running authority looks for changes every 250ms
}

// wantJoined runs mbot issue in env for token and checks that it joined by
// method, detected, and wrote the identity.
func wantJoined(t *testing.T, c *cluster, env []string, token, method string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "mbot")
	res := c.issue(t, env, token, out)
	if res.code != 0 {
		t.Fatalf("mbot issue: %s", res)
	}
	if want := "mbot: " + method + " join as bot"; !strings.Contains(res.stderr, want) {
		t.Errorf("stderr does not say %q:\n%s", want, res.stderr)
	}
	checkIdentity(t, c, out, token, method)
}

// TestIssueGCP joins from a GCE instance: GCE_METADATA_HOST points at the
// metadata server stand-in, which checks the Metadata-Flavor header and
// mints for the audience mbot asks.
func TestIssueGCP(t *testing.T) {
	c := startCloudCluster(t)
	m, err := simci.StartGCEMetadata(c.ci, simci.GCPClaims())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	env := c.jobEnv(map[string]string{"GCE_METADATA_HOST": m.Host})

	t.Run("detected", func(t *testing.T) {
		wantJoined(t, c, env, "gcp-e2e", "gcp")
		if got := m.Audiences(); !slices.Equal(got, []string{clusterName}) {
			t.Errorf("the metadata server was asked for audiences %q, want [%q]", got, clusterName)
		}
	})
	t.Run("rule-mismatch", func(t *testing.T) {
		wantRefused(t, c, env, "gcp-e2e-europe", "rule_mismatch", "does not match locations (token has us-central1-a,us-central1)")
	})
	t.Run("gke-workload-identity-has-no-zone", func(t *testing.T) {
		claims := simci.GCPClaims()
		delete(claims, "google")
		gke, err := simci.StartGCEMetadata(c.ci, claims)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { gke.Close() })
		wantRefused(t, c, c.jobEnv(map[string]string{"GCE_METADATA_HOST": gke.Host}), "gcp-e2e", "rule_mismatch", "does not match locations (token has (absent))")
	})
}

// TestIssueAzure joins from a virtual machine with a user-assigned managed
// identity: MBOT_AZURE_IMDS_ENDPOINT points at the IMDS stand-in, which
// checks the Metadata header, the resource and the client id.
func TestIssueAzure(t *testing.T) {
	c := startCloudCluster(t)
	imds, err := simci.StartAzureIMDS(c.ci, simci.AzureClaims())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { imds.Close() })
	vars := map[string]string{"MBOT_AZURE_IMDS_ENDPOINT": imds.URL, "MBOT_AZURE_CLIENT_ID": simci.AzureClientID}

	t.Run("detected", func(t *testing.T) {
		wantJoined(t, c, c.jobEnv(vars), "azure-e2e", "azure")
		want := []simci.AzureTokenRequest{{Endpoint: "imds", Resource: clusterName, ClientID: simci.AzureClientID, BypassCache: true}}
		if got := imds.Requests(); !slices.Equal(got, want) {
			t.Errorf("IMDS was asked %+v, want %+v", got, want)
		}
	})
	t.Run("again-on-the-same-machine", func(t *testing.T) {
		// IMDS would hand out its cached token, which joined already.
		wantJoined(t, c, c.jobEnv(vars), "azure-e2e", "azure")
	})
	t.Run("resource-group-mismatch", func(t *testing.T) {
		// Prod-Runners is compared as prod-runners, the token's CI-Runners as ci-runners.
		wantRefused(t, c, c.jobEnv(vars), "azure-e2e-prod", "rule_mismatch", "does not match resource_groups (token has ci-runners)")
	})
	t.Run("wrong-audience", func(t *testing.T) {
		other := maps.Clone(vars)
		other["MBOT_AZURE_AUDIENCE"] = "https://management.azure.com/"
		wantRefused(t, c, c.jobEnv(other), "azure-e2e", "wrong_audience", `expects audience "`+clusterName+`"`)
	})
}

// TestIssueKubernetes joins from a pod with a projected service account
// token, verified against the cluster's keys (static_jwks) and by discovery.
func TestIssueKubernetes(t *testing.T) {
	c := startCloudCluster(t)
	// podEnv is a pod whose projected token carries the usual claims changed by override.
	podEnv := func(t *testing.T, override map[string]any) []string {
		file := filepath.Join(t.TempDir(), "mbot")
		writeFile(t, file, mint(t, c, simci.KubernetesClaims(), clusterName, override)+"\n", 0o600)
		return c.jobEnv(map[string]string{
			"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", "MBOT_KUBERNETES_TOKEN_PATH": file,
		})
	}

	t.Run("static_jwks", func(t *testing.T) {
		wantJoined(t, c, podEnv(t, nil), "kubernetes-e2e", "kubernetes")
	})
	t.Run("oidc", func(t *testing.T) {
		wantJoined(t, c, podEnv(t, nil), "kubernetes-e2e-oidc", "kubernetes")
	})
	t.Run("rule-mismatch", func(t *testing.T) {
		wantRefused(t, c, podEnv(t, nil), "kubernetes-e2e-prod", "rule_mismatch", "does not match service_account (token has ci:deployer)")
	})
	t.Run("not-pod-bound", func(t *testing.T) {
		claims := simci.KubernetesClaims()["kubernetes.io"].(map[string]any)
		delete(claims, "pod")
		wantRefused(t, c, podEnv(t, map[string]any{"kubernetes.io": claims}), "kubernetes-e2e", "proof_invalid", "not bound to a pod")
	})
	t.Run("long-lived", func(t *testing.T) {
		now := time.Now()
		env := podEnv(t, map[string]any{"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(365 * 24 * time.Hour).Unix()})
		wantRefused(t, c, env, "kubernetes-e2e", "proof_invalid", "expirationSeconds")
	})
	t.Run("replay", func(t *testing.T) {
		// The kubelet rewrites the token only at 80% of its lifetime; until
		// then the same token is accepted once.
		env := podEnv(t, nil)
		wantJoined(t, c, env, "kubernetes-e2e", "kubernetes")
		wantRefused(t, c, env, "kubernetes-e2e", "proof_replayed")
	})
}
