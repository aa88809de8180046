//go:build linux

package testservers

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// TestKubeAPIServer proves the harness serves what the kubernetes output
// and join method need: kubectl with a client certificate from the caller's
// CA is the user its CN names in the groups its O names (auth whoami),
// RBAC bindings to such a group are honoured (auth can-i), a certificate
// from another CA is refused, and service account tokens are issued by the
// configured issuer.
func TestKubeAPIServer(t *testing.T) {
	t.Parallel()
	clientCA := NewCA(t, "test kubernetes client CA")
	otherCA := NewCA(t, "test other CA")
	k := StartKubeAPIServer(t, KubeConfig{ClientCA: clientCA.CertPEM})

	cert, key := clientCA.Issue(t, Leaf{CommonName: "ci-deployer", Organization: []string{"deployers", "ci"}})
	user := k.Kubeconfig(t, "ci-deployer", cert, key)

	t.Run("whoami", func(t *testing.T) {
		out, err := k.Kubectl(t, user, "auth", "whoami", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var review struct {
			Status struct {
				UserInfo struct {
					Username string   `json:"username"`
					Groups   []string `json:"groups"`
				} `json:"userInfo"`
			} `json:"status"`
		}
		if err := json.Unmarshal([]byte(out), &review); err != nil {
			t.Fatalf("auth whoami -o json: %v\n%s", err, out)
		}
		got := review.Status.UserInfo
		if got.Username != "ci-deployer" {
			t.Errorf("username = %q, want ci-deployer", got.Username)
		}
		for _, g := range []string{"deployers", "ci", "system:authenticated"} {
			if !slices.Contains(got.Groups, g) {
				t.Errorf("groups = %v, want %s among them", got.Groups, g)
			}
		}
	})

	canI := func(t *testing.T, verb string) string {
		t.Helper()
		out, err := k.Kubectl(t, user, "auth", "can-i", verb, "pods", "--namespace", "default")
		if err != nil && strings.TrimSpace(out) != "no" {
			t.Fatalf("auth can-i %s pods: %v", verb, err)
		}
		return strings.TrimSpace(out)
	}
	t.Run("rbac binding to a group", func(t *testing.T) {
		if got := canI(t, "list"); got != "no" {
			t.Fatalf("before the binding, can-i list pods = %q, want no", got)
		}
		k.Admin(t, `apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader, namespace: default}
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: deployers-read-pods, namespace: default}
subjects:
- kind: Group
  name: deployers
  apiGroup: rbac.authorization.k8s.io
roleRef: {kind: Role, name: pod-reader, apiGroup: rbac.authorization.k8s.io}
`, "apply", "-f", "-")
		if got := canI(t, "list"); got != "yes" {
			t.Errorf("after the binding, can-i list pods = %q, want yes", got)
		}
		if got := canI(t, "delete"); got != "no" {
			t.Errorf("can-i delete pods = %q, want no (the role does not grant it)", got)
		}
	})

	t.Run("certificate from another CA", func(t *testing.T) {
		c, k2 := otherCA.Issue(t, Leaf{CommonName: "ci-deployer", Organization: []string{"deployers"}})
		out, err := k.Kubectl(t, k.Kubeconfig(t, "other", c, k2), "auth", "whoami")
		if err == nil || !strings.Contains(err.Error(), "Unauthorized") {
			t.Fatalf("auth whoami with a certificate from another CA = %q, %v; want Unauthorized", out, err)
		}
	})

	t.Run("service account token", func(t *testing.T) {
		// No controller manager runs: service accounts are created by hand.
		k.Admin(t, "", "create", "serviceaccount", "ci-runner", "--namespace", "default")
		token := strings.TrimSpace(k.Admin(t, "", "create", "token", "ci-runner", "--namespace", "default"))
		parts := strings.Split(token, ".")
		if len(parts) != 3 {
			t.Fatalf("kubectl create token printed no JWT")
		}
		payload, err := base64.RawURLEncoding.DecodeString(parts[1])
		if err != nil {
			t.Fatal(err)
		}
		var claims struct {
			Iss string `json:"iss"`
			Sub string `json:"sub"`
		}
		if err := json.Unmarshal(payload, &claims); err != nil {
			t.Fatal(err)
		}
		if claims.Iss != k.ServiceAccountIssuer || claims.Sub != "system:serviceaccount:default:ci-runner" {
			t.Errorf("token iss=%q sub=%q, want iss=%q sub=system:serviceaccount:default:ci-runner", claims.Iss, claims.Sub, k.ServiceAccountIssuer)
		}
	})
}
