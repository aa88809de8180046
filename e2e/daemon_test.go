package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/admin"
	"github.com/mbot-dev/mbot/client"
	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/simci"
)

// The daemon tests run mbot start with certificates of one minute renewed
// every two seconds, so that several renewals happen within a test.
const (
	daemonTTL      = "1m"
	daemonInterval = "2s"
	// renewalWait bounds how long a renewal that is due may take to show.
	renewalWait = 15 * time.Second
)

// proc is a long-running subprocess that a test stops, restarts or signals
// itself (startBackground's processes must outlive the test).
type proc struct {
	name   string
	cmd    *exec.Cmd
	logs   *syncBuffer
	exited chan struct{}
	err    error // set when exited is closed
}

// startProc starts name; it is killed at the end of the test if still running.
func startProc(t *testing.T, env []string, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: args[0], logs: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(name, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.exited:
			case <-time.After(15 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.exited
			}
		}
		if t.Failed() {
			t.Logf("output of mbot %s:\n%s", p.name, p.logs)
		}
	})
	return p
}

// stop sends sig and returns the exit code; the process must exit within 10s.
func (p *proc) stop(t *testing.T, sig syscall.Signal) int {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signalling mbot %s: %v", p.name, err)
	}
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("mbot %s did not exit within 10s of %v:\n%s", p.name, sig, p.logs)
	}
	var exitErr *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &exitErr) && exitErr.Exited():
		return exitErr.ExitCode()
	}
	t.Fatalf("mbot %s ended by %v:\n%s", p.name, p.err, p.logs)
	return -1
}

func (p *proc) running(t *testing.T) {
	t.Helper()
	select {
	case <-p.exited:
		t.Fatalf("mbot %s exited: %v\n%s", p.name, p.err, p.logs)
	default:
	}
}

// daemonCluster is the e2e cluster with an authority the test can stop
// and start again on the same data_dir and port.
type daemonCluster struct {
	*cluster
	addr string
	auth *proc
}

func startDaemonCluster(t *testing.T) *daemonCluster {
	t.Helper()
	c, dir, addr := newCluster(t)
	projectID := simci.CircleCIClaims(circleOrgID)["oidc.circleci.com/project-id"].(string)
	writeFile(t, c.config, fmt.Sprintf(authorityYAML, clusterName, addr, filepath.Join(dir, "data")), 0o600)
	writeFile(t, filepath.Join(dir, "bots.yaml"), fmt.Sprintf(botsYAML, roleName, botName, c.login,
		tokenGitHub, tokenGitLab, tokenCircleCI, c.ci.URL, circleOrgID, projectID), 0o600)
	dc := &daemonCluster{cluster: c, addr: addr}
	dc.startAuthority(t)
	c.pin = strings.TrimSpace(c.export(t, "ca-pin"))
	return dc
}

func (dc *daemonCluster) startAuthority(t *testing.T) {
	t.Helper()
	dc.auth = startProc(t, baseEnv(dc.home), mbotBin, "authority", "start", "--config", dc.config)
	waitForPort(t, dc.addr, dc.auth.exited, dc.auth.logs)
}

// startDaemon runs mbot start for join token into out with a short TTL and
// renewal interval and a health endpoint, and returns it with the
// endpoint's URL.
func (dc *daemonCluster) startDaemon(t *testing.T, env []string, token, out string, extra ...string) (*proc, string) {
	t.Helper()
	healthAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	args := append([]string{"start", "--authority", dc.url, "--ca-pin", dc.pin, "--token", token, "--out", out,
		"--ttl", daemonTTL, "--renewal-interval", daemonInterval, "--health-addr", healthAddr}, extra...)
	d := startProc(t, env, mbotBin, args...)
	waitForPort(t, healthAddr, d.exited, d.logs)
	return d, "http://" + healthAddr + "/healthz"
}

// healthz reads the daemon's health endpoint.
func healthz(t *testing.T, url string) (int, client.HealthReport) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var r client.HealthReport
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("GET %s: body is not a health report: %v", url, err)
	}
	return resp.StatusCode, r
}

// waitFor polls cond until it holds or renewalWait passes.
func waitFor(t *testing.T, what string, d *proc, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(renewalWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s, still waiting for %s\ndaemon:\n%s", renewalWait, what, d.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tlsSerial is the TLS serial that identity.json in dir names ("" if none).
func tlsSerial(dir string) string {
	data, err := os.ReadFile(filepath.Join(dir, "identity.json"))
	if err != nil {
		return ""
	}
	var sum identity.Summary
	if json.Unmarshal(data, &sum) != nil {
		return ""
	}
	return sum.Serials.TLS
}

// waitForRenewal waits until dir holds an identity other than the one of serial.
func waitForRenewal(t *testing.T, d *proc, dir, serial string) string {
	t.Helper()
	var now string
	waitFor(t, "a renewal of "+dir, d, func() bool {
		now = tlsSerial(dir)
		return now != "" && now != serial
	})
	return now
}

// generation is the renewal generation of the certificate in dir.
func generation(t *testing.T, dir string) uint64 {
	t.Helper()
	certs := parseCertChain(t, filepath.Join(dir, "tls.crt"))
	l, err := identity.LineageOf(certs[0])
	if err != nil {
		t.Fatalf("%s/tls.crt: %v", dir, err)
	}
	return l.Generation
}

// copyIdentity copies the identity in dir as it is at one moment: the
// daemon may swap the directory between two reads, so the copy is taken
// again until its key and certificate belong together.
func copyIdentity(t *testing.T, dir string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	for range 20 {
		before := tlsSerial(dir)
		if err := os.MkdirAll(dst, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, name := range identityFiles {
			data, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(dst, name), string(data), 0o600)
		}
		_, err := tls.LoadX509KeyPair(filepath.Join(dst, "tls.crt"), filepath.Join(dst, "tls.key"))
		if err == nil && before != "" && tlsSerial(dir) == before && tlsSerial(dst) == before {
			return dst
		}
	}
	t.Fatalf("could not copy a consistent identity out of %s", dir)
	return ""
}

// renewWith presents the identity in dir on POST /v1/renew, as a thief
// holding a copy of it would, with fresh keys of its own.
func renewWith(t *testing.T, c *cluster, dir string) error {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(readFile(t, filepath.Join(dir, "ca.crt"))))
	api, err := client.NewAPIWithIdentity(c.url, roots, cert)
	if err != nil {
		t.Fatal(err)
	}
	defer api.CloseIdleConnections()
	keys, err := identity.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	return api.Do(ctx, http.MethodPost, identity.PathRenew, &identity.RenewRequest{TTLSeconds: 600, Outputs: []identity.OutputRequest{
		{Name: "identity", SSHPublicKey: keys.SSHPublicKey(), TLSPublicKey: keys.TLSPublicKeyPEM()}}}, nil)
}

// TestDaemonRenews runs mbot start for a token join, which renews with its
// own certificate, and for a GitHub join, which joins again each time.
func TestDaemonRenews(t *testing.T) {
	dc := startDaemonCluster(t)

	t.Run("token", func(t *testing.T) {
		name, secret := addToken(t, dc.cluster, "--name", "runner-renews")
		out := filepath.Join(t.TempDir(), "mbot")
		d, health := dc.startDaemon(t, tokenJobEnv(dc.cluster, secret), name, out, "--join-method", "token")

		first := waitForRenewal(t, d, out, "")
		sum := checkIdentity(t, dc.cluster, out, name, "token")
		if lifetime := time.Until(sum.NotAfter); lifetime > time.Minute+time.Second || lifetime < 50*time.Second {
			t.Errorf("identity valid for %s, want the --ttl of 1m", lifetime.Round(time.Second))
		}
		gen := generation(t, out)
		second := waitForRenewal(t, d, out, first)
		third := waitForRenewal(t, d, out, second)
		if g := generation(t, out); g < gen+2 {
			t.Errorf("after two renewals the certificate is of generation %d, was %d", g, gen)
		}
		checkIdentity(t, dc.cluster, out, name, "token")
		if strings.Contains(d.logs.String(), secret) {
			t.Errorf("mbot start logged the join secret")
		}
		if key := parseSSHCert(t, filepath.Join(out, "key-cert.pub")).KeyId; !strings.Contains(key, "generation=") {
			t.Errorf("SSH key ID %q does not name the generation", key)
		}

		code, r := healthz(t, health)
		if code != http.StatusOK || r.Status != client.HealthOK || r.LastError != "" || r.LastRenewal == nil || r.NotAfter == nil {
			t.Fatalf("/healthz answered %d %+v, want 200 ok", code, r)
		}
		if since := time.Since(*r.LastRenewal); since > 5*time.Second {
			t.Errorf("/healthz last_renewal %s ago, with a renewal every 2s", since)
		}
		if until := time.Until(*r.NotAfter); until < 50*time.Second || until > time.Minute+time.Second {
			t.Errorf("/healthz not_after in %s, want about a minute", until)
		}

		// The single-use secret joined once; every renewal after it is a renewal.
		var joins, renewals int
		for _, ev := range auditEvents(t, dc.cluster, "join") {
			if ev.JoinToken == name {
				joins++
			}
		}
		for _, ev := range auditEvents(t, dc.cluster, "renew") {
			if ev.JoinToken == name && ev.Allowed && ev.Bot == botName && ev.Method == "token" && ev.Claims["generation"] != "" {
				renewals++
			}
		}
		if joins != 1 || renewals < 2 {
			t.Errorf("audit log: %d joins and %d renewals of %s, want 1 join and at least 2 renewals", joins, renewals, name)
		}
		t.Logf("serials %s → %s → %s", first, second, third)
		if code := d.stop(t, syscall.SIGTERM); code != 0 {
			t.Errorf("mbot start exited %d on SIGTERM:\n%s", code, d.logs)
		}
	})

	t.Run("github", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "mbot")
		d, health := dc.startDaemon(t, dc.jobEnv(gitHubJob(t, dc.cluster)), tokenGitHub, out)
		first := waitForRenewal(t, d, out, "")
		checkIdentity(t, dc.cluster, out, tokenGitHub, "github")
		waitForRenewal(t, d, out, first)
		checkIdentity(t, dc.cluster, out, tokenGitHub, "github")
		if code, r := healthz(t, health); code != http.StatusOK || r.Status != client.HealthOK {
			t.Errorf("/healthz answered %d %+v", code, r)
		}
		var joins int
		for _, ev := range auditEvents(t, dc.cluster, "join") {
			if ev.JoinToken == tokenGitHub && ev.Allowed {
				joins++
			}
		}
		if joins < 2 {
			t.Errorf("%d admitted GitHub joins, want one per renewal", joins)
		}
		if code := d.stop(t, syscall.SIGTERM); code != 0 {
			t.Errorf("mbot start exited %d on SIGTERM:\n%s", code, d.logs)
		}
	})
}

// TestDaemonSurvivesAuthorityRestart stops the authority under a running
// daemon: the daemon keeps its valid credentials, says it is retrying, and
// renews again once the authority is back on the same data_dir and port.
func TestDaemonSurvivesAuthorityRestart(t *testing.T) {
	dc := startDaemonCluster(t)
	name, secret := addToken(t, dc.cluster, "--name", "runner-restart")
	out := filepath.Join(t.TempDir(), "mbot")
	d, health := dc.startDaemon(t, tokenJobEnv(dc.cluster, secret), name, out, "--join-method", "token")
	serial := waitForRenewal(t, d, out, waitForRenewal(t, d, out, ""))

	if code := dc.auth.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("the authority exited %d on SIGTERM:\n%s", code, dc.auth.logs)
	}
	stoppedAt := time.Now()
	waitFor(t, "the daemon to report a failed renewal", d, func() bool {
		code, r := healthz(t, health)
		return code == http.StatusOK && r.Status == client.HealthRetrying && strings.Contains(r.LastError, "cannot reach the authority")
	})
	// Several retries later, the credentials are still there and still valid.
	waitFor(t, "three failed renewals in the log", d, func() bool {
		return strings.Count(d.logs.String(), "renewal failed") >= 3
	})
	d.running(t)
	if got := tlsSerial(out); got != serial && got != "" {
		// A renewal may have completed just before the stop.
		serial = got
	}
	sum := checkIdentity(t, dc.cluster, out, name, "token")
	if !time.Now().Before(sum.NotAfter) {
		t.Fatalf("the identity expired while the authority was down")
	}
	if !strings.Contains(d.logs.String(), "the current credentials stay in place") {
		t.Errorf("the daemon's log does not say the credentials stay:\n%s", d.logs)
	}
	t.Logf("authority down for %s", time.Since(stoppedAt).Round(time.Millisecond))

	dc.startAuthority(t)
	waitForRenewal(t, d, out, serial)
	waitFor(t, "the daemon to report healthy", d, func() bool {
		code, r := healthz(t, health)
		return code == http.StatusOK && r.Status == client.HealthOK && r.LastError == ""
	})
	checkIdentity(t, dc.cluster, out, name, "token")
	if code := d.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("mbot start exited %d on SIGTERM:\n%s", code, d.logs)
	}
}

const daemonMbotYAML = `authority: %s
ca_pin: %s
token: %s
join_method: token
ttl: %s
renewal_interval: 30m
outputs:
%s`

// TestDaemonSignals: SIGHUP reloads mbot.yaml and renews at once; SIGTERM
// and SIGINT exit 0 and leave the outputs; a restarted token daemon renews
// what it left without a new secret.
func TestDaemonSignals(t *testing.T) {
	dc := startDaemonCluster(t)
	name, secret := addToken(t, dc.cluster, "--name", "runner-signals")
	dir := t.TempDir()
	outA, outB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	config := filepath.Join(dir, "mbot.yaml")
	writeConfig := func(ttl string, outs ...string) {
		var list strings.Builder
		for _, o := range outs {
			fmt.Fprintf(&list, "  - {type: identity, destination: %s}\n", o)
		}
		writeFile(t, config, fmt.Sprintf(daemonMbotYAML, dc.url, dc.pin, name, ttl, list.String()), 0o600)
	}
	writeConfig("1h", outA)
	healthAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	args := []string{"start", "--config", config, "--health-addr", healthAddr}
	d := startProc(t, tokenJobEnv(dc.cluster, secret), mbotBin, args...)
	waitForPort(t, healthAddr, d.exited, d.logs)
	serial := waitForRenewal(t, d, outA, "")
	if life := time.Until(readSummary(t, outA).NotAfter); life < 55*time.Minute || life > time.Hour+time.Minute {
		t.Errorf("identity valid for %s, want the 1h of mbot.yaml", life)
	}

	t.Run("sighup-reloads", func(t *testing.T) {
		writeConfig("2h", outA, outB)
		if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		serial = waitForRenewal(t, d, outA, serial) // at once, not after renewal_interval's 30m
		waitFor(t, "the output added to mbot.yaml", d, func() bool { return tlsSerial(outB) != "" })
		for _, out := range []string{outA, outB} {
			sum := checkIdentity(t, dc.cluster, out, name, "token")
			if life := time.Until(sum.NotAfter); life < 115*time.Minute || life > 2*time.Hour+time.Minute {
				t.Errorf("%s valid for %s after the reload, want the new ttl of 2h", out, life)
			}
		}
		if !strings.Contains(d.logs.String(), "reloaded the settings") {
			t.Errorf("the daemon's log does not mention the reload:\n%s", d.logs)
		}
	})

	t.Run("sighup-bad-config", func(t *testing.T) {
		writeFile(t, config, "outputs: [{destination: "+outA+", colour: red}]\n", 0o600)
		if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		serial = waitForRenewal(t, d, outA, serial) // still renews, with the previous settings
		if logs := d.logs.String(); !strings.Contains(logs, "keeping the previous ones") || !strings.Contains(logs, "colour") {
			t.Errorf("the daemon's log does not explain the refused reload:\n%s", logs)
		}
		if tlsSerial(outB) == "" {
			t.Errorf("the second output is gone")
		}
		d.running(t)
	})

	t.Run("sigterm", func(t *testing.T) {
		before := tlsSerial(outA)
		if code := d.stop(t, syscall.SIGTERM); code != 0 {
			t.Fatalf("mbot start exited %d on SIGTERM:\n%s", code, d.logs)
		}
		for _, out := range []string{outA, outB} {
			checkIdentity(t, dc.cluster, out, name, "token")
		}
		if tlsSerial(outA) != before {
			t.Errorf("the outputs changed at shutdown")
		}
		if !strings.Contains(d.logs.String(), "stopping; the outputs stay in place") {
			t.Errorf("the daemon's log does not say it stops:\n%s", d.logs)
		}
	})

	t.Run("restart-without-secret-then-sigint", func(t *testing.T) {
		// The secret is spent; the daemon renews the identity it left.
		writeConfig("1h", outA)
		d := startProc(t, dc.jobEnv(nil), mbotBin, "start", "--config", config, "--renewal-interval", "2s")
		serial = waitForRenewal(t, d, outA, serial)
		checkIdentity(t, dc.cluster, outA, name, "token")
		if !strings.Contains(d.logs.String(), "found valid credentials from an earlier run") {
			t.Errorf("the daemon did not say it resumed:\n%s", d.logs)
		}
		if code := d.stop(t, syscall.SIGINT); code != 0 {
			t.Fatalf("mbot start exited %d on SIGINT:\n%s", code, d.logs)
		}
		checkIdentity(t, dc.cluster, outA, name, "token")
	})
}

// chainOf returns the bot instance (renewal chain) of the identity in dir.
func chainOf(t *testing.T, dir string) string {
	t.Helper()
	l, err := identity.LineageOf(parseCertChain(t, filepath.Join(dir, "tls.crt"))[0])
	if err != nil {
		t.Fatalf("%s/tls.crt: %v", dir, err)
	}
	return l.Chain
}

// TestDaemonLockout runs two daemons of one bot (two token joins, two
// instances), copies one daemon's identity, lets that daemon renew, and
// presents the copy: the authority locks that instance only, refuses its
// daemon's next renewal and records which runner it is, while the other
// daemon and other join methods of the bot go on; mbot get bot_instances
// shows the states; mbot unlock bot_instance/ID lifts the lock, after which
// neither the daemon nor the copy of that instance renews, the other
// instance still does, and a new secret joins.
func TestDaemonLockout(t *testing.T) {
	dc := startDaemonCluster(t)
	name, secret := addToken(t, dc.cluster, "--name", "runner-lockout")
	otherName, otherSecret := addToken(t, dc.cluster, "--name", "runner-bystander")
	out := filepath.Join(t.TempDir(), "mbot")
	otherOut := filepath.Join(t.TempDir(), "mbot")
	d, health := dc.startDaemon(t, tokenJobEnv(dc.cluster, secret), name, out, "--join-method", "token")
	other, otherHealth := dc.startDaemon(t, tokenJobEnv(dc.cluster, otherSecret), otherName, otherOut, "--join-method", "token")
	waitForRenewal(t, d, out, "")
	otherSerial := waitForRenewal(t, other, otherOut, "")
	instance, otherInstance := chainOf(t, out), chainOf(t, otherOut)
	if instance == otherInstance {
		t.Fatalf("two token joins share instance %s", instance)
	}

	stolen := copyIdentity(t, out)
	stolenGen := generation(t, stolen)
	waitForRenewal(t, d, out, tlsSerial(stolen))
	if g := generation(t, out); g <= stolenGen {
		t.Fatalf("the daemon's certificate is of generation %d, the copy's %d", g, stolenGen)
	}
	lockedAt := time.Now()
	env := baseEnv(dc.home)
	adminDir := filepath.Join(filepath.Dir(dc.config), "data", "admin")

	t.Run("stale-copy-refused", func(t *testing.T) {
		err := renewWith(t, dc.cluster, stolen)
		var refusal *identity.Error
		if !errors.As(err, &refusal) || refusal.Code != identity.CodeInstanceLocked {
			t.Fatalf("renewal with the stale copy: %v, want instance_locked", err)
		}
		for _, want := range []string{botName, "first joined", "mbot unlock bot_instance/" + instance, "mbot tokens add --bot " + botName, "other instances keep renewing"} {
			if !strings.Contains(refusal.Message, want) {
				t.Errorf("refusal %q does not mention %q", refusal.Message, want)
			}
		}
	})

	t.Run("daemon-refused", func(t *testing.T) {
		waitFor(t, "the daemon's renewal to be refused", d, func() bool {
			code, r := healthz(t, health)
			return code == http.StatusOK && r.Status == client.HealthRetrying && strings.Contains(r.LastError, "instance_locked")
		})
		d.running(t)
		checkIdentity(t, dc.cluster, out, name, "token") // still there and valid
	})

	t.Run("other-instance-renews", func(t *testing.T) {
		otherSerial = waitForRenewal(t, other, otherOut, waitForRenewal(t, other, otherOut, otherSerial))
		if code, r := healthz(t, otherHealth); code != http.StatusOK || r.Status != client.HealthOK {
			t.Errorf("the other daemon reports %d %+v", code, r)
		}
		checkIdentity(t, dc.cluster, otherOut, otherName, "token")
	})

	t.Run("issue-admitted", func(t *testing.T) {
		if res := dc.issue(t, dc.jobEnv(gitHubJob(t, dc.cluster)), tokenGitHub, filepath.Join(t.TempDir(), "mbot")); res.code != 0 {
			t.Fatalf("mbot issue of a bot with a locked instance: %s", res)
		}
	})

	t.Run("listed", func(t *testing.T) {
		res := mustMbot(t, env, "get", "bot_instances", "--auth", adminDir, botName)
		for _, line := range strings.Split(res.stdout, "\n") {
			switch {
			case strings.HasPrefix(line, instance):
				if !strings.Contains(line, name) || !strings.HasSuffix(strings.TrimSpace(line), "locked") || !strings.Contains(line, "127.0.0.1") {
					t.Errorf("instance %s is listed as %q, want locked, join token %s, runner 127.0.0.1", instance, line, name)
				}
			case strings.HasPrefix(line, otherInstance):
				if !strings.Contains(line, otherName) || !strings.HasSuffix(strings.TrimSpace(line), "active") {
					t.Errorf("instance %s is listed as %q, want active", otherInstance, line)
				}
			}
		}
		var list []admin.BotInstance
		if err := json.Unmarshal([]byte(mustMbot(t, env, "get", "bot_instances", "--config", dc.config, "-o", "json").stdout), &list); err != nil {
			t.Fatal(err)
		}
		states := map[string]string{}
		for _, in := range list {
			states[in.ID] = in.State
			if in.ID == otherInstance && (in.LastRenewal.IsZero() || in.Generation < 3) {
				t.Errorf("the other instance has not renewed: %+v", in)
			}
		}
		if states[instance] != "locked" || states[otherInstance] != "active" {
			t.Errorf("mbot get bot_instances -o json: states %v, want %s locked and %s active", states, instance, otherInstance)
		}
	})

	t.Run("audited", func(t *testing.T) {
		var lockout, daemon bool
		for _, ev := range auditEvents(t, dc.cluster, "renew") {
			if ev.Allowed || ev.Code != "instance_locked" || ev.Bot != botName || ev.JoinToken != name || ev.Time.Before(lockedAt.Add(-time.Second)) {
				continue
			}
			if ev.Claims["generation"] == fmt.Sprint(stolenGen) && ev.Claims["instance"] == instance && strings.Contains(ev.Message, "first joined") {
				lockout = true
			} else {
				daemon = true
			}
		}
		if !lockout || !daemon {
			t.Errorf("audit log lacks the lockout (%v) or the daemon's refused renewal (%v):\n%+v", lockout, daemon, auditEvents(t, dc.cluster, "renew"))
		}
		var lockEvent bool
		for _, ev := range auditEvents(t, dc.cluster, "bot_instance.lock") {
			lockEvent = lockEvent || (ev.Bot == botName && ev.JoinToken == name && ev.Claims["instance"] == instance &&
				strings.HasPrefix(ev.Claims["runner"], "127.0.0.1:") && ev.Claims["first_join"] != "")
		}
		if !lockEvent {
			t.Errorf("audit log lacks the bot_instance.lock record naming the runner: %+v", auditEvents(t, dc.cluster, "bot_instance.lock"))
		}
		if !strings.Contains(dc.auth.logs.String(), "locked a bot instance") {
			t.Errorf("the authority did not log the lockout:\n%s", dc.auth.logs)
		}
	})

	t.Run("unlock", func(t *testing.T) {
		if res := mbot(t, env, "unlock", "--auth", adminDir, "nobody"); res.code != 1 || !strings.Contains(res.stderr, `no bot named "nobody"`) {
			t.Errorf("mbot unlock of an unknown bot: %s", res)
		}
		if res := mbot(t, env, "unlock", "--auth", adminDir, "bot_instance/"+otherInstance); res.code != 1 || !strings.Contains(res.stderr, "is not locked") {
			t.Errorf("mbot unlock of an instance that is not locked: %s", res)
		}
		res := mustMbot(t, env, "unlock", "--config", dc.config, "bot_instance/"+instance)
		for _, want := range []string{"unlocked instance " + instance, "join tokens " + name, "other instances keep renewing", "mbot tokens add --bot " + botName} {
			if !strings.Contains(res.stdout, want) {
				t.Errorf("mbot unlock printed %q, which does not mention %q", res.stdout, want)
			}
		}
		if res := mbot(t, env, "unlock", "--auth", adminDir, "-o", "json", "--instance", instance); res.code != 1 || !strings.Contains(res.stderr, "no bot instance") {
			t.Errorf("mbot unlock of an instance unlocked already: %s", res)
		}
		if res := mbot(t, env, "unlock", "--auth", adminDir, botName); res.code != 1 || !strings.Contains(res.stderr, "has no locked instance") {
			t.Errorf("mbot unlock of a bot with nothing locked: %s", res)
		}

		// Neither the daemon nor the copy renews; the running authority
		// read the unlock from the store. The other daemon renews on.
		waitFor(t, "the daemon's renewal to be refused as unlocked", d, func() bool {
			_, r := healthz(t, health)
			return r.Status == client.HealthRetrying && strings.Contains(r.LastError, "renewal_refused") && strings.Contains(r.LastError, "unlocked")
		})
		err := renewWith(t, dc.cluster, stolen)
		var refusal *identity.Error
		if !errors.As(err, &refusal) || refusal.Code != identity.CodeRenewalRefused || !strings.Contains(refusal.Message, "mbot tokens add --bot "+botName) {
			t.Errorf("renewal with the stale copy after the unlock: %v, want renewal_refused", err)
		}
		otherSerial = waitForRenewal(t, other, otherOut, otherSerial)
		for _, p := range []*proc{d, other} {
			if code := p.stop(t, syscall.SIGTERM); code != 0 {
				t.Errorf("mbot start exited %d on SIGTERM", code)
			}
		}
		var unlocked bool
		for _, ev := range auditEvents(t, dc.cluster, "bot_instance.unlock") {
			unlocked = unlocked || (ev.Bot == botName && ev.JoinToken == name && ev.Claims["instance"] == instance && strings.HasPrefix(ev.Remote, "local admin"))
		}
		if !unlocked {
			t.Errorf("the audit log lacks the unlock: %+v", auditEvents(t, dc.cluster, "bot_instance.unlock"))
		}
		if res := mustMbot(t, env, "audit", "--config", dc.config, "--bot", botName); !strings.Contains(res.stdout, "bot_instance.unlock") {
			t.Errorf("mbot audit does not list the unlock:\n%s", res.stdout)
		}

		// A new secret joins and renews.
		name, secret := addToken(t, dc.cluster, "--name", "runner-after-unlock")
		out := filepath.Join(t.TempDir(), "mbot")
		d, _ := dc.startDaemon(t, tokenJobEnv(dc.cluster, secret), name, out, "--join-method", "token")
		waitForRenewal(t, d, out, waitForRenewal(t, d, out, ""))
		if code := d.stop(t, syscall.SIGTERM); code != 0 {
			t.Errorf("mbot start exited %d on SIGTERM", code)
		}
	})
}

// TestDaemonExpired lets a token daemon's credentials expire while the
// authority is down: /healthz answers 503, the daemon keeps running and
// retrying, leaves the files alone, and says that only a new secret helps.
// Everything is set through MBOT_* variables.
func TestDaemonExpired(t *testing.T) {
	dc := startDaemonCluster(t)
	name, secret := addToken(t, dc.cluster, "--name", "runner-expires")
	out := filepath.Join(t.TempDir(), "mbot")
	healthAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	d := startProc(t, dc.jobEnv(map[string]string{
		"MBOT_AUTHORITY": dc.url, "MBOT_CA_PIN": dc.pin, "MBOT_TOKEN": name, "MBOT_JOIN_METHOD": "token",
		"MBOT_JOIN_SECRET": secret, "MBOT_OUT": out, "MBOT_TTL": "4s", "MBOT_RENEWAL_INTERVAL": "1s",
		"MBOT_HEALTH_ADDR": healthAddr,
	}), mbotBin, "start")
	waitForPort(t, healthAddr, d.exited, d.logs)
	health := "http://" + healthAddr + "/healthz"
	waitForRenewal(t, d, out, waitForRenewal(t, d, out, ""))

	if code := dc.auth.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("the authority exited %d on SIGTERM", code)
	}
	waitFor(t, "/healthz to answer 503 expired", d, func() bool {
		code, r := healthz(t, health)
		return code == http.StatusServiceUnavailable && r.Status == client.HealthExpired && r.NotAfter != nil && r.LastError != ""
	})
	d.running(t)
	if tlsSerial(out) == "" {
		t.Fatalf("the daemon removed the expired identity")
	}

	dc.startAuthority(t)
	waitFor(t, "the daemon to explain that the expired identity needs a new secret", d, func() bool {
		_, r := healthz(t, health)
		return strings.Contains(r.LastError, "proof_replayed") && strings.Contains(r.LastError, "only a new secret can join again")
	})
	if code, r := healthz(t, health); code != http.StatusServiceUnavailable || r.Status != client.HealthExpired {
		t.Errorf("/healthz answered %d %+v, want 503 expired", code, r)
	}
	if !strings.Contains(d.logs.String(), "the credentials have expired") {
		t.Errorf("the daemon's log does not say the credentials expired:\n%s", d.logs)
	}
	if code := d.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("mbot start exited %d on SIGTERM", code)
	}
}

// TestDaemonRefusesBadSettings: settings the daemon cannot run with stop it
// at once, naming what to change; nothing is joined.
func TestDaemonRefusesBadSettings(t *testing.T) {
	home := t.TempDir()
	out := filepath.Join(t.TempDir(), "mbot")
	base := []string{"start", "--authority", "https://127.0.0.1:1", "--token", "t", "--out", out}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"interval-not-below-ttl", []string{"--ttl", "1m", "--renewal-interval", "1m"}, []string{"--renewal-interval", "shorter than --ttl"}},
		{"interval-too-short", []string{"--renewal-interval", "10ms"}, []string{"too short"}},
		{"health-addr-invalid", []string{"--health-addr", "256.0.0.1:9090"}, []string{"--health-addr"}},
		{"arguments", []string{"extra"}, []string{"takes no arguments"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := mbot(t, baseEnv(home), append(base, tc.args...)...)
			if res.code == 0 {
				t.Fatalf("mbot start %v succeeded", tc.args)
			}
			for _, w := range tc.want {
				if !strings.Contains(res.stderr, w) {
					t.Errorf("stderr does not mention %q:\n%s", w, res)
				}
			}
			if _, err := os.Stat(out); err == nil {
				t.Errorf("mbot start with bad settings wrote %s", out)
			}
		})
	}
}

// TestDaemonWaitsForFreshProof renews a pod's identity: the kubelet hands
// out the same projected token until it rewrites it, and the authority
// accepts a token once. The daemon does not send the token its last join
// used (which would be refused and audited as a replay); it keeps the
// valid credentials, says why it waits, and joins as soon as the token is
// rewritten.
func TestDaemonWaitsForFreshProof(t *testing.T) {
	dc := startDaemonCluster(t)
	applyCloudTokens(t, dc.cluster)

	tokenFile := filepath.Join(t.TempDir(), "token")
	rewrite := func() {
		writeFile(t, tokenFile, mint(t, dc.cluster, simci.KubernetesClaims(), clusterName, nil)+"\n", 0o600)
	}
	rewrite()
	env := dc.jobEnv(map[string]string{
		"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", "MBOT_KUBERNETES_TOKEN_PATH": tokenFile,
	})
	out := filepath.Join(t.TempDir(), "mbot")
	d, health := dc.startDaemon(t, env, "kubernetes-e2e", out)
	first := waitForRenewal(t, d, out, "")
	checkIdentity(t, dc.cluster, out, "kubernetes-e2e", "kubernetes")

	const waiting = "the kubernetes proof is the one the last join used"
	waitFor(t, "the daemon to say it waits for a fresh token", d, func() bool { return strings.Contains(d.logs.String(), waiting) })
	if now := tlsSerial(out); now != first {
		t.Errorf("the identity changed from %s to %s with no new token", first, now)
	}
	if code, r := healthz(t, health); code != http.StatusOK || r.Status != client.HealthOK {
		t.Errorf("/healthz answered %d %+v while the credentials are valid", code, r)
	}

	rewrite() // the kubelet rewrites the token
	waitForRenewal(t, d, out, first)
	checkIdentity(t, dc.cluster, out, "kubernetes-e2e", "kubernetes")

	var joins int
	for _, ev := range auditEvents(t, dc.cluster, "join") {
		if ev.JoinToken != "kubernetes-e2e" {
			continue
		}
		if !ev.Allowed {
			t.Errorf("audit log: a refused join (%s): %s", ev.Code, ev.Message)
		}
		joins++
	}
	if joins != 2 {
		t.Errorf("audit log: %d joins of kubernetes-e2e, want 2 (one per token)", joins)
	}
	if code := d.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("mbot start exited %d on SIGTERM:\n%s", code, d.logs)
	}
}
