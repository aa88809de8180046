package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/client"
	"github.com/mbot-dev/mbot/identity"
)

// TestTrustedClusterTunnelAdmin: mbot get leaf_clusters through the root's
// admin API, and tunnels the root refuses.
func TestTrustedClusterTunnelAdmin(t *testing.T) {
	tc := startTrustedClusters(t, nil)
	env := baseEnv(tc.root.home)
	adminDir := filepath.Join(filepath.Dir(tc.root.config), "data", "admin")

	t.Run("get-leaf-clusters-remote", func(t *testing.T) {
		var out string
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if out = mustMbot(t, env, "get", "leaf_clusters", "--auth", adminDir).stdout; leafLine(out, "yes") != nil {
				break
			}
		}
		f := leafLine(out, "yes")
		if f == nil || len(f) != 4 || f[3] != tc.leaf.pin {
			t.Fatalf("mbot get leaf_clusters --auth does not show %s connected with its pin:\n%s", leafName, out)
		}
		if seen, err := time.Parse(time.RFC3339, f[2]); err != nil || time.Since(seen) > time.Minute {
			t.Errorf("last seen %q, want a recent RFC 3339 time (%v)", f[2], err)
		}
		// The same through the local store view.
		if local := mustMbot(t, env, "get", "leaf_clusters", "--config", tc.root.config).stdout; leafLine(local, "yes") == nil {
			t.Errorf("mbot get leaf_clusters --config:\n%s", local)
		}
		var docs []struct {
			Kind     string
			Metadata struct{ Name string }
		}
		js := mustMbot(t, env, "get", "leaf_clusters", "--auth", adminDir, "-o", "json").stdout
		if err := json.Unmarshal([]byte(js), &docs); err != nil || len(docs) != 1 || docs[0].Kind != "leaf_cluster" || docs[0].Metadata.Name != leafName {
			t.Errorf("mbot get leaf_clusters --auth -o json: %v\n%s", err, js)
		}

		// A bot identity is not an admin identity.
		dir := t.TempDir()
		if res := tc.issue(t, tc.mbotYAML(t, dir, "", ""), tokenDeployer); res.code != 0 {
			t.Fatalf("mbot issue: %s", res)
		}
		botDir := filepath.Join(dir, "root")
		writeFile(t, filepath.Join(botDir, "admin.json"), readFile(t, filepath.Join(adminDir, "admin.json")), 0o600)
		if res := mbot(t, env, "get", "leaf_clusters", "--auth", botDir); res.code == 0 || !strings.Contains(res.stderr, "admin_required") || strings.Contains(res.stdout, leafName) {
			t.Errorf("a bot identity listed the leaf clusters: %s", res)
		}
	})

	t.Run("tunnel-of-unpinned-ca", func(t *testing.T) {
		// A certificate named after the leaf, from a CA the leaf_cluster does not pin.
		status, refusal := dialTunnel(t, tc.root, rogueClientCert(t, leafName))
		if status != http.StatusForbidden || refusal.Code != identity.CodeUnknownLeaf ||
			!strings.Contains(refusal.Message, "no certificate of the CA pinned by leaf_cluster "+leafName) || !strings.Contains(refusal.Message, "spec.ca_pin") {
			t.Errorf("a tunnel of an unpinned CA: %d %+v, want 403 unknown_leaf", status, refusal)
		}
		// A certificate of a leaf the root does not know.
		status, refusal = dialTunnel(t, tc.root, rogueClientCert(t, "leaf-us"))
		if status != http.StatusForbidden || refusal.Code != identity.CodeUnknownLeaf || !strings.Contains(refusal.Message, "does not know leaf cluster \"leaf-us\"") {
			t.Errorf("a tunnel of an unknown leaf: %d %+v, want 403 unknown_leaf", status, refusal)
		}
		// The leaf's own dials before its leaf_cluster existed are refused
		// too; these two are told apart by their messages.
		var unpinned, unknown bool
		for _, ev := range auditEvents(t, tc.root, "tunnel") {
			if !ev.Allowed && ev.Code == string(identity.CodeUnknownLeaf) && strings.HasPrefix(ev.Remote, "127.0.0.1:") {
				unpinned = unpinned || strings.Contains(ev.Message, "no certificate of the CA pinned by leaf_cluster "+leafName)
				unknown = unknown || strings.Contains(ev.Message, "leaf-us")
			}
		}
		if !unpinned || !unknown {
			t.Errorf("the root did not audit both refused tunnels (unpinned CA %t, unknown leaf %t): %+v", unpinned, unknown, auditEvents(t, tc.root, "tunnel"))
		}
		// The real leaf's tunnel was not displaced, and exchanges go on.
		tc.waitConnected(t, true)
		dir := t.TempDir()
		if res := tc.issue(t, tc.mbotYAML(t, dir, "", leafIdentityOutput(filepath.Join(dir, "eu"))), tokenDeployer); res.code != 0 {
			t.Fatalf("mbot issue after the refused tunnels: %s", res)
		}
		checkLeafIdentity(t, tc, dir)
	})
}

// leafIdentityOutput is an mbot.yaml identity output of the leaf into dest.
func leafIdentityOutput(dest string) string {
	return "  - {type: identity, destination: " + dest + ", cluster: " + leafName + "}\n"
}

// leafLine returns the fields of leafName's line in mbot get leaf_clusters
// output if its CONNECTED column is connected.
func leafLine(out, connected string) []string {
	for line := range strings.Lines(out) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == leafName && f[1] == connected {
			return f
		}
	}
	return nil
}

// rogueClientCert is a client certificate with common name cn from a new,
// self-signed CA, with that CA in its chain as a leaf's tunnel sends it.
func rogueClientCert(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn + " CA"}, NotBefore: time.Now().Add(-time.Minute),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		// The tunnel identity a leaf's tunnel certificate carries, so that
		// the root refuses it for its CA or its name, not for lacking it.
		URIs: []*url.URL{{Scheme: "spiffe", Host: cn, Path: identity.TunnelSPIFFEPath}}}, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key}
}

// dialTunnel asks c for a leaf's tunnel with cert, as a leaf does, and
// returns the answer's status and refusal.
func dialTunnel(t *testing.T, c *cluster, cert tls.Certificate) (int, identity.ErrorResponse) {
	t.Helper()
	cfg, err := client.PinnedTLSConfig(c.url, c.pin)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Certificates = []tls.Certificate{cert}
	cfg.NextProtos = []string{identity.TunnelProtocol, "http/1.1"}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: commandTimeout}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodGet, c.url+identity.PathTunnel, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", identity.TunnelProtocol)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("dialing the tunnel endpoint: %v", err)
	}
	defer resp.Body.Close()
	var refusal identity.ErrorResponse
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, &refusal); err != nil {
		t.Errorf("the tunnel's refusal is not JSON: %s", body)
	}
	return resp.StatusCode, refusal
}
