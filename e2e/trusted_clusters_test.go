package e2e

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/client"
	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/simci"
	"github.com/mbot-dev/mbot/internal/testservers"
)

// Trusted clusters (SPEC §8): a root authority whose bots exchange their
// root identity for certificates of a leaf authority, with its own data
// dir and CAs, straight at the leaf or relayed by the root over the
// leaf's tunnel.

const (
	leafName      = "leaf-eu"
	rootTCName    = "acme-root"
	tokenDeployer = "github-deployer"
	tokenOutsider = "github-outsider"
)

// rootResourcesYAML: bot deployer holds deploy and ci-build, which the
// leaf maps; outsider holds only other, which it does not; locker is for
// a token join whose bot gets locked.
const rootResourcesYAML = `kind: role
version: v1
metadata: {name: deploy}
spec: {logins: [%[1]q]}
---
kind: role
version: v1
metadata: {name: ci-build}
spec: {logins: [%[1]q]}
---
kind: role
version: v1
metadata: {name: other}
spec: {logins: [%[1]q]}
---
kind: bot
version: v1
metadata: {name: deployer}
spec: {roles: [deploy, ci-build]}
---
kind: bot
version: v1
metadata: {name: outsider}
spec: {roles: [other]}
---
kind: bot
version: v1
metadata: {name: locker}
spec: {roles: [deploy]}
---
kind: join_token
version: v1
metadata: {name: github-deployer}
spec:
  bot: deployer
  method: github
  github:
    issuer: %[2]s
    allow: [{repository: acme/app}]
---
kind: join_token
version: v1
metadata: {name: github-outsider}
spec:
  bot: outsider
  method: github
  github:
    issuer: %[2]s
    allow: [{repository: acme/app}]
`

const leafRolesYAML = `kind: role
version: v1
metadata: {name: leaf-deploy}
spec:
  logins: [%[1]q]
  max_ttl: 2h
  db_users: [ci_migrate]
  db_names: [orders]
  kubernetes_users: [deployer]
  kubernetes_groups: [deployers]
---
kind: role
version: v1
metadata: {name: ci-build}
spec: {logins: [%[1]q]}
---
`

const trustedClusterYAML = `kind: trusted_cluster
version: v1
metadata: {name: acme-root}
spec:
  enabled: %[3]t
  root: {url: %[1]s, ca_pin: %[2]s}
  role_map:
    - {remote: deploy, local: [leaf-deploy]}
    - {remote: "^ci-(.*)$", local: ["ci-$1"]}
`

// startNamedCluster starts an authority named name with the resources
// resources returns, beside ci (the platform the root trusts).
func startNamedCluster(t *testing.T, name string, ci *simci.Issuer, resources func(c *cluster) string) (*cluster, *background) {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	c := &cluster{ci: ci, config: filepath.Join(dir, "authority.yaml"), url: "https://" + addr, login: u.Username, home: t.TempDir()}
	writeFile(t, c.config, fmt.Sprintf(authorityYAML, name, addr, filepath.Join(dir, "data")), 0o600)
	writeFile(t, filepath.Join(dir, "bots.yaml"), resources(c), 0o600)
	auth := startBackground(t, baseEnv(c.home), true, mbotBin, "authority", "start", "--config", c.config)
	waitForPort(t, addr, auth.exited, auth.logs)
	c.pin = strings.TrimSpace(mustMbot(t, baseEnv(c.home), "authority", "export", "--type", "ca-pin", "--config", c.config).stdout)
	return c, auth
}

// trustedClusters is a root and a leaf that trusts it. The leaf reaches
// the root through proxy, which a test can cut to kill the tunnel.
type trustedClusters struct {
	root, leaf         *cluster
	rootAuth, leafAuth *background
	proxy              *testservers.TCPProxy
}

// startTrustedClusters starts the root, then the leaf with leafExtra's
// resources (if any) besides its roles and trusted_cluster.
func startTrustedClusters(t *testing.T, leafExtra func(c *cluster) string) *trustedClusters {
	t.Helper()
	ci, err := simci.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ci.Close() })
	tc := &trustedClusters{}
	tc.root, tc.rootAuth = startNamedCluster(t, clusterName, ci, func(c *cluster) string {
		return fmt.Sprintf(rootResourcesYAML, c.login, c.ci.URL)
	})
	tc.proxy = testservers.StartTCPProxy(t, strings.TrimPrefix(tc.root.url, "https://"))
	tc.leaf, tc.leafAuth = startNamedCluster(t, leafName, ci, func(c *cluster) string {
		extra := ""
		if leafExtra != nil {
			extra = leafExtra(c)
		}
		return fmt.Sprintf(leafRolesYAML, c.login) + extra + fmt.Sprintf(trustedClusterYAML, "https://"+tc.proxy.Addr, tc.root.pin, true)
	})
	// The root lets the leaf attach its tunnel.
	lc := filepath.Join(t.TempDir(), "leaf.yaml")
	writeFile(t, lc, fmt.Sprintf("kind: leaf_cluster\nversion: v1\nmetadata: {name: %s}\nspec: {ca_pin: %s}\n", leafName, tc.leaf.pin), 0o600)
	mustMbot(t, baseEnv(tc.root.home), "apply", "-f", lc, "--config", tc.root.config)
	tc.waitConnected(t, true)
	return tc
}

// waitConnected waits until mbot get leaf_clusters on the root says the
// leaf is (or is not) connected.
func (tc *trustedClusters) waitConnected(t *testing.T, want bool) string {
	t.Helper()
	var out string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		out = mustMbot(t, baseEnv(tc.root.home), "get", "leaf_clusters", "--config", tc.root.config).stdout
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && f[0] == leafName && (f[1] == "yes") == want {
				return out
			}
		}
	}
	t.Fatalf("mbot get leaf_clusters never showed %s connected=%v:\n%s\nroot:\n%s\nleaf:\n%s", leafName, want, out, tc.rootAuth.logs, tc.leafAuth.logs)
	return ""
}

// mbotYAML writes an mbot.yaml joining the root with a root identity
// output and leaf outputs, and returns its path.
func (tc *trustedClusters) mbotYAML(t *testing.T, dir, extra, leafOutputs string) string {
	t.Helper()
	path := filepath.Join(dir, "mbot.yaml")
	writeFile(t, path, fmt.Sprintf(`authority: %s
ca_pin: %s
token: %s
ttl: 1h
%soutputs:
  - {type: identity, destination: %s}
%s`, tc.root.url, tc.root.pin, tokenDeployer, extra, filepath.Join(dir, "root"), leafOutputs), 0o600)
	return path
}

func (tc *trustedClusters) issue(t *testing.T, config, token string) result {
	t.Helper()
	env := tc.root.jobEnv(gitHubJob(t, tc.root))
	return mbot(t, env, "issue", "--config", config, "--token", token)
}

func TestTrustedClusters(t *testing.T) {
	tc := startTrustedClusters(t, nil)
	leafOut := func(dir string) string {
		return fmt.Sprintf("  - {type: identity, destination: %s, cluster: %s}\n", filepath.Join(dir, "eu"), leafName)
	}

	t.Run("relay", func(t *testing.T) {
		// The client knows only the root's URL.
		dir := t.TempDir()
		res := tc.issue(t, tc.mbotYAML(t, dir, "", leafOut(dir)), tokenDeployer)
		if res.code != 0 {
			t.Fatalf("mbot issue: %s\nleaf:\n%s", res, tc.leafAuth.logs)
		}
		checkLeafIdentity(t, tc, dir)
		var relayed bool
		for _, ev := range auditEvents(t, tc.root, "relay") {
			relayed = relayed || ev.Allowed && ev.Bot == "deployer" && ev.Claims["leaf"] == leafName
		}
		if !relayed {
			t.Error("the root's audit log has no admitted relay of deployer to " + leafName)
		}
		var exchanged bool
		for _, ev := range auditEvents(t, tc.leaf, "exchange") {
			exchanged = exchanged || ev.Allowed && ev.Bot == "deployer" && ev.Claims["root_cluster"] == clusterName &&
				ev.Claims["remote_roles"] == "deploy,ci-build" && strings.Join(ev.Roles, ",") == "leaf-deploy,ci-build"
		}
		if !exchanged {
			t.Errorf("the leaf's audit log has no admitted exchange of deployer with its remote and mapped roles: %+v", auditEvents(t, tc.leaf, "exchange"))
		}
		wantLastExchangeFrom(t, tc, "tunnel from ")
	})

	t.Run("direct", func(t *testing.T) {
		dir := t.TempDir()
		extra := fmt.Sprintf("leaf_clusters:\n  - {name: %s, url: %s, ca_pin: %s}\n", leafName, tc.leaf.url, tc.leaf.pin)
		res := tc.issue(t, tc.mbotYAML(t, dir, extra, leafOut(dir)), tokenDeployer)
		if res.code != 0 {
			t.Fatalf("mbot issue: %s", res)
		}
		checkLeafIdentity(t, tc, dir)
		wantLastExchangeFrom(t, tc, "127.0.0.1:")

		// The output's authority: names the leaf; leaf_clusters gives only its pin.
		dir = t.TempDir()
		extra = fmt.Sprintf("leaf_clusters:\n  - {name: %s, ca_pin: %s}\n", leafName, tc.leaf.pin)
		out := fmt.Sprintf("  - {type: identity, destination: %s, cluster: %s, authority: %s}\n", filepath.Join(dir, "eu"), leafName, tc.leaf.url)
		if res := tc.issue(t, tc.mbotYAML(t, dir, extra, out), tokenDeployer); res.code != 0 {
			t.Fatalf("mbot issue with the output's authority: %s", res)
		}
		checkLeafIdentity(t, tc, dir)
		wantLastExchangeFrom(t, tc, "127.0.0.1:")
	})

	t.Run("ssh", func(t *testing.T) {
		sshd := startSSHD(t, tc.leaf) // trusts only the leaf's user CA
		dir := t.TempDir()
		res := tc.issue(t, tc.mbotYAML(t, dir, "", leafOut(dir)), tokenDeployer)
		if res.code != 0 {
			t.Fatalf("mbot issue: %s", res)
		}
		eu := filepath.Join(dir, "eu")
		if r := sshd.connect(t, tc.leaf, "-F", filepath.Join(eu, "ssh_config")); r.code != 0 || !strings.Contains(r.stdout, "mbot-ok") {
			t.Fatalf("ssh -F eu/ssh_config: %s\nsshd:\n%s", r, sshd.logs)
		}
		root := filepath.Join(dir, "root")
		// The root identity, with the leaf's known_hosts so that only the user certificate is in question.
		r := sshd.connect(t, tc.leaf, "-F", "none", "-i", filepath.Join(root, "key"), "-o", "CertificateFile="+filepath.Join(root, "key-cert.pub"),
			"-o", "UserKnownHostsFile="+filepath.Join(eu, "known_hosts"), "-o", "IdentitiesOnly=yes")
		if r.code == 0 || strings.Contains(r.stdout, "mbot-ok") {
			t.Fatalf("the root identity logged in to an sshd that trusts only the leaf's user CA: %s", r)
		}
	})

	t.Run("unmapped-role", func(t *testing.T) {
		dir := t.TempDir()
		res := tc.issue(t, tc.mbotYAML(t, dir, "", leafOut(dir)), tokenOutsider)
		wantExchangeRefused(t, res, "role_unmapped", "role other maps to no role on "+leafName, "add a role_map entry")
		wantNoOutput(t, dir, "root", "eu")
		var audited bool
		for _, ev := range auditEvents(t, tc.leaf, "exchange") {
			audited = audited || !ev.Allowed && ev.Code == "role_unmapped" && ev.Bot == "outsider" && ev.Claims["remote_roles"] == "other"
		}
		if !audited {
			t.Error("the leaf did not audit the refused exchange of outsider")
		}
	})

	t.Run("bot-locked-on-root", func(t *testing.T) {
		res := mustMbot(t, baseEnv(tc.root.home), "tokens", "add", "--bot", "locker", "--name", "locker-host", "--config", tc.root.config)
		var secret string
		for _, line := range strings.Split(res.stdout, "\n") {
			if v, ok := strings.CutPrefix(line, "MBOT_JOIN_SECRET="); ok {
				secret = v
			}
		}
		time.Sleep(300 * time.Millisecond) // the running root reads resources changed by others every 250ms
		dir := t.TempDir()
		out := filepath.Join(dir, "root")
		mustMbot(t, tc.root.jobEnv(map[string]string{"MBOT_JOIN_SECRET": secret}), "issue", "--authority", tc.root.url, "--ca-pin", tc.root.pin,
			"--token", "locker-host", "--join-method", "token", "--out", out)
		if err := exchangeWith(t, tc, out); err != nil {
			t.Fatalf("exchange before the lock: %v", err)
		}
		// A copy of the identity renews twice: the second presents a stale
		// generation, and the root locks the bot instance (the renewal chain).
		if err := renewWith(t, tc.root, out); err != nil {
			t.Fatal(err)
		}
		var refusal *identity.Error
		if err := renewWith(t, tc.root, out); !errors.As(err, &refusal) || refusal.Code != identity.CodeInstanceLocked {
			t.Fatalf("renewal with a stale generation: %v, want instance_locked", err)
		}
		var err error
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if err = exchangeWith(t, tc, out); errors.As(err, &refusal) && refusal.Code == identity.CodeInstanceLocked {
				break
			}
		}
		if !errors.As(err, &refusal) || refusal.Code != identity.CodeInstanceLocked || !strings.Contains(refusal.Message, "locked on root cluster "+clusterName) {
			t.Fatalf("exchange of a bot instance locked on the root: %v, want instance_locked", err)
		}
	})

	t.Run("admin-locks-on-root-reach-leaf", func(t *testing.T) {
		res := mustMbot(t, baseEnv(tc.root.home), "tokens", "add", "--bot", "locker", "--name", "locker-host-2", "--config", tc.root.config)
		var secret string
		for _, line := range strings.Split(res.stdout, "\n") {
			if v, ok := strings.CutPrefix(line, "MBOT_JOIN_SECRET="); ok {
				secret = v
			}
		}
		out := filepath.Join(t.TempDir(), "root")
		mustMbot(t, tc.root.jobEnv(map[string]string{"MBOT_JOIN_SECRET": secret}), "issue", "--authority", tc.root.url, "--ca-pin", tc.root.pin,
			"--token", "locker-host-2", "--join-method", "token", "--out", out)
		if err := exchangeWith(t, tc, out); err != nil {
			t.Fatalf("exchange before the lock: %v", err)
		}
		// refusedWithin waits for the leaf to refuse the exchange with code, at most 1 s.
		refusedWithin := func(code identity.ErrorCode, naming string) {
			t.Helper()
			start := time.Now()
			var err error
			var refusal *identity.Error
			for time.Since(start) < 3*time.Second {
				if err = exchangeWith(t, tc, out); errors.As(err, &refusal) && refusal.Code == code {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			took := time.Since(start)
			if !errors.As(err, &refusal) || refusal.Code != code || !strings.Contains(refusal.Message, naming) || !strings.Contains(refusal.Message, "root cluster "+clusterName) {
				t.Fatalf("exchange after a lock on the root: %v, want %s naming %q", err, code, naming)
			}
			if took > time.Second {
				t.Errorf("the leaf refused %s after %s, want within 1 s", code, took)
			}
			t.Logf("the leaf refused %s %s after the lock on the root", code, took.Round(time.Millisecond))
		}
		mustMbot(t, baseEnv(tc.root.home), "lock", "bot/locker", "--reason", "runner stolen", "--config", tc.root.config)
		refusedWithin(identity.CodeBotLocked, "runner stolen")
		mustMbot(t, baseEnv(tc.root.home), "unlock", "bot/locker", "--config", tc.root.config)
		var err error
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if err = exchangeWith(t, tc, out); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("exchange after the unlock on the root: %v", err)
		}
		mustMbot(t, baseEnv(tc.root.home), "lock", "cert/tls:"+tlsSerial(out), "--reason", "key copied", "--config", tc.root.config)
		refusedWithin(identity.CodeCertLocked, "key copied")
	})

	t.Run("daemon-renews-leaf-outputs", func(t *testing.T) {
		dir := t.TempDir()
		config := tc.mbotYAML(t, dir, "renewal_interval: 1s\n", leafOut(dir))
		d := startProc(t, tc.root.jobEnv(gitHubJob(t, tc.root)), mbotBin, "start", "--config", config)
		eu := filepath.Join(dir, "eu")
		first := waitForRenewal(t, d, eu, "")
		waitForRenewal(t, d, eu, first) // renewed with the renewed root identity
		d.running(t)
		checkLeafIdentity(t, tc, dir)
	})

	t.Run("tunnel-down-and-back", func(t *testing.T) {
		tc.proxy.Cut()
		tc.waitConnected(t, false)
		dir := t.TempDir()
		config := tc.mbotYAML(t, dir, "", leafOut(dir))
		res := tc.issue(t, config, tokenDeployer)
		wantExchangeRefused(t, res, "leaf_unreachable", "leaf cluster "+leafName+" is not connected", "last seen")
		wantNoOutput(t, dir, "root", "eu")

		tc.proxy.Restore(t) // the leaf redials by itself
		tc.waitConnected(t, true)
		if res := tc.issue(t, config, tokenDeployer); res.code != 0 {
			t.Fatalf("mbot issue after the tunnel came back: %s", res)
		}
		checkLeafIdentity(t, tc, dir)
	})

	t.Run("trust-disabled", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "tc.yaml")
		writeFile(t, path, fmt.Sprintf(trustedClusterYAML, "https://"+tc.proxy.Addr, tc.root.pin, false), 0o600)
		mustMbot(t, baseEnv(tc.leaf.home), "apply", "-f", path, "--config", tc.leaf.config)
		dir := t.TempDir()
		res := tc.issue(t, tc.mbotYAML(t, dir, fmt.Sprintf("leaf_clusters:\n  - {name: %s, url: %s, ca_pin: %s}\n", leafName, tc.leaf.url, tc.leaf.pin), leafOut(dir)), tokenDeployer)
		wantExchangeRefused(t, res, "trust_disabled", "enabled: false")
		mustMbot(t, baseEnv(tc.leaf.home), "rm", "trusted_cluster/"+rootTCName, "--config", tc.leaf.config)
		time.Sleep(300 * time.Millisecond)
		res = tc.issue(t, tc.mbotYAML(t, dir, fmt.Sprintf("leaf_clusters:\n  - {name: %s, url: %s, ca_pin: %s}\n", leafName, tc.leaf.url, tc.leaf.pin), leafOut(dir)), tokenDeployer)
		wantExchangeRefused(t, res, "unknown_root", "trusts no root cluster")
	})
}

// checkLeafIdentity checks dir/eu: a leaf identity of bot deployer under
// the mapped roles, signed by the leaf's CAs, no longer-lived than dir/root.
func checkLeafIdentity(t *testing.T, tc *trustedClusters, dir string) {
	t.Helper()
	eu, root := filepath.Join(dir, "eu"), filepath.Join(dir, "root")
	sum := readSummary(t, eu)
	if sum.Cluster != leafName || sum.Bot != "deployer" || strings.Join(sum.Roles, ",") != "leaf-deploy,ci-build" {
		t.Errorf("eu/identity.json: cluster %q bot %q roles %v, want %s deployer [leaf-deploy ci-build]", sum.Cluster, sum.Bot, sum.Roles, leafName)
	}
	// The same CAs; their order (the signing one first) is the phase's of
	// the moment, should the leaf's TLS CA be in rotation.
	if got, want := pemBlocks(readFile(t, filepath.Join(eu, "ca.crt"))), pemBlocks(tc.leaf.export(t, "tls-ca")); !slices.Equal(got, want) {
		t.Errorf("eu/ca.crt is not the leaf's TLS CA:\n%s\nwant:\n%s", got, want)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(tc.leaf.export(t, "tls-ca")))
	leafCert := parseCertChain(t, filepath.Join(eu, "tls.crt"))[0]
	if _, err := leafCert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("eu/tls.crt does not verify against the leaf's TLS CA: %v", err)
	}
	rootCert := parseCertChain(t, filepath.Join(root, "tls.crt"))[0]
	if leafCert.NotAfter.After(rootCert.NotAfter) {
		t.Errorf("the leaf certificate (until %s) outlives the root identity (until %s)", leafCert.NotAfter, rootCert.NotAfter)
	}
	if !strings.Contains(readFile(t, filepath.Join(eu, "known_hosts")), strings.TrimSpace(tc.leaf.export(t, "ssh-host-ca"))) {
		t.Error("eu/known_hosts does not trust the leaf's SSH host CA")
	}
	if got := parseSSHCert(t, filepath.Join(eu, "key-cert.pub")).ValidBefore; time.Unix(int64(got), 0).After(rootCert.NotAfter) {
		t.Error("the leaf SSH certificate outlives the root identity")
	}
}

// wantLastExchangeFrom checks that the leaf's last exchange came from
// remote: the root's tunnel, or a client's address when it came direct.
func wantLastExchangeFrom(t *testing.T, tc *trustedClusters, remote string) {
	t.Helper()
	evs := auditEvents(t, tc.leaf, "exchange")
	if len(evs) == 0 || !evs[len(evs)-1].Allowed || !strings.HasPrefix(evs[len(evs)-1].Remote, remote) {
		t.Errorf("the leaf's last exchange is not an admitted one from %s...: %+v", remote, evs[len(evs)-1:])
	}
}

// wantExchangeRefused checks that mbot issue failed with code and hints.
func wantExchangeRefused(t *testing.T, res result, code string, hints ...string) {
	t.Helper()
	if res.code == 0 {
		t.Fatalf("mbot issue succeeded, want %s: %s", code, res)
	}
	for _, want := range append([]string{"(" + code + ")"}, hints...) {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("mbot issue's error does not say %q: %s", want, res.stderr)
		}
	}
}

// wantNoOutput checks that a failed run left none of outputs in dir: the
// root's identity is not written when a leaf's exchange fails.
func wantNoOutput(t *testing.T, dir string, outputs ...string) {
	t.Helper()
	for _, o := range outputs {
		if _, err := os.Stat(filepath.Join(dir, o)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("a failed mbot issue left %s behind (%v)", filepath.Join(dir, o), err)
		}
	}
}

// exchangeWith exchanges the root identity in dir for one leaf identity
// output through the root's relay, as mbot issue does.
func exchangeWith(t *testing.T, tc *trustedClusters, dir string) error {
	t.Helper()
	req := signedExchange(t, dir, "eu")
	api, err := client.NewAPI(tc.root.url, tc.root.pin)
	if err != nil {
		t.Fatal(err)
	}
	defer api.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	return api.Do(ctx, http.MethodPost, identity.PathRelay(leafName), req, nil)
}

// signedExchange is an exchange of the root identity in dir for one leaf
// output named output, signed as mbot issue signs it.
func signedExchange(t *testing.T, dir, output string) *identity.ExchangeRequest {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := identity.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	req, err := identity.NewExchange(&identity.ExchangePayload{Cluster: leafName, Time: time.Now(), TTLSeconds: 600,
		Outputs: []identity.OutputRequest{{Name: output, SSHPublicKey: keys.SSHPublicKey(), TLSPublicKey: keys.TLSPublicKeyPEM()}}},
		readFile(t, filepath.Join(dir, "tls.crt")), cert.PrivateKey.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// pemBlocks are the PEM blocks of data, sorted.
func pemBlocks(data string) []string {
	var out []string
	for rest := []byte(data); ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		out = append(out, string(pem.EncodeToMemory(block)))
	}
	slices.Sort(out)
	return out
}
