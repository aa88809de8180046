//go:build linux

package helm_test

import (
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/internal/helmtest"
	"github.com/mbot-dev/mbot/internal/testservers"
)

// TestChartsServerValidation: both charts' manifests, with the optional
// parts switched on, pass kubectl apply --dry-run=server against a real
// kube-apiserver (its schema, RBAC escalation and admission checks).
// The ServiceMonitor needs the Prometheus Operator's CRD, which the test
// server lacks: it is checked to render, not applied.
func TestChartsServerValidation(t *testing.T) {
	k := testservers.StartKubeAPIServer(t, testservers.KubeConfig{})
	k.Admin(t, "apiVersion: v1\nkind: Namespace\nmetadata: {name: mbot}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ci}\n", "apply", "-f", "-")

	a, err := helmtest.Render("mbot-authority", "mbot-authority", "mbot", authorityValues())
	if err != nil {
		t.Fatal(err)
	}
	out := k.Admin(t, a, "apply", "--dry-run=server", "-f", "-")
	for _, want := range []string{"deployment.apps/mbot-authority created (server dry run)", "poddisruptionbudget.policy/mbot-authority", "networkpolicy.networking.k8s.io/mbot-authority",
		"service/mbot-authority-metrics", "clusterrolebinding.rbac.authorization.k8s.io/mbot-authority-mbot-tokenreview"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl apply --dry-run=server of mbot-authority does not say %q:\n%s", want, out)
		}
	}
	g, err := helmtest.Render("mbot-agent", "mbot-agent", "ci", with(agentValues(), "rbac", map[string]any{"allowCreate": true}))
	if err != nil {
		t.Fatal(err)
	}
	out = k.Admin(t, g, "apply", "--dry-run=server", "-f", "-")
	for _, want := range []string{"deployment.apps/mbot-agent created (server dry run)", "role.rbac.authorization.k8s.io/mbot-agent", "rolebinding.rbac.authorization.k8s.io/mbot-agent", "secret/ci-db"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl apply --dry-run=server of mbot-agent does not say %q:\n%s", want, out)
		}
	}
	sm, err := helmtest.Render("mbot-authority", "mbot-authority", "mbot", with(authorityValues(), "metrics", map[string]any{"serviceMonitor": map[string]any{"enabled": true}}))
	if err != nil || !strings.Contains(sm, "kind: ServiceMonitor") {
		t.Errorf("metrics.serviceMonitor.enabled renders no ServiceMonitor (%v)", err)
	}
}
