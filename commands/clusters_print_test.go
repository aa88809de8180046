package commands

import (
	"bytes"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/authority/resources"
)

// TestPrintTrustedClusters: mbot get trusted_clusters lists each trust with
// its root, pin and role map.
func TestPrintTrustedClusters(t *testing.T) {
	const pin = "sha256:5f57a8e146f857ba17e92fd163a7be8b9b8103f7608d2ed068f1d8ab584f2a5d"
	set := parseTestSet(t, `kind: trusted_cluster
version: v1
metadata: {name: acme-root}
spec:
  enabled: false
  root: {url: "https://auth.acme.internal:8443", ca_pin: "`+pin+`"}
  role_map:
    - {remote: deploy, local: [leaf-deploy, leaf-read]}
    - {remote: "^ci-(.*)$", local: ["ci-$1"]}
`)
	var out bytes.Buffer
	if err := writeTable(&out, set, resources.KindTrustedCluster, set.Documents(resources.KindTrustedCluster)); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "NAME ENABLED ROOT CA PIN ROLE MAP" {
		t.Fatalf("mbot get trusted_clusters:\n%s", out.String())
	}
	want := "acme-root no https://auth.acme.internal:8443 " + pin + " deploy -> leaf-deploy,leaf-read; ^ci-(.*)$ -> ci-$1"
	if got := strings.Join(strings.Fields(lines[1]), " "); got != want {
		t.Errorf("mbot get trusted_clusters:\n%s\nwant the line %s", got, want)
	}
}
