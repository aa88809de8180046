//go:build linux

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/tunnel"
	"github.com/mbot-dev/mbot/client"
	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/testservers"
)

// rootIdentity joins the root as deployer and returns the directory of
// its root identity, which exchanges with the leaf.
func rootIdentity(t *testing.T, tc *trustedClusters) string {
	t.Helper()
	dir := t.TempDir()
	if res := tc.issue(t, tc.mbotYAML(t, dir, "", ""), tokenDeployer); res.code != 0 {
		t.Fatalf("mbot issue on the root: %s", res)
	}
	return filepath.Join(dir, "root")
}

// exchangeBody is a signed exchange of the root identity in dir for one
// output of the leaf, as mbot issue sends it.
func exchangeBody(t *testing.T, dir string) []byte {
	t.Helper()
	req := signedExchange(t, dir, "eu")
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// TestRelayFlood sends 1,200 relayed exchanges at once, from 60 loopback
// addresses (20 each, within the per-address allowance), to a root whose
// leaf is attached over its tunnel. More than the leaf's HTTP/2 stream
// limit arrive together: the root must not take a full tunnel for a dead
// one. Every answer is the leaf's (200) or 503 leaf_busy with Retry-After,
// none is 502, and the tunnel is still attached and relaying afterwards.
func TestRelayFlood(t *testing.T) {
	const addrs, perAddr = 60, 20
	tc := startTrustedClusters(t, nil)
	dir := rootIdentity(t, tc)
	bodies := make([][]byte, addrs*perAddr)
	for i := range bodies {
		bodies[i] = exchangeBody(t, dir)
	}
	tlsCfg, err := client.PinnedTLSConfig(tc.root.url, tc.root.pin)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg.NextProtos = []string{"http/1.1"} // one connection per request, as 1,200 jobs would open
	url := tc.root.url + identity.PathRelay(leafName)

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var mu sync.Mutex
	statuses := map[string]int{}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for a := range addrs {
		local := &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(a+1))}
		tr := &http.Transport{TLSClientConfig: tlsCfg, MaxConnsPerHost: perAddr, DisableKeepAlives: true,
			DialContext: (&net.Dialer{LocalAddr: local, Timeout: 60 * time.Second}).DialContext}
		defer tr.CloseIdleConnections()
		hc := &http.Client{Transport: tr}
		for i := range perAddr {
			body := bodies[a*perAddr+i]
			wg.Go(func() {
				<-start
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				key := ""
				resp, err := hc.Do(req)
				if err != nil {
					key = "error: " + err.Error()
				} else {
					var e identity.ErrorResponse
					raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
					resp.Body.Close()
					_ = json.Unmarshal(raw, &e)
					key = fmt.Sprintf("%d %s", resp.StatusCode, e.Code)
					if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") == "" {
						key += " without Retry-After"
					}
				}
				mu.Lock()
				statuses[key]++
				mu.Unlock()
			})
		}
	}
	began := time.Now()
	close(start)
	wg.Wait()
	t.Logf("%d relays in %s: %v", len(bodies), time.Since(began).Round(time.Millisecond), statuses)
	for key, n := range statuses {
		if key != "200 " && key != "503 leaf_busy" {
			t.Errorf("%d relays answered %q; want the leaf's answer (200) or 503 leaf_busy with Retry-After", n, key)
		}
	}
	if statuses["200 "] < tunnel.MaxInFlight {
		t.Errorf("only %d of %d relays reached the leaf", statuses["200 "], len(bodies))
	}
	tc.waitConnected(t, true)
	if err := exchangeWith(t, tc, dir); err != nil {
		t.Errorf("a relayed exchange after the flood: %v\nroot:\n%s", err, tc.rootAuth.logs)
	}
}

// stalledLeaf attaches a tunnel to root as leaf name, with a certificate
// of its own CA, and never answers what the root sends down it (HTTP/2
// pings are answered, so the tunnel stays attached): a leaf whose
// authority hangs. It returns the CA pin its leaf_cluster must name.
func stalledLeaf(t *testing.T, ctx context.Context, root *cluster, name string) string {
	t.Helper()
	ca := testservers.NewCA(t, name+" TLS CA")
	certPEM, keyPEM := ca.Issue(t, testservers.Leaf{CommonName: name,
		URIs: []*url.URL{{Scheme: "spiffe", Host: name, Path: identity.TunnelSPIFFEPath}}})
	cert, err := tls.X509KeyPair(append(certPEM, ca.CertPEM...), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := client.PinnedTLSConfig(root.url, root.pin)
	if err != nil {
		t.Fatal(err)
	}
	l := &tunnel.Leaf{RootURL: root.url, TLS: cfg, Log: slog.New(slog.DiscardHandler),
		Certificate: func() (*tls.Certificate, error) { return &cert, nil },
		Handler:     http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })}
	go l.Run(ctx)
	block, _ := pem.Decode(ca.CertPEM)
	caCert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return authority.CAPin(caCert)
}

// TestStalledLeavesDelayNoOther: six leaves whose tunnels are attached but
// never answer (each lock push to them runs into its timeout) must not
// delay the lock pushes to a healthy leaf: for longer than the leaf's
// lock age limit (trust.MaxLockAge), exchanges relayed to it keep being
// admitted, never root_unavailable.
func TestStalledLeavesDelayNoOther(t *testing.T) {
	tc := startTrustedClusters(t, nil)
	dir := rootIdentity(t, tc)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var resources bytes.Buffer
	stalled := []string{"leaf-a1", "leaf-a2", "leaf-a3", "leaf-a4", "leaf-a5", "leaf-a6"} // pushed before leaf-eu, in name order
	for _, name := range stalled {
		fmt.Fprintf(&resources, "kind: leaf_cluster\nversion: v1\nmetadata: {name: %s}\nspec: {ca_pin: %s}\n---\n", name, stalledLeaf(t, ctx, tc.root, name))
	}
	file := filepath.Join(t.TempDir(), "stalled.yaml")
	writeFile(t, file, resources.String(), 0o600)
	mustMbot(t, baseEnv(tc.root.home), "apply", "-f", file, "--config", tc.root.config)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		out := mustMbot(t, baseEnv(tc.root.home), "get", "leaf_clusters", "--config", tc.root.config).stdout
		if bytes.Count([]byte(out), []byte(" yes ")) >= len(stalled)+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stalled leaves' tunnels never attached:\n%s\nroot:\n%s", out, tc.rootAuth.logs)
		}
	}
	// Longer than MaxLockAge (15 s) and than one round of pushes one
	// after another (6 × 5 s).
	for end := time.Now().Add(35 * time.Second); time.Now().Before(end); time.Sleep(time.Second) {
		if err := exchangeWith(t, tc, dir); err != nil {
			t.Fatalf("a relayed exchange to the healthy leaf while six leaves stall: %v\nleaf:\n%s", err, tc.leafAuth.logs)
		}
	}
}
