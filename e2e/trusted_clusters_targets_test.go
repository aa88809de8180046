//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/internal/testservers"
)

// TestTrustedClusterTargets: a root bot's leaf outputs reach a real
// PostgreSQL and a real kube-apiserver that trust only the leaf's CAs,
// with psql and kubectl and the files mbot wrote; the client knows only
// the root's URL.
func TestTrustedClusterTargets(t *testing.T) {
	var k *testservers.KubeAPIServer
	tc := startTrustedClusters(t, func(c *cluster) string {
		// The leaf's CAs exist before it starts: the API server trusts
		// its kubernetes-client CA from the start.
		k = testservers.StartKubeAPIServer(t, testservers.KubeConfig{ClientCA: []byte(c.export(t, "kubernetes-client-ca"))})
		caPEM := "    " + strings.ReplaceAll(strings.TrimSpace(string(k.CAPEM)), "\n", "\n    ")
		return fmt.Sprintf("kind: kubernetes_cluster\nversion: v1\nmetadata: {name: eu-prod}\nspec:\n  api_server: %s\n  ca: |\n%s\n---\n", k.URL, caPEM)
	})
	leaf := &databaseCluster{cluster: tc.leaf}
	srv := leaf.signServer(t, "postgres")
	pg := testservers.StartPostgres(t, testservers.PostgresConfig{ServerCert: srv.cert, ServerKey: srv.key, ClientCA: srv.clientCA,
		HBA: []string{"hostssl all all 127.0.0.1/32 cert"}})
	pg.Exec(t, "CREATE ROLE ci_migrate LOGIN; CREATE DATABASE orders")
	leaf.applyDatabase(t, "orders", "postgres", pg.Port, "")

	dir := t.TempDir()
	res := tc.issue(t, tc.mbotYAML(t, dir, "", fmt.Sprintf(`  - {type: identity, destination: %[1]s/eu, cluster: %[2]s}
  - {type: database, destination: %[1]s/eu-db, cluster: %[2]s, database: orders, username: ci_migrate, db_name: orders}
  - {type: kubernetes, destination: %[1]s/eu-kube, cluster: %[2]s, kubernetes_cluster: eu-prod}
`, dir, leafName)), tokenDeployer)
	if res.code != 0 {
		t.Fatalf("mbot issue: %s\nleaf:\n%s", res, tc.leafAuth.logs)
	}
	// One exchange carried all three leaf outputs.
	var exchanges int
	for _, ev := range auditEvents(t, tc.leaf, "exchange") {
		if ev.Allowed && len(ev.Outputs) == 3 {
			exchanges++
		}
	}
	if exchanges != 1 {
		t.Errorf("the leaf audited %d exchanges of three outputs, want 1: %+v", exchanges, auditEvents(t, tc.leaf, "exchange"))
	}

	t.Run("psql", func(t *testing.T) {
		res := run(t, clientEnv(t, "PGSERVICEFILE="+filepath.Join(dir, "eu-db", "pg_service.conf")), "psql", "service=orders", "-X", "-At",
			"-c", "SELECT current_user || ' ' || current_database()")
		if res.code != 0 || strings.TrimSpace(res.stdout) != "ci_migrate orders" {
			t.Fatalf("psql with the leaf's database output: %s", res)
		}
		// The root identity's certificate is of another CA: PostgreSQL refuses it.
		res = run(t, clientEnv(t, "PGSERVICEFILE="+filepath.Join(dir, "eu-db", "pg_service.conf")),
			"psql", "service=orders sslcert="+filepath.Join(dir, "root", "tls.crt")+" sslkey="+filepath.Join(dir, "root", "tls.key")+" user=ci_migrate",
			"-X", "-At", "-c", "SELECT 1")
		if res.code == 0 || !strings.Contains(res.stderr, "unknown ca") {
			t.Fatalf("psql with the root identity's certificate was admitted: %s", res)
		}
	})

	t.Run("kubectl", func(t *testing.T) {
		out, err := k.Kubectl(t, filepath.Join(dir, "eu-kube", "kubeconfig"), "auth", "whoami", "-o", "json")
		if err != nil {
			t.Fatalf("kubectl auth whoami with the leaf's kubeconfig: %v", err)
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
		if u := review.Status.UserInfo; u.Username != "deployer" || !strings.Contains(strings.Join(u.Groups, ","), "deployers") {
			t.Errorf("kubectl auth whoami = %+v, want deployer in deployers", u)
		}
	})
}
