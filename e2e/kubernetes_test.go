//go:build linux

package e2e

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/internal/testservers"
)

// The bot of kubeYAML is named as its Kubernetes user, so that its
// identity output's tls.crt (CN = bot) and its database output's client.crt
// (CN = database user) say ci-deployer too: only the CA tells them apart.
const (
	kubeBot     = "ci-deployer"
	kubeToken   = "github-kube"
	kubeCluster = "e2e-kube"
	kubeGroup   = "deployers"
)

// kubeYAML adds a bot whose role grants Kubernetes user ci-deployer and
// group deployers (and, to show they are refused by the API server, an SSH
// login and a database user of the same name), a kind: kubernetes_cluster
// for the API server and a kind: database.
// %[1]s: OS login, %[2]s: issuer, %[3]s: API server URL, %[4]s: its CA, indented.
const kubeYAML = `
---
kind: role
version: v1
metadata: {name: kube-deploy}
spec:
  logins: [%[1]s]
  kubernetes_users: [` + kubeBot + `]
  kubernetes_groups: [` + kubeGroup + `]
  db_users: [` + kubeBot + `]
---
kind: role
version: v1
metadata: {name: kube-admin}
spec:
  kubernetes_groups: ["system:masters"]
---
kind: bot
version: v1
metadata: {name: ` + kubeBot + `}
spec:
  roles: [kube-deploy]
---
kind: join_token
version: v1
metadata: {name: ` + kubeToken + `}
spec:
  bot: ` + kubeBot + `
  method: github
  github:
    issuer: %[2]s
    allow:
      - repository: acme/app
---
kind: kubernetes_cluster
version: v1
metadata: {name: ` + kubeCluster + `}
spec:
  api_server: %[3]s
  ca: |
%[4]s
---
kind: database
version: v1
metadata: {name: e2e-pg}
spec:
  protocol: postgres
  uri: 127.0.0.1:5432
  ca_issued_by_authority: true
`

const kubeMbotYAML = `authority: %s
ca_pin: %s
token: ` + kubeToken + `
outputs:
  - type: identity
    destination: %[3]s/id
  - type: kubernetes
    destination: %[3]s/kube
    kubernetes_cluster: %[4]s
  - type: database
    destination: %[3]s/db
    database: e2e-pg
    username: ` + kubeBot + `
`

// TestKubernetesOutput runs a real kube-apiserver whose --client-ca-file is
// what `mbot authority export --type kubernetes-client-ca` prints, and
// `mbot issue --config mbot.yaml` with identity, kubernetes and database
// outputs: kubectl with the kubeconfig alone is the granted user in the
// granted group, an RBAC binding to the group is honoured, and the
// identity and database certificates (CN = the same name) are refused
// by the API server (401). A group the roles do not grant is refused at
// issue time with the role field to add it to, and nothing is written.
func TestKubernetesOutput(t *testing.T) {
	var k *testservers.KubeAPIServer
	c, _ := startClusterWith(t, func(c *cluster) string {
		// authority.yaml is written: export creates the CAs the
		// authority will start with, and the API server trusts its
		// kubernetes-client CA from the start.
		clientCA := c.export(t, "kubernetes-client-ca")
		checkClientCAExport(t, clientCA)
		k = testservers.StartKubeAPIServer(t, testservers.KubeConfig{ClientCA: []byte(clientCA)})
		caPEM := "    " + strings.ReplaceAll(strings.TrimSpace(string(k.CAPEM)), "\n", "\n    ")
		return defaultResources(c) + fmt.Sprintf(kubeYAML, c.login, c.ci.URL, k.URL, caPEM)
	})

	work := t.TempDir()
	config := filepath.Join(work, "mbot.yaml")
	writeFile(t, config, fmt.Sprintf(kubeMbotYAML, c.url, c.pin, work, kubeCluster), 0o644)
	res := mbot(t, c.jobEnv(gitHubJob(t, c)), "issue", "--config", config)
	if res.code != 0 {
		t.Fatalf("mbot issue --config mbot.yaml: %s", res)
	}
	kubeconfig := filepath.Join(work, "kube", "kubeconfig")
	if st, err := os.Stat(kubeconfig); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("kube/kubeconfig: %v, mode %v; want 0600 (it holds the key)", err, st)
	}
	var sum struct {
		KubernetesCluster string   `json:"kubernetes_cluster"`
		User              string   `json:"user"`
		Groups            []string `json:"groups"`
		APIServer         string   `json:"api_server"`
	}
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(work, "kube", "kubernetes.json"))), &sum); err != nil {
		t.Fatal(err)
	}
	if sum.KubernetesCluster != kubeCluster || sum.User != kubeBot || !slices.Equal(sum.Groups, []string{kubeGroup}) || sum.APIServer != k.URL {
		t.Errorf("kubernetes.json %+v", sum)
	}

	t.Run("whoami", func(t *testing.T) {
		out, err := k.Kubectl(t, kubeconfig, "auth", "whoami", "-o", "json")
		if err != nil {
			t.Fatalf("kubectl --kubeconfig kube/kubeconfig auth whoami: %v", err)
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
		u := review.Status.UserInfo
		slices.Sort(u.Groups)
		if u.Username != kubeBot || !slices.Equal(u.Groups, []string{kubeGroup, "system:authenticated"}) {
			t.Errorf("whoami: user %q groups %v; want %s in [%s system:authenticated]", u.Username, u.Groups, kubeBot, kubeGroup)
		}
	})

	t.Run("rbac", func(t *testing.T) {
		canI := func(args ...string) string {
			t.Helper()
			out, err := k.Kubectl(t, kubeconfig, append([]string{"auth", "can-i"}, args...)...)
			if err != nil && strings.TrimSpace(out) != "no" {
				t.Fatalf("auth can-i %s: %v", strings.Join(args, " "), err)
			}
			return strings.TrimSpace(out)
		}
		k.Admin(t, "apiVersion: v1\nkind: Namespace\nmetadata: {name: ci}\n", "apply", "-f", "-")
		if got := canI("create", "deployments", "-n", "ci"); got != "no" {
			t.Fatalf("before any binding, can-i create deployments -n ci = %q, want no", got)
		}
		k.Admin(t, `apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: deployer, namespace: ci}
rules:
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, create, update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: deployers, namespace: ci}
subjects:
- {kind: Group, name: `+kubeGroup+`, apiGroup: rbac.authorization.k8s.io}
roleRef: {kind: Role, name: deployer, apiGroup: rbac.authorization.k8s.io}
`, "apply", "-f", "-")
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"create", "deployments", "-n", "ci"}, "yes"},
			{[]string{"delete", "deployments", "-n", "ci"}, "no"},
			{[]string{"get", "secrets", "-n", "ci"}, "no"},
			{[]string{"create", "deployments", "-n", "default"}, "no"},
		} {
			if got := canI(tc.args...); got != tc.want {
				t.Errorf("can-i %s = %q, want %s", strings.Join(tc.args, " "), got, tc.want)
			}
		}
	})

	// Certificates of the other outputs, for the same name, are refused by
	// the API server itself: they are not the kubernetes-client CA's.
	for _, tc := range []struct{ name, cert, key string }{
		{"identity tls.crt", "id/tls.crt", "id/tls.key"},
		{"database client.crt", "db/client.crt", "db/client.key"},
	} {
		t.Run(tc.name+" refused", func(t *testing.T) {
			cert := []byte(readFile(t, filepath.Join(work, tc.cert)))
			if cn := certCN(t, cert); cn != kubeBot {
				t.Fatalf("%s has CN %q, want %s (the test shows the CA decides)", tc.cert, cn, kubeBot)
			}
			kc := k.Kubeconfig(t, "other", cert, []byte(readFile(t, filepath.Join(work, tc.key))))
			out, err := k.Kubectl(t, kc, "auth", "whoami")
			if err == nil || !strings.Contains(err.Error(), "Unauthorized") {
				t.Errorf("kubectl auth whoami with %s = %q, %v; want Unauthorized (401)", tc.cert, out, err)
			}
		})
	}

	t.Run("audit", func(t *testing.T) {
		joins := auditEvents(t, c, "join")
		last := joins[len(joins)-1]
		want := "kube type=kubernetes kubernetes_cluster=" + kubeCluster + " user=" + kubeBot + " groups=" + kubeGroup
		if !last.Allowed || !slices.Contains(last.Outputs, want) {
			t.Errorf("audit outputs %q, want %q among them", last.Outputs, want)
		}
	})

	for _, tc := range []struct{ name, extra, hint string }{
		{"group not granted", "    groups: [\"system:masters\"]\n", `role kube-admin would grant it: add it to the bot's spec.roles, or add "system:masters" to the kubernetes_groups`},
		{"user not granted", "    user: admin\n", `grants Kubernetes user "admin"; add it to the kubernetes_users of one of its roles (kube-deploy)`},
		{"unknown cluster", "", `there is no kubernetes_cluster named "staging" on this authority (existing: ` + kubeCluster + `)`},
	} {
		t.Run("refused "+tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cluster := kubeCluster
			if tc.name == "unknown cluster" {
				cluster = "staging"
			}
			cfg := fmt.Sprintf("authority: %s\nca_pin: %s\ntoken: %s\noutputs:\n  - type: kubernetes\n    destination: %s\n    kubernetes_cluster: %s\n%s",
				c.url, c.pin, kubeToken, filepath.Join(dir, "kube"), cluster, tc.extra)
			writeFile(t, filepath.Join(dir, "mbot.yaml"), cfg, 0o644)
			res := mbot(t, c.jobEnv(gitHubJob(t, c)), "issue", "--config", filepath.Join(dir, "mbot.yaml"))
			if res.code != 1 || !strings.Contains(res.stderr, tc.hint) {
				t.Errorf("exit %d, want 1 with %q: %s", res.code, tc.hint, res)
			}
			if _, err := os.Stat(filepath.Join(dir, "kube")); !os.IsNotExist(err) {
				t.Errorf("a refused issue wrote kube/: %v", err)
			}
			joins := auditEvents(t, c, "join")
			if last := joins[len(joins)-1]; last.Allowed || last.Message == "" {
				t.Errorf("no refusal audit record: %+v", last)
			}
		})
	}
}

// checkClientCAExport: what --client-ca-file reads is one PEM CA
// certificate, for client authentication, with no key beside it.
func checkClientCAExport(t *testing.T, s string) {
	t.Helper()
	block, rest := pem.Decode([]byte(s))
	if block == nil || block.Type != "CERTIFICATE" || strings.TrimSpace(string(rest)) != "" {
		t.Fatalf("export --type kubernetes-client-ca is not one PEM certificate:\n%s", s)
	}
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil || !ca.IsCA || !slices.Equal(ca.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Fatalf("export --type kubernetes-client-ca: %v, CA %t, EKU %v", err, ca != nil && ca.IsCA, ca.ExtKeyUsage)
	}
}

func certCN(t *testing.T, certPEM []byte) string {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatal("no PEM certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert.Subject.CommonName
}
