//go:build linux

package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/internal/testservers"
)

// realKubeTokensYAML are join tokens of the kubernetes method trusting a
// real kube-apiserver: by its keys (static_jwks, %[3]s, issuer %[2]s),
// and by a TokenReview the authority sends it (in_cluster: API server
// %[4]s, its CA file %[5]s, the authority's own token file %[6]s); one
// more whose rule admits another namespace; and by discovery (oidc:
// issuer %[2]s, trusted through SSL_CERT_FILE). %[1]s is the bot.
const realKubeTokensYAML = `
---
kind: join_token
version: v1
metadata: {name: kube-real-jwks}
spec:
  bot: %[1]s
  method: kubernetes
  kubernetes:
    type: static_jwks
    static_jwks: '%[3]s'
    issuer: %[2]s
    allow:
      - service_account: ci:deployer
---
kind: join_token
version: v1
metadata: {name: kube-real-oidc}
spec:
  bot: %[1]s
  method: kubernetes
  kubernetes:
    type: oidc
    issuer: %[2]s
    allow:
      - service_account: ci:deployer
---
kind: join_token
version: v1
metadata: {name: kube-real-review}
spec:
  bot: %[1]s
  method: kubernetes
  kubernetes:
    type: in_cluster
    api_server: %[4]s
    ca_file: %[5]s
    token_file: %[6]s
    allow:
      - service_account: ci:deployer
---
kind: join_token
version: v1
metadata: {name: kube-real-prod}
spec:
  bot: %[1]s
  method: kubernetes
  kubernetes:
    type: in_cluster
    api_server: %[4]s
    ca_file: %[5]s
    token_file: %[6]s
    allow:
      - service_account: prod:*
`

// kubeJoinSetup is what the API server holds for the join tests: a pod
// runner of service account ci:deployer (never scheduled: its object is
// what projected tokens are bound to), and an authority service account
// allowed to create TokenReviews (system:auth-delegator).
const kubeJoinSetup = `apiVersion: v1
kind: Namespace
metadata: {name: ci}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: deployer, namespace: ci}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: mbot-authority, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: mbot-authority-tokenreview}
subjects:
- {kind: ServiceAccount, name: mbot-authority, namespace: default}
roleRef: {kind: ClusterRole, name: "system:auth-delegator", apiGroup: rbac.authorization.k8s.io}
---
# What a cluster whose issuer an OIDC relying party trusts does: the
# discovery document and keys are public.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: service-account-issuer-discovery-public}
subjects:
- {kind: Group, name: "system:unauthenticated", apiGroup: rbac.authorization.k8s.io}
roleRef: {kind: ClusterRole, name: "system:service-account-issuer-discovery", apiGroup: rbac.authorization.k8s.io}
---
apiVersion: v1
kind: Pod
metadata: {name: runner, namespace: ci}
spec:
  serviceAccountName: deployer
  containers:
  - {name: job, image: registry.invalid/ci:1}
`

// TestIssueKubernetesReal joins with projected service account tokens that
// a real kube-apiserver issued (kubectl create token, bound to a pod, with
// the cluster's audience), verified by the cluster's JWKS (static_jwks),
// by its discovery document and keys (oidc) and by the API server's own
// TokenReview (in_cluster); a token used
// twice, of another audience, of a service account no rule admits, or of
// a pod deleted since (which the API server no longer authenticates) is
// refused.
func TestIssueKubernetesReal(t *testing.T) {
	var k *testservers.KubeAPIServer
	// The authority trusts the API server's serving CA for discovery
	// (oidc); the file is written once the server has started.
	roots := filepath.Join(t.TempDir(), "roots.pem")
	c, _ := startClusterEnv(t, []string{"SSL_CERT_FILE=" + roots}, func(c *cluster) string {
		k = testservers.StartKubeAPIServer(t, testservers.KubeConfig{})
		writeFile(t, roots, string(k.CAPEM), 0o644)
		k.Admin(t, kubeJoinSetup, "apply", "-f", "-")
		jwks := strings.TrimSpace(k.Admin(t, "", "get", "--raw", "/openid/v1/jwks"))
		tokenFile := filepath.Join(t.TempDir(), "authority-token")
		writeFile(t, tokenFile, strings.TrimSpace(k.Admin(t, "", "create", "token", "mbot-authority", "--namespace", "default")), 0o600)
		return defaultResources(c) + fmt.Sprintf(realKubeTokensYAML, botName, k.ServiceAccountIssuer, jwks, k.URL, k.CAFile, tokenFile)
	})
	uid := strings.TrimSpace(k.Admin(t, "", "get", "pod", "runner", "--namespace", "ci", "-o", "jsonpath={.metadata.uid}"))
	// podEnv is the pod runner with a fresh projected token for audience.
	podEnv := func(t *testing.T, audience string) []string {
		t.Helper()
		tok := strings.TrimSpace(k.Admin(t, "", "create", "token", "deployer", "--namespace", "ci", "--audience", audience, "--duration", "10m",
			"--bound-object-kind", "Pod", "--bound-object-name", "runner", "--bound-object-uid", uid))
		file := filepath.Join(t.TempDir(), "token")
		writeFile(t, file, tok+"\n", 0o600)
		return c.jobEnv(map[string]string{
			"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443", "MBOT_KUBERNETES_TOKEN_PATH": file,
		})
	}

	t.Run("static_jwks", func(t *testing.T) {
		wantJoined(t, c, podEnv(t, clusterName), "kube-real-jwks", "kubernetes")
	})
	t.Run("oidc", func(t *testing.T) {
		wantJoined(t, c, podEnv(t, clusterName), "kube-real-oidc", "kubernetes")
	})
	t.Run("in_cluster", func(t *testing.T) {
		wantJoined(t, c, podEnv(t, clusterName), "kube-real-review", "kubernetes")
	})
	t.Run("in_cluster replay", func(t *testing.T) {
		env := podEnv(t, clusterName)
		wantJoined(t, c, env, "kube-real-review", "kubernetes")
		wantRefused(t, c, env, "kube-real-review", "proof_replayed")
	})
	t.Run("in_cluster rule mismatch", func(t *testing.T) {
		wantRefused(t, c, podEnv(t, clusterName), "kube-real-prod", "rule_mismatch", "ci:deployer")
	})
	t.Run("other audience", func(t *testing.T) {
		// mbot reads the token's audience before sending it anywhere.
		wantRefused(t, c, podEnv(t, "https://vault.acme.internal"), "kube-real-review", `is for audience https://vault.acme.internal, not the authority's "`+clusterName+`"`)
	})
	t.Run("in_cluster deleted pod", func(t *testing.T) {
		env := podEnv(t, clusterName)
		k.Admin(t, "", "delete", "pod", "runner", "--namespace", "ci", "--wait=false", "--grace-period=0", "--force")
		wantRefused(t, c, env, "kube-real-review", "proof_invalid", "did not authenticate the token")
	})
}
