package helm_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/client"
	"github.com/mbot-dev/mbot/deploy/helm"
	"github.com/mbot-dev/mbot/internal/helmtest"
	"gopkg.in/yaml.v3"
)

// The values a deployment sets (docs/kubernetes-deployment.md shows the same).
func authorityValues() map[string]any {
	return map[string]any{
		"clusterName": "prod.acme.internal",
		"storage":     map[string]any{"dsnSecretName": "mbot-dsn"},
		"kek":         map[string]any{"secretName": "mbot-kek"},
		"mbotResources": map[string]any{"inline": `kind: join_token
version: v1
metadata: {name: k8s-agent}
spec:
  bot: db-migrator
  method: kubernetes
  kubernetes:
    type: in_cluster
    allow:
      - service_account: ci:mbot-agent
`},
		"tokenReview": map[string]any{"enabled": true},
	}
}

func agentValues() map[string]any {
	return map[string]any{
		"authority": map[string]any{
			"url":      "https://mbot-authority.mbot.svc:8443",
			"caPin":    "sha256:" + strings.Repeat("ab", 32),
			"audience": "prod.acme.internal",
		},
		"joinToken": "k8s-agent",
		"outputs": []any{map[string]any{
			"secretName": "ci-db",
			"labels":     map[string]any{"team": "payments"},
			"output":     map[string]any{"type": "database", "database": "prod-pg", "username": "ci_migrate"},
		}},
	}
}

func with(v map[string]any, key string, val any) map[string]any {
	v[key] = val
	return v
}

// TestChartsLint: helm lint's rules find nothing to warn about.
func TestChartsLint(t *testing.T) {
	for chart, values := range map[string]map[string]any{"mbot-authority": authorityValues(), "mbot-agent": agentValues()} {
		if msgs := helmtest.Lint(chart, values, "mbot"); msgs != "" {
			t.Errorf("helm lint %s:\n%s", chart, msgs)
		}
	}
}

// TestValuesDocumented: every value of values.yaml has a "# --" comment,
// and README.md is the reference generated from them.
func TestValuesDocumented(t *testing.T) {
	for _, chart := range helm.Charts {
		data, err := os.ReadFile(filepath.Join(chart, "values.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if _, undocumented, err := helm.Values(data); err != nil || len(undocumented) > 0 {
			t.Errorf("%s/values.yaml: undocumented values %v (%v): add a \"# --\" comment above each", chart, undocumented, err)
		}
		want, err := helm.Reference(chart)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(filepath.Join(chart, "README.md")); string(got) != want {
			t.Errorf("%s/README.md is not the reference values.yaml makes: run go generate ./deploy/helm", chart)
		}
	}
	// The check fails for a value without a comment.
	_, undocumented, err := helm.Values([]byte("# -- documented\na: 1\nsection:\n  # -- documented\n  b: 2\n  c: 3\n"))
	if err != nil || len(undocumented) != 1 || !strings.HasPrefix(undocumented[0], "section.c") {
		t.Errorf("undocumented = %v, %v; want section.c", undocumented, err)
	}
}

// TestAuthorityChartRefusesWithoutKEK: as the authority refuses to start
// on PostgreSQL without a KEK, the chart refuses to render without one.
func TestAuthorityChartRefusesWithoutKEK(t *testing.T) {
	_, err := helmtest.Render("mbot-authority", "mbot-authority", "mbot", with(authorityValues(), "kek", map[string]any{"secretName": ""}))
	if err == nil || !strings.Contains(err.Error(), "kek.secretName is required") {
		t.Fatalf("rendered without a KEK: err = %v", err)
	}
	_, err = helmtest.Render("mbot-agent", "mbot-agent", "ci", with(agentValues(), "outputs", []any{}))
	if err == nil || !strings.Contains(err.Error(), "outputs is empty") {
		t.Fatalf("agent rendered without outputs: err = %v", err)
	}
}

// documents splits a rendered stream into its objects.
func documents(t *testing.T, stream string) []map[string]any {
	t.Helper()
	var out []map[string]any
	dec := yaml.NewDecoder(strings.NewReader(stream))
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); err != nil {
			break
		}
		if doc != nil {
			out = append(out, doc)
		}
	}
	return out
}

// configMapData is the data key of the ConfigMap named name.
func configMapData(t *testing.T, stream, name, key string) string {
	t.Helper()
	for _, d := range documents(t, stream) {
		if meta, _ := d["metadata"].(map[string]any); d["kind"] == "ConfigMap" && meta["name"] == name {
			data, _ := d["data"].(map[string]any)
			return data[key].(string)
		}
	}
	t.Fatalf("no ConfigMap %s rendered", name)
	return ""
}

// TestChartsRenderConfigsMbotReads: the authority.yaml and mbot.yaml the
// charts render are read by mbot's own parsers without an error.
func TestChartsRenderConfigsMbotReads(t *testing.T) {
	a, err := helmtest.Render("mbot-authority", "mbot-authority", "mbot", authorityValues())
	if err != nil {
		t.Fatal(err)
	}
	// The pod's environment: the DSN from its Secret.
	t.Setenv("MBOT_STORAGE_DSN", "postgres://mbot@db.acme.internal/mbot?sslmode=verify-full")
	cfg, err := authority.ParseConfig("/etc/mbot/authority.yaml", []byte(configMapData(t, a, "mbot-authority", "authority.yaml")))
	if err != nil {
		t.Fatalf("the rendered authority.yaml: %v", err)
	}
	if cfg.Storage.Type != "postgres" || cfg.MetricsListen != "0.0.0.0:9090" || !strings.Contains(strings.Join(cfg.TLSNames, ","), "mbot-authority.mbot.svc") {
		t.Errorf("authority.yaml: storage %q, metrics_listen %q, tls_names %v", cfg.Storage.Type, cfg.MetricsListen, cfg.TLSNames)
	}
	g, err := helmtest.Render("mbot-agent", "mbot-agent", "ci", agentValues())
	if err != nil {
		t.Fatal(err)
	}
	mc, err := client.ParseConfig("/etc/mbot/mbot.yaml", []byte(configMapData(t, g, "mbot-agent", "mbot.yaml")))
	if err != nil {
		t.Fatalf("the rendered mbot.yaml: %v", err)
	}
	if len(mc.Outputs) != 2 || mc.Outputs[0].Type != "identity" || mc.Outputs[1].Destination.Secret == nil ||
		mc.Outputs[1].Destination.Secret.Name != "ci-db" || mc.Outputs[1].Destination.Secret.Namespace != "ci" || mc.JoinMethod != "kubernetes" {
		t.Errorf("mbot.yaml outputs: %+v", mc.Outputs)
	}
}

// TestHelmNotInBinary: the charts' tests use Helm's libraries; the mbot
// binary links none of them, nor client-go.
func TestHelmNotInBinary(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/mbot-dev/mbot").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"helm.sh/", "k8s.io/client-go", "k8s.io/apimachinery", "github.com/mbot-dev/mbot/internal/helmtest"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("the mbot binary links %s", dep)
			}
		}
	}
}
