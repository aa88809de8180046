//go:build linux

package e2e

import (
	"encoding/base64"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/mbot-dev/mbot/internal/helmtest"
	"github.com/mbot-dev/mbot/internal/testservers"
)

// secretJoinToken admits the mbot-agent chart's service account (ci:
// mbot-agent) by a TokenReview, sent with the token of the mbot-authority
// chart's service account (%[2]s, %[3]s, %[4]s: API server, CA, token file).
const secretJoinToken = `
---
kind: join_token
version: v1
metadata: {name: k8s-agent}
spec:
  bot: %[1]s
  method: kubernetes
  kubernetes:
    type: in_cluster
    api_server: %[2]s
    ca_file: %[3]s
    token_file: %[4]s
    allow:
      - service_account: ci:mbot-agent
`

// agentPod is a pod of the agent chart's service account, which projected
// tokens are bound to (never scheduled: the test server has no nodes), and
// a service account with get but no update on the Secret.
const agentPod = `apiVersion: v1
kind: Pod
metadata: {name: agent, namespace: ci}
spec:
  serviceAccountName: mbot-agent
  containers:
  - {name: mbot, image: registry.invalid/mbot:1}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader, namespace: ci}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader, namespace: ci}
rules:
- {apiGroups: [""], resources: [secrets], resourceNames: [ci-db], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader, namespace: ci}
subjects: [{kind: ServiceAccount, name: reader, namespace: ci}]
roleRef: {kind: Role, name: reader, apiGroup: rbac.authorization.k8s.io}
`

// TestKubernetesSecretDestination: with the service account, Role and
// Secret the mbot-agent chart renders, and the authority's service account
// and TokenReview binding the mbot-authority chart renders, applied to a
// real kube-apiserver, mbot issue with the chart's mbot.yaml joins by the
// kubernetes method (in_cluster) and writes a database output into the
// Secret; the certificate kubectl reads from it logs in to a real
// PostgreSQL; mbot start renews it in place; a service account without
// update is refused by name and a failed join leaves the Secret as it was.
func TestKubernetesSecretDestination(t *testing.T) {
	var k *testservers.KubeAPIServer
	dc := &databaseCluster{pgPort: freePort(t), myPort: freePort(t)}
	dc.cluster, _ = startClusterWith(t, func(c *cluster) string {
		k = testservers.StartKubeAPIServer(t, testservers.KubeConfig{})
		k.Admin(t, "apiVersion: v1\nkind: Namespace\nmetadata: {name: mbot}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ci}\n", "apply", "-f", "-")
		auth, err := helmtest.Render("../deploy/helm/mbot-authority", "mbot-authority", "mbot", map[string]any{
			"clusterName": clusterName, "storage": map[string]any{"dsnSecretName": "mbot-dsn"}, "kek": map[string]any{"secretName": "mbot-kek"},
			"tokenReview": map[string]any{"enabled": true}})
		if err != nil {
			t.Fatal(err)
		}
		k.Admin(t, auth, "apply", "-f", "-")
		tokenFile := filepath.Join(t.TempDir(), "authority-token")
		writeFile(t, tokenFile, strings.TrimSpace(k.Admin(t, "", "create", "token", "mbot-authority", "--namespace", "mbot")), 0o600)
		return defaultResources(c) + fmt.Sprintf(databases, roleName, c.ci.URL, dc.pgPort, dc.myPort) +
			fmt.Sprintf(secretJoinToken, dbBot, k.URL, k.CAFile, tokenFile)
	})
	srv := dc.signServer(t, "postgres")
	pg := testservers.StartPostgres(t, testservers.PostgresConfig{ServerCert: srv.cert, ServerKey: srv.key, ClientCA: srv.clientCA,
		HBA: []string{"hostssl all all 127.0.0.1/32 cert"}})
	pg.Exec(t, "CREATE ROLE "+dbUser+" LOGIN; CREATE DATABASE "+dbName)
	const real = "pg-k8s"
	dc.applyDatabase(t, real, "postgres", pg.Port, "")

	agent, err := helmtest.Render("../deploy/helm/mbot-agent", "mbot-agent", "ci", map[string]any{
		"authority": map[string]any{"url": dc.url, "caPin": dc.pin, "audience": clusterName},
		"joinToken": "k8s-agent",
		"outputs": []any{map[string]any{"secretName": "ci-db", "labels": map[string]any{"team": "payments"},
			"output": map[string]any{"type": "database", "database": real, "username": dbUser, "db_name": dbName}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	k.Admin(t, agent, "apply", "-f", "-")
	k.Admin(t, agentPod, "apply", "-f", "-")
	uid := strings.TrimSpace(k.Admin(t, "", "get", "pod", "agent", "--namespace", "ci", "-o", "jsonpath={.metadata.uid}"))

	// The chart's mbot.yaml, with mbot's own identity in a directory here
	// instead of the pod's emptyDir.
	var mbotYAML string
	for _, doc := range strings.Split(agent, "\n---\n") {
		if strings.Contains(doc, "kind: ConfigMap") && strings.Contains(doc, "mbot.yaml: |") {
			_, body, _ := strings.Cut(doc, "mbot.yaml: |\n")
			mbotYAML = strings.ReplaceAll(body, "\n    ", "\n")
			mbotYAML = strings.TrimPrefix(mbotYAML, "    ")
		}
	}
	work := t.TempDir()
	mbotYAML = strings.ReplaceAll(mbotYAML, "/var/lib/mbot/identity", filepath.Join(work, "identity"))
	config := filepath.Join(work, "mbot.yaml")
	writeFile(t, config, mbotYAML, 0o644)

	tokenPath := filepath.Join(work, "token")
	freshToken := func() {
		tok := k.Admin(t, "", "create", "token", "mbot-agent", "--namespace", "ci", "--audience", clusterName, "--duration", "10m",
			"--bound-object-kind", "Pod", "--bound-object-name", "agent", "--bound-object-uid", uid)
		writeFile(t, tokenPath, strings.TrimSpace(tok)+"\n", 0o600)
	}
	// podEnv is the agent pod as seen from outside: the projected token
	// for the join, and the service account's token in a kubeconfig for
	// the Secret (the in-cluster configuration is tested in kubesecret).
	podEnv := func(sa string) []string {
		kubeconfig := k.TokenKubeconfig(t, sa, strings.TrimSpace(k.Admin(t, "", "create", "token", sa, "--namespace", "ci")), "ci")
		return dc.jobEnv(map[string]string{"MBOT_KUBERNETES_TOKEN_PATH": tokenPath, "KUBECONFIG": kubeconfig})
	}
	get := func(path string) string {
		return k.Admin(t, "", "get", "secret", "ci-db", "--namespace", "ci", "-o", "jsonpath="+path)
	}

	freshToken()
	res := mbot(t, podEnv("mbot-agent"), "issue", "--config", config)
	if res.code != 0 {
		t.Fatalf("mbot issue: %s", res)
	}
	if !strings.Contains(res.stderr, "kubernetes join as bot") || !strings.Contains(res.stderr, "wrote Secret ci/ci-db") {
		t.Errorf("mbot issue does not say it joined and wrote the Secret:\n%s", res.stderr)
	}
	if got := get("{.metadata.labels.team}"); got != "payments" {
		t.Errorf("label team = %q", got)
	}
	secretUID := get("{.metadata.uid}")

	// What a pod mounting the Secret gets: its keys as files.
	login := func(t *testing.T) {
		t.Helper()
		dir := t.TempDir()
		for _, key := range []string{"client.crt", "client.key", "ca.crt"} {
			data, err := base64.StdEncoding.DecodeString(get(`{.data.` + strings.ReplaceAll(key, ".", `\.`) + `}`))
			if err != nil || len(data) == 0 {
				t.Fatalf("kubectl get secret ci-db -o jsonpath: %s: %v", key, err)
			}
			writeFile(t, filepath.Join(dir, key), string(data), 0o600)
		}
		conn := fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=verify-full sslcert=%s sslkey=%s sslrootcert=%s", dbHost, pg.Port, dbUser, dbName,
			filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key"), filepath.Join(dir, "ca.crt"))
		out := run(t, clientEnv(t), "psql", conn, "-X", "-At", "-c", "SELECT current_user")
		if out.code != 0 || strings.TrimSpace(out.stdout) != dbUser {
			t.Fatalf("psql with the Secret's certificate: %s", out)
		}
	}
	t.Run("PostgreSQL accepts the Secret's certificate", login)

	t.Run("failed join leaves the Secret unchanged", func(t *testing.T) {
		before, cert := get("{.metadata.resourceVersion}"), get(`{.data.client\.crt}`)
		freshToken()
		res := mbot(t, podEnv("mbot-agent"), "issue", "--config", config, "--token", "no-such-token")
		if res.code == 0 {
			t.Fatalf("mbot issue with an unknown join token: %s", res)
		}
		if get("{.metadata.resourceVersion}") != before || get(`{.data.client\.crt}`) != cert {
			t.Errorf("the failed join changed the Secret")
		}
	})

	t.Run("no update: named refusal, Secret intact", func(t *testing.T) {
		before := get("{.metadata.resourceVersion}")
		freshToken()
		res := mbot(t, podEnv("reader"), "issue", "--config", config)
		if res.code == 0 {
			t.Fatalf("mbot issue as a service account without update: %s", res)
		}
		for _, want := range []string{"Secret ci/ci-db: system:serviceaccount:ci:reader may not update it", `add verb "update" on secrets with resourceNames: ["ci-db"]`} {
			if !strings.Contains(res.stderr, want) {
				t.Errorf("the refusal does not say %q:\n%s", want, res.stderr)
			}
		}
		if get("{.metadata.resourceVersion}") != before {
			t.Errorf("the refused write changed the Secret")
		}
	})

	t.Run("mbot start updates it in place", func(t *testing.T) {
		cert := get(`{.data.client\.crt}`)
		freshToken()
		d := startProc(t, podEnv("mbot-agent"), mbotBin, "start", "--config", config, "--renewal-interval", "2s")
		waitFor(t, "mbot start to write the Secret", d, func() bool { return get(`{.data.client\.crt}`) != cert })
		cert = get(`{.data.client\.crt}`)
		freshToken() // the kubelet rewrites the projected token; each join needs a fresh one
		waitFor(t, "a second cycle to renew the Secret", d, func() bool { return get(`{.data.client\.crt}`) != cert })
		if got := get("{.metadata.uid}"); got != secretUID {
			t.Errorf("the Secret was replaced (uid %s, was %s), not updated in place", got, secretUID)
		}
		if code := d.stop(t, syscall.SIGTERM); code != 0 {
			t.Fatalf("mbot start exited %d:\n%s", code, d.logs)
		}
		login(t)
	})
}
