package e2e

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/tunnel"
	"github.com/mbot-dev/mbot/identity"
)

// Trusted clusters under attack (issue 18 items 1 and 7): a bot cannot
// pose as a leaf, a second root cannot pass for another, a leaf's answer
// through the relay is passed on only with the CAs the root knows for it,
// and a trust turned off is said so through the relay as long as it lasts.

// attachTunnel dials url as a leaf's tunnel would, with the client
// certificate chain certPEM (leaf first) and key keyPEM, and returns the
// root's answer to the upgrade.
func attachTunnel(t *testing.T, rootURL string, cert tls.Certificate) (int, identity.ErrorResponse) {
	t.Helper()
	u, _ := url.Parse(rootURL)
	conn, err := tls.Dial("tcp", u.Host, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{cert},
		NextProtos: []string{identity.TunnelProtocol, "http/1.1"}})
	if err != nil {
		t.Fatalf("dialing the root: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	req, _ := http.NewRequest(http.MethodGet, rootURL+identity.PathTunnel, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", identity.TunnelProtocol)
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatalf("reading the root's answer: %v", err)
	}
	defer resp.Body.Close()
	var e identity.ErrorResponse
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		_ = json.Unmarshal(body, &e)
	}
	return resp.StatusCode, e
}

func TestTrustedClustersAttacks(t *testing.T) {
	tc := startTrustedClusters(t, nil)
	leafOut := func(dir string) string {
		return fmt.Sprintf("  - {type: identity, destination: %s, cluster: %s}\n", filepath.Join(dir, "eu"), leafName)
	}
	relayWorks := func(t *testing.T) {
		t.Helper()
		dir := t.TempDir()
		if res := tc.issue(t, tc.mbotYAML(t, dir, "", leafOut(dir)), tokenDeployer); res.code != 0 {
			t.Fatalf("mbot issue through the root's relay: %s\nroot:\n%s", res, tc.rootAuth.logs)
		}
		checkLeafIdentity(t, tc, dir)
		wantLastExchangeFrom(t, tc, "tunnel from ")
	}

	t.Run("names-like-a-cluster-refused", func(t *testing.T) {
		env := baseEnv(tc.root.home)
		res := mbot(t, env, "bots", "add", leafName, "--roles", "deploy", "--config", tc.root.config)
		if res.code == 0 || !strings.Contains(res.stderr, "named like a cluster") || !strings.Contains(res.stderr, "leaf_cluster \""+leafName+"\"") {
			t.Errorf("mbot bots add %s on a root with leaf_cluster %s: %s, want a refusal naming the leaf_cluster", leafName, leafName, res)
		}
		// The reverse: a leaf_cluster named like a bot.
		path := filepath.Join(t.TempDir(), "lc.yaml")
		writeFile(t, path, fmt.Sprintf("kind: leaf_cluster\nversion: v1\nmetadata: {name: deployer}\nspec: {ca_pin: %s}\n", tc.leaf.pin), 0o600)
		if res := mbot(t, env, "apply", "-f", path, "--config", tc.root.config); res.code == 0 || !strings.Contains(res.stderr, "bot \"deployer\"") {
			t.Errorf("mbot apply of leaf_cluster deployer beside bot deployer: %s, want a refusal naming the bot", res)
		}
		// A user is not named like a trusted cluster either (on the leaf).
		res = mbot(t, baseEnv(tc.leaf.home), "sign", "--user", rootTCName, "--roles", "ci-build", "--ttl", "1h", "--out", filepath.Join(t.TempDir(), "u"), "--config", tc.leaf.config)
		if res.code == 0 || !strings.Contains(res.stderr, "named like a cluster") {
			t.Errorf("mbot sign --user %s on a leaf trusting %s: %s, want a refusal", rootTCName, rootTCName, res)
		}
	})

	t.Run("impostor-tunnel", func(t *testing.T) {
		// A certificate of the leaf's TLS CA whose CN is the leaf's name, as
		// a root bot named like the leaf got by an exchange before names
		// were checked: here a user of the leaf named like it.
		dir := filepath.Join(t.TempDir(), "u")
		mustMbot(t, baseEnv(tc.leaf.home), "sign", "--user", leafName, "--roles", "ci-build", "--ttl", "1h", "--out", dir, "--config", tc.leaf.config)
		chain := readFile(t, filepath.Join(dir, "tls.crt")) + readFile(t, filepath.Join(dir, "ca.crt"))
		cert, err := tls.X509KeyPair([]byte(chain), []byte(readFile(t, filepath.Join(dir, "tls.key"))))
		if err != nil {
			t.Fatal(err)
		}
		if cn := parseCertChain(t, filepath.Join(dir, "tls.crt"))[0].Subject.CommonName; cn != leafName {
			t.Fatalf("the impostor's certificate has CN %q", cn)
		}
		before := len(auditEvents(t, tc.root, "tunnel"))
		status, e := attachTunnel(t, tc.root.url, cert)
		if status == http.StatusSwitchingProtocols || e.Code != identity.CodeUnknownLeaf || !strings.Contains(e.Message, "no tunnel identity") {
			t.Fatalf("the root answered the impostor's tunnel %d %+v, want unknown_leaf: no tunnel identity", status, e)
		}
		evs := auditEvents(t, tc.root, "tunnel")
		if len(evs) <= before || evs[len(evs)-1].Allowed || evs[len(evs)-1].Code != string(identity.CodeUnknownLeaf) {
			t.Errorf("the refused tunnel is not in the root's audit log: %+v", evs[before:])
		}
		// The real tunnel stays: the relay reaches the real leaf.
		relayWorks(t)
	})

	t.Run("leaf-answer-with-unknown-cas", func(t *testing.T) {
		fake := startFakeLeaf(t, tc)
		for _, c := range []struct{ name, tlsCA, sshCA, hint string }{
			{"other-tls-ca", fake.otherCAPEM, fake.sshCA, "holds TLS CA"},
			{"other-ssh-host-ca", fake.caPEM, fake.otherSSHCA, "SSH host CA"},
		} {
			t.Run(c.name, func(t *testing.T) {
				fake.answer(c.tlsCA, c.sshCA)
				dir := t.TempDir()
				out := fmt.Sprintf("  - {type: identity, destination: %s, cluster: fake-leaf}\n", filepath.Join(dir, "eu"))
				res := tc.issue(t, tc.mbotYAML(t, dir, "", out), tokenDeployer)
				wantExchangeRefused(t, res, "leaf_answer_unverified", "fake-leaf", c.hint, "nothing was written")
				wantNoOutput(t, dir, "root", "eu")
			})
		}
		var audited bool
		for _, ev := range auditEvents(t, tc.root, "relay") {
			audited = audited || !ev.Allowed && ev.Code == string(identity.CodeLeafAnswerUnverified) && ev.Claims["leaf"] == "fake-leaf"
		}
		if !audited {
			t.Error("the root did not audit the answers it refused to pass on")
		}
	})

	t.Run("trust-disabled-through-the-relay", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "tc.yaml")
		writeFile(t, path, fmt.Sprintf(trustedClusterYAML, "https://"+tc.proxy.Addr, tc.root.pin, false), 0o600)
		mustMbot(t, baseEnv(tc.leaf.home), "apply", "-f", path, "--config", tc.leaf.config)
		before := len(auditEvents(t, tc.leaf, "exchange"))
		for _, wait := range []time.Duration{2 * time.Second, 3 * time.Second} {
			time.Sleep(wait) // today the leaf closed its tunnel after about 1 s
			dir := t.TempDir()
			res := tc.issue(t, tc.mbotYAML(t, dir, "", leafOut(dir)), tokenDeployer)
			wantExchangeRefused(t, res, "trust_disabled", "leaf cluster "+leafName, "enabled: false")
			wantNoOutput(t, dir, "root", "eu")
		}
		evs := auditEvents(t, tc.leaf, "exchange")
		if len(evs) < before+2 || evs[len(evs)-1].Code != string(identity.CodeTrustDisabled) || !strings.HasPrefix(evs[len(evs)-1].Remote, "tunnel from ") {
			t.Errorf("the leaf did not audit the refused exchanges relayed by the root: %+v", evs[before:])
		}

		mustMbot(t, baseEnv(tc.leaf.home), "rm", "trusted_cluster/"+rootTCName, "--config", tc.leaf.config)
		for _, wait := range []time.Duration{2 * time.Second, 3 * time.Second} {
			time.Sleep(wait)
			dir := t.TempDir()
			res := tc.issue(t, tc.mbotYAML(t, dir, "", leafOut(dir)), tokenDeployer)
			wantExchangeRefused(t, res, "trust_disabled", "leaf cluster "+leafName, "was removed")
			wantNoOutput(t, dir, "root", "eu")
		}
		evs = auditEvents(t, tc.leaf, "exchange")
		if last := evs[len(evs)-1]; last.Code != string(identity.CodeTrustDisabled) || !strings.Contains(last.Message, "was removed") || last.Bot != "deployer" {
			t.Errorf("the leaf did not audit the exchange refused after the removal: %+v", last)
		}
	})
}

// TestTrustedClustersRootNameCollision: a second trusted root reporting
// the first root's cluster_name never wins the leaf's lookup.
func TestTrustedClustersRootNameCollision(t *testing.T) {
	tc := startTrustedClusters(t, nil)
	leafOut := func(dir string) string {
		return fmt.Sprintf("  - {type: identity, destination: %s, cluster: %s}\n", filepath.Join(dir, "eu"), leafName)
	}
	// The copycat reports the root's cluster_name; its trusted_cluster's
	// name sorts first.
	copycat, _ := startNamedCluster(t, clusterName, tc.root.ci, func(c *cluster) string {
		return fmt.Sprintf(rootResourcesYAML, c.login, c.ci.URL)
	})
	apply := func(t *testing.T, yaml string) result {
		path := filepath.Join(t.TempDir(), "tc.yaml")
		writeFile(t, path, yaml, 0o600)
		return mbot(t, baseEnv(tc.leaf.home), "apply", "-f", path, "--config", tc.leaf.config)
	}
	copycatYAML := func(pin string) string {
		return fmt.Sprintf("kind: trusted_cluster\nversion: v1\nmetadata: {name: aa-copycat}\nspec:\n  enabled: true\n  root: {url: %s, ca_pin: %s%s}\n  role_map:\n    - {remote: deploy, local: [leaf-deploy]}\n",
			copycat.url, copycat.pin, pin)
	}
	if res := apply(t, copycatYAML("")); res.code != 0 {
		t.Fatalf("applying the copycat's trust: %s", res)
	}
	issue := func(t *testing.T) result {
		dir := t.TempDir()
		extra := fmt.Sprintf("leaf_clusters:\n  - {name: %s, url: %s, ca_pin: %s}\n", leafName, tc.leaf.url, tc.leaf.pin)
		return tc.issue(t, tc.mbotYAML(t, dir, extra, leafOut(dir)), tokenDeployer)
	}

	t.Run("unpinned-collision-refused", func(t *testing.T) {
		wantExchangeRefused(t, issue(t), "root_name_collision", "aa-copycat, acme-root", "spec.root.cluster_name")
	})
	t.Run("pinned-root-wins", func(t *testing.T) {
		pinned := strings.Replace(fmt.Sprintf(trustedClusterYAML, "https://"+tc.proxy.Addr, tc.root.pin, true),
			"ca_pin: "+tc.root.pin, "ca_pin: "+tc.root.pin+", cluster_name: "+clusterName, 1)
		if res := apply(t, pinned); res.code != 0 {
			t.Fatalf("pinning the root's cluster_name: %s", res)
		}
		time.Sleep(300 * time.Millisecond)
		if res := issue(t); res.code != 0 {
			t.Fatalf("the real root's bot beside a copycat, its name pinned: %s", res)
		}
	})
	t.Run("second-pin-refused-at-apply", func(t *testing.T) {
		res := apply(t, copycatYAML(", cluster_name: "+clusterName))
		if res.code == 0 || !strings.Contains(res.stderr, "pins already") || !strings.Contains(res.stderr, rootTCName) {
			t.Errorf("applying a second trust pinning %s: %s, want a refusal naming %s", clusterName, res, rootTCName)
		}
	})
	t.Run("pinned-name-must-match", func(t *testing.T) {
		if res := apply(t, copycatYAML(", cluster_name: other.test")); res.code != 0 {
			t.Fatalf("applying: %s", res)
		}
		// The copycat's bot claims e2e.test, which acme-root pins: its
		// certificate is checked against the real root's CA, and refused.
		dir := t.TempDir()
		env := copycat.jobEnv(gitHubJob(t, copycat))
		config := filepath.Join(dir, "mbot.yaml")
		writeFile(t, config, fmt.Sprintf("authority: %s\nca_pin: %s\ntoken: %s\nttl: 1h\nleaf_clusters:\n  - {name: %s, url: %s, ca_pin: %s}\noutputs:\n  - {type: identity, destination: %s}\n%s",
			copycat.url, copycat.pin, tokenDeployer, leafName, tc.leaf.url, tc.leaf.pin, filepath.Join(dir, "root"), leafOut(dir)), 0o600)
		res := mbot(t, env, "issue", "--config", config)
		wantExchangeRefused(t, res, "exchange_invalid")
		wantNoOutput(t, dir, "root", "eu")
	})
}

// fakeLeaf plays a leaf authority on the root's tunnel: its tunnel
// identity and TLS CA are real (a leaf_cluster pins the CA), but it
// answers exchanges with CAs of its choice.
type fakeLeaf struct {
	caPEM, otherCAPEM string
	sshCA, otherSSHCA string
	ans               chan [2]string
	cur               [2]string
}

func (f *fakeLeaf) answer(tlsCA, sshCA string) { f.ans <- [2]string{tlsCA, sshCA} }

func newTestCA(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func newSSHCA(t *testing.T) string {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, err := ssh.NewPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
}

func startFakeLeaf(t *testing.T, tc *trustedClusters) *fakeLeaf {
	t.Helper()
	ca, caKey, caPEM := newTestCA(t, "fake-leaf TLS CA")
	_, _, otherPEM := newTestCA(t, "someone else's CA")
	f := &fakeLeaf{caPEM: caPEM, otherCAPEM: otherPEM, sshCA: newSSHCA(t), otherSSHCA: newSSHCA(t), ans: make(chan [2]string, 1)}
	sum := authority.CAPin(ca)
	path := filepath.Join(t.TempDir(), "lc.yaml")
	writeFile(t, path, fmt.Sprintf("kind: leaf_cluster\nversion: v1\nmetadata: {name: fake-leaf}\nspec: {ca_pin: %s}\n", sum), 0o600)
	mustMbot(t, baseEnv(tc.root.home), "apply", "-f", path, "--config", tc.root.config)
	time.Sleep(300 * time.Millisecond)

	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "fake-leaf"},
		URIs:      []*url.URL{{Scheme: "spiffe", Host: "fake-leaf", Path: identity.TunnelSPIFFEPath}},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert := &tls.Certificate{Certificate: [][]byte{der, ca.Raw}, PrivateKey: key}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+identity.PathClusterCA, func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(identity.ClusterCAResponse{ClusterName: "fake-leaf", TLSCA: caPEM, SSHHostCA: f.sshCA})
	})
	mux.HandleFunc("POST "+identity.PathTunnelLocks, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("POST "+identity.PathExchange, func(w http.ResponseWriter, r *http.Request) {
		select {
		case f.cur = <-f.ans:
		default:
		}
		_ = json.NewEncoder(w).Encode(identity.JoinResponse{ClusterName: "fake-leaf", Bot: "deployer", TLSCA: f.cur[0], SSHHostCA: f.cur[1],
			HostPatterns: []string{"*"}, Outputs: []identity.OutputResponse{{Name: "eu", Roles: []string{"x"}, Logins: []string{}}}})
	})
	rootURL, _ := url.Parse(tc.root.url)
	l := &tunnel.Leaf{RootURL: rootURL.String(), TLS: &tls.Config{InsecureSkipVerify: true}, Handler: mux,
		Certificate: func() (*tls.Certificate, error) { return cert, nil }, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go l.Run(ctx)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out := mustMbot(t, baseEnv(tc.root.home), "get", "leaf_clusters", "--config", tc.root.config).stdout
		if tunnelShown(out, "fake-leaf") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fake leaf's tunnel never attached:\n%s\nroot:\n%s", out, tc.rootAuth.logs)
		}
	}
	_ = os.Remove(path)
	return f
}

func tunnelShown(out, leaf string) bool {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == leaf && f[1] == "yes" {
			return true
		}
	}
	return false
}
