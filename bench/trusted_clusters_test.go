package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/internal/authoritytest"
)

// leafYAML is a leaf cluster that trusts the bench root (%[1]s is not
// used: the leaf trusts no CI platform itself).
const leafYAML = `kind: role
version: v1
metadata: {name: leaf-deploy}
spec: {logins: [ci]}
---
kind: trusted_cluster
version: v1
metadata: {name: bench-root}
spec:
  enabled: true
  root: {url: %s, ca_pin: %s}
  role_map: [{remote: deploy, local: [leaf-deploy]}]
`

// BenchmarkIssueLeafRelay is BenchmarkIssue with a second, leaf identity
// output obtained through the root's relay: one join of the root, then
// one exchange relayed down the leaf's tunnel. Compare with BenchmarkIssue
// and BenchmarkIssueLeafDirect run in the same session (the issue's goal:
// the relay adds about one round trip to a direct exchange).
func BenchmarkIssueLeafRelay(b *testing.B) { benchmarkIssueLeaf(b, false) }

// BenchmarkIssueLeafDirect is BenchmarkIssueLeafRelay with the exchange
// sent straight to the leaf (leaf_clusters in mbot.yaml).
func BenchmarkIssueLeafDirect(b *testing.B) { benchmarkIssueLeaf(b, true) }

func benchmarkIssueLeaf(b *testing.B, direct bool) {
	bin := buildMbot(b)
	root := startEnv(b)
	leaf := authoritytest.Start(b, "leaf-eu", fmt.Sprintf(leafYAML, root.URL, root.Pin), "")
	lc, err := resources.Parse("leaf.yaml", fmt.Appendf(nil, "kind: leaf_cluster\nversion: v1\nmetadata: {name: leaf-eu}\nspec: {ca_pin: %s}\n", leaf.Pin))
	if err != nil {
		b.Fatal(err)
	}
	if err := root.Authority.Apply(context.Background(), lc, "bench"); err != nil {
		b.Fatal(err)
	}
	work := b.TempDir()
	config := filepath.Join(work, "mbot.yaml")
	yaml := fmt.Sprintf("outputs:\n  - destination: %[1]s/id\n  - {destination: %[1]s/eu, cluster: leaf-eu}\n", work)
	if direct {
		yaml += fmt.Sprintf("leaf_clusters: [{name: leaf-eu, url: %q, ca_pin: %q}]\n", leaf.URL, leaf.Pin)
	}
	if err := os.WriteFile(config, []byte(yaml), 0o644); err != nil {
		b.Fatal(err)
	}
	environ := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + b.TempDir(),
		"MBOT_AUTHORITY=" + root.URL, "MBOT_CA_PIN=" + root.Pin, "MBOT_TOKEN=github-deploy", "MBOT_CONFIG=" + config}
	for k, v := range root.Issuer.GitHubEnv() {
		environ = append(environ, k+"="+v)
	}
	if err := root.Issuer.SignAhead(b.N+20, "bench"); err != nil {
		b.Fatal(err)
	}
	issue := func() ([]byte, error) {
		cmd := exec.Command(bin, "issue")
		cmd.Env = environ
		return cmd.CombinedOutput()
	}
	// The leaf attaches its tunnel within a moment of the leaf_cluster.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		msg, err := issue()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("mbot issue never succeeded through the relay: %v\n%s", err, msg)
		}
	}
	latencies := make([]time.Duration, b.N)
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		if msg, err := issue(); err != nil {
			b.Fatalf("mbot issue: %v\n%s", err, msg)
		}
		latencies[i] = time.Since(t0)
	}
	b.StopTimer()
	slices.Sort(latencies)
	b.ReportMetric(ms(latencies[len(latencies)/2]), "p50-ms")
	b.ReportMetric(ms(latencies[len(latencies)*99/100]), "p99-ms")
}
