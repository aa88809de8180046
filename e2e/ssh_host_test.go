package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// The bot of sshHostYAML: it may certify hosts under ci.acme.internal and
// log in to them as the OS user.
const (
	hostBot     = "vm-bot"
	hostRole    = "ci-hosts"
	hostLogin   = "ci-login"
	tokenHost   = "github-vm"
	hostName    = "web1.ci.acme.internal"
	hostPattern = "*.ci.acme.internal"
)

// sshHostAuthorityYAML is authorityYAML whose identities also trust the
// host CA for the names the bot's ssh_host outputs certify.
const sshHostAuthorityYAML = `cluster_name: %s
listen: %s
data_dir: %s
resources: [bots.yaml]
ssh:
  host_patterns: [localhost, "` + hostPattern + `"]
`

const sshHostYAML = `kind: role
version: v1
metadata: {name: ` + hostRole + `}
spec:
  host_names: ["` + hostPattern + `"]
---
kind: role
version: v1
metadata: {name: ` + hostLogin + `}
spec:
  logins: [%[1]s]
---
kind: bot
version: v1
metadata: {name: ` + hostBot + `}
spec:
  roles: [` + hostRole + `, ` + hostLogin + `]
---
kind: join_token
version: v1
metadata: {name: ` + tokenHost + `}
spec:
  bot: ` + hostBot + `
  method: github
  github:
    issuer: %[2]s
    allow:
      - repository: acme/app
`

// startSSHHostCluster is startCluster with sshHostAuthorityYAML and sshHostYAML.
func startSSHHostCluster(t *testing.T) *cluster {
	t.Helper()
	c, dir, addr := newCluster(t)
	writeFile(t, c.config, fmt.Sprintf(sshHostAuthorityYAML, clusterName, addr, filepath.Join(dir, "data")), 0o600)
	writeFile(t, filepath.Join(dir, "bots.yaml"), fmt.Sprintf(sshHostYAML, c.login, c.ci.URL), 0o600)
	auth := startBackground(t, baseEnv(c.home), true, mbotBin, "authority", "start", "--config", c.config)
	waitForPort(t, addr, auth.exited, auth.logs)
	c.pin = strings.TrimSpace(c.export(t, "ca-pin"))
	return c
}

const sshHostMbotYAML = `authority: %s
ca_pin: %s
token: ` + tokenHost + `
outputs:
  - type: identity
    destination: %s
    roles: [` + hostLogin + `]
  - type: ssh_host
    destination: %s
    host_names: [` + hostName + `]
`

// TestSSHHostOutput: one mbot issue writes an identity and an ssh_host
// output; a real sshd configured with nothing but the ssh_host output's
// sshd_config.snippet presents its host certificate and admits the
// identity, which OpenSSH's ssh accepts by the certified name alone with
// StrictHostKeyChecking=yes. A name outside the role's host_names is
// refused at issue time: exit 1, a message naming the field, an audit
// record, no files.
func TestSSHHostOutput(t *testing.T) {
	c := startSSHHostCluster(t)
	work := t.TempDir()
	idDir, hostDir := filepath.Join(work, "id"), filepath.Join(work, "host")
	config := filepath.Join(work, "mbot.yaml")
	writeFile(t, config, fmt.Sprintf(sshHostMbotYAML, c.url, c.pin, idDir, hostDir), 0o644)

	vars := gitHubJob(t, c)
	vars["MBOT_CONFIG"] = config
	res := mbot(t, c.jobEnv(vars), "issue")
	if res.code != 0 {
		t.Fatalf("mbot issue: %s", res)
	}
	if want := "SSH host certificate for " + hostName; !strings.Contains(res.stderr, want) {
		t.Errorf("mbot issue does not say %q:\n%s", want, res.stderr)
	}
	for name, mode := range map[string]os.FileMode{"ssh_host": 0o600, "ssh_host.pub": 0o644, "ssh_host-cert.pub": 0o644,
		"ssh_host-user-ca.pub": 0o644, "sshd_config.snippet": 0o644, "ssh_host.json": 0o644} {
		st, err := os.Stat(filepath.Join(hostDir, name))
		if err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: %v, mode %v, want %o", name, err, st, mode)
		}
	}
	cert := parseSSHCert(t, filepath.Join(hostDir, "ssh_host-cert.pub"))
	if cert.CertType != ssh.HostCert || !slices.Equal(cert.ValidPrincipals, []string{hostName}) ||
		!strings.Contains(cert.KeyId, "bot="+hostBot+" join_token="+tokenHost+" output=host type=ssh_host") {
		t.Errorf("ssh_host-cert.pub: type %d principals %v key ID %q", cert.CertType, cert.ValidPrincipals, cert.KeyId)
	}
	if got, want := strings.TrimSpace(readFile(t, filepath.Join(hostDir, "ssh_host-user-ca.pub"))), strings.TrimSpace(c.export(t, "ssh-user-ca")); got != want {
		t.Errorf("ssh_host-user-ca.pub %q, want the exported ssh-user-ca %q", got, want)
	}
	evs := auditEvents(t, c, "join")
	if ev := evs[len(evs)-1]; !ev.Allowed || !slices.Contains(ev.Outputs, "host type=ssh_host host_names="+hostName) {
		t.Errorf("audit record %+v", ev)
	}

	srv := startHostSSHD(t, c, filepath.Join(hostDir, "sshd_config.snippet"))
	connect := func(alias string) result {
		return run(t, baseEnv(c.home), srv.ssh, "-F", filepath.Join(idDir, "ssh_config"), "-p", strconv.Itoa(srv.port),
			"-o", "Hostname=127.0.0.1", "-o", "HostKeyAlias="+alias, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
			"-o", "ConnectTimeout=10", hostName, "echo", "mbot-ok")
	}
	t.Run("ssh-by-name", func(t *testing.T) {
		res := connect(hostName)
		if res.code != 0 || strings.TrimSpace(res.stdout) != "mbot-ok" {
			t.Fatalf("ssh to %s with the identity output: %s\nsshd:\n%s", hostName, res, srv.logs)
		}
		if want := "join_token=" + tokenHost; srv.waitForLog(want) == "" {
			t.Errorf("sshd did not log a certificate login with %q:\n%s", want, srv.logs)
		}
	})
	t.Run("another-name", func(t *testing.T) {
		// The same server reached as a name its certificate does not carry.
		res := connect("web2.ci.acme.internal")
		if res.code == 0 || strings.Contains(res.stdout, "mbot-ok") {
			t.Fatalf("ssh accepted the host certificate of %s for web2.ci.acme.internal: %s", hostName, res)
		}
		if !strings.Contains(res.stderr, "Host key verification failed") {
			t.Errorf("ssh failed, but not on the host key: %s", res)
		}
	})

	t.Run("renewed-and-reloaded", func(t *testing.T) {
		// What mbot start does at each renewal: the destination is replaced
		// by a new key and certificate; sshd, sent SIGHUP, presents them.
		vars := gitHubJob(t, c)
		vars["MBOT_CONFIG"] = config
		if res := mbot(t, c.jobEnv(vars), "issue"); res.code != 0 {
			t.Fatalf("mbot issue again: %s", res)
		}
		renewed := parseSSHCert(t, filepath.Join(hostDir, "ssh_host-cert.pub"))
		if renewed.Serial == cert.Serial {
			t.Fatal("the second mbot issue wrote the same host certificate")
		}
		presented := func() string {
			res := run(t, baseEnv(c.home), srv.ssh, "-v", "-F", filepath.Join(idDir, "ssh_config"), "-p", strconv.Itoa(srv.port),
				"-o", "Hostname=127.0.0.1", "-o", "HostKeyAlias="+hostName, "-o", "BatchMode=yes", hostName, "true")
			if res.code != 0 {
				t.Fatalf("ssh after renewal: %s\nsshd:\n%s", res, srv.logs)
			}
			for line := range strings.Lines(res.stderr) {
				if _, after, ok := strings.Cut(line, "Server host certificate: "); ok {
					return after
				}
			}
			t.Fatalf("ssh -v did not show the server's host certificate:\n%s", res.stderr)
			return ""
		}
		// Whether sshd presents the new files before a reload depends on
		// its version (9.2's per-connection re-exec reads them again); only
		// a reload is sure to, so only that is checked.
		before := presented()
		t.Logf("before SIGHUP sshd presents the first certificate: %t", strings.Contains(before, fmt.Sprintf("serial %d ", cert.Serial)))
		srv.reload(t)
		if got, want := presented(), fmt.Sprintf("serial %d ", renewed.Serial); !strings.Contains(got, want) {
			t.Errorf("after SIGHUP sshd presents %s, want the renewed certificate (%s)", got, want)
		}
	})

	t.Run("host-names-flag", func(t *testing.T) {
		// Without mbot.yaml, --host-names makes the one output an ssh_host output.
		dir := filepath.Join(t.TempDir(), "host")
		res := c.issue(t, c.jobEnv(gitHubJob(t, c)), tokenHost, dir, "--host-names", "WEB3.ci.acme.internal,web4.ci.acme.internal")
		if res.code != 0 {
			t.Fatalf("mbot issue --host-names: %s", res)
		}
		want := []string{"web3.ci.acme.internal", "web4.ci.acme.internal"}
		if cert := parseSSHCert(t, filepath.Join(dir, "ssh_host-cert.pub")); cert.CertType != ssh.HostCert || !slices.Equal(cert.ValidPrincipals, want) {
			t.Errorf("ssh_host-cert.pub: type %d principals %v, want a host certificate for %v", cert.CertType, cert.ValidPrincipals, want)
		}
		if _, err := os.Stat(filepath.Join(dir, "identity.json")); err == nil {
			t.Error("an ssh_host output also wrote an identity")
		}
	})

	t.Run("name-not-granted", func(t *testing.T) {
		for _, name := range []string{"a." + hostName, "auth.acme.internal"} {
			parent := t.TempDir()
			res := c.issue(t, c.jobEnv(gitHubJob(t, c)), tokenHost, filepath.Join(parent, "host"), "--host-names", name)
			if res.code != 1 {
				t.Fatalf("mbot issue --host-names %s: exit %d, want 1: %s", name, res.code, res)
			}
			for _, want := range []string{"role_denied", `grants host name "` + name + `"`, "host_names"} {
				if !strings.Contains(res.stderr, want) {
					t.Errorf("stderr does not mention %q:\n%s", want, res.stderr)
				}
			}
			wantEmpty(t, parent)
			evs := auditEvents(t, c, "join")
			if ev := evs[len(evs)-1]; ev.Allowed || ev.Code != "role_denied" || ev.Bot != hostBot || !strings.Contains(ev.Message, name) || len(ev.Serials) != 0 {
				t.Errorf("audit record %+v", ev)
			}
		}
	})
}

// startHostSSHD starts a real sshd, as the current user, whose host key,
// host certificate and trusted user CA come from an ssh_host output's
// sshd_config.snippet, included as it is.
func startHostSSHD(t *testing.T, c *cluster, snippet string) *hostSSHD {
	t.Helper()
	sshd := requireTool(t, "sshd", "/usr/sbin/sshd")
	s := &sshServer{ssh: requireTool(t, "ssh"), port: freePort(t)}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`Include %s
Port %d
ListenAddress 127.0.0.1
AuthorizedKeysFile none
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
StrictModes no
PidFile %s
PrintMotd no
PrintLastLog no
UseDNS no
`, snippet, s.port, filepath.Join(dir, "sshd.pid"))
	if os.Geteuid() == 0 {
		cfg += "PermitRootLogin yes\n"
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatalf("creating sshd's privilege separation directory: %v", err)
		}
	}
	cfgPath := filepath.Join(dir, "sshd_config")
	writeFile(t, cfgPath, cfg, 0o600)
	bg := startBackground(t, baseEnv(c.home), false, sshd, "-D", "-e", "-f", cfgPath)
	s.logs = bg.logs
	waitForPort(t, "127.0.0.1:"+strconv.Itoa(s.port), bg.exited, bg.logs)
	return &hostSSHD{sshServer: s, proc: bg}
}

// hostSSHD is an sshd of startHostSSHD and its process, to signal.
type hostSSHD struct {
	*sshServer
	proc *background
}

// reload sends sshd SIGHUP, as a reload hook after a renewal would, and
// waits until it listens again: it closes its socket and re-executes.
func (s *hostSSHD) reload(t *testing.T) {
	t.Helper()
	const listening = "Server listening on"
	before := strings.Count(s.logs.String(), listening)
	if err := s.proc.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(s.logs.String(), listening) <= before {
		if time.Now().After(deadline) {
			t.Fatalf("sshd did not listen again within 10s of SIGHUP:\n%s", s.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hostSerial is the serial ssh_host.json in dir names (0 if none).
func hostSerial(dir string) uint64 {
	data, err := os.ReadFile(filepath.Join(dir, "ssh_host.json"))
	if err != nil {
		return 0
	}
	var sum struct {
		Serial uint64 `json:"serial"`
	}
	if json.Unmarshal(data, &sum) != nil {
		return 0
	}
	return sum.Serial
}

// TestSSHHostDaemon: mbot start keeps an ssh_host output fresh beside its
// identity output; sshd, reloaded after a renewal, presents the renewed
// host certificate and admits the renewed identity.
func TestSSHHostDaemon(t *testing.T) {
	c := startSSHHostCluster(t)
	work := t.TempDir()
	idDir, hostDir := filepath.Join(work, "id"), filepath.Join(work, "host")
	config := filepath.Join(work, "mbot.yaml")
	writeFile(t, config, fmt.Sprintf(sshHostMbotYAML, c.url, c.pin, idDir, hostDir), 0o644)

	d := startProc(t, c.jobEnv(c.ci.GitHubEnv()), mbotBin, "start", "--config", config, "--ttl", daemonTTL, "--renewal-interval", daemonInterval)
	var first uint64
	waitFor(t, "the first ssh_host output", d, func() bool { first = hostSerial(hostDir); return first != 0 })
	srv := startHostSSHD(t, c, filepath.Join(hostDir, "sshd_config.snippet"))
	waitFor(t, "a renewal of the ssh_host output", d, func() bool { s := hostSerial(hostDir); return s != 0 && s != first })
	srv.reload(t)
	res := run(t, baseEnv(c.home), srv.ssh, "-v", "-F", filepath.Join(idDir, "ssh_config"), "-p", strconv.Itoa(srv.port),
		"-o", "Hostname=127.0.0.1", "-o", "HostKeyAlias="+hostName, "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", hostName, "echo", "mbot-ok")
	if res.code != 0 || strings.TrimSpace(res.stdout) != "mbot-ok" {
		t.Fatalf("ssh after a renewal and SIGHUP: %s\nsshd:\n%s", res, srv.logs)
	}
	if strings.Contains(res.stderr, fmt.Sprintf("serial %d ", first)) || !strings.Contains(res.stderr, "Server host certificate: ") {
		t.Errorf("sshd presents the first host certificate (serial %d) after a renewal and SIGHUP:\n%s", first, res.stderr)
	}
	d.running(t)
}
