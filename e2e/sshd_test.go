package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sshServer is a real OpenSSH sshd, run as the current user, that trusts
// the cluster's SSH user CA and presents a host certificate from mbot sign.
type sshServer struct {
	port int
	ssh  string // path of the ssh client
	logs *syncBuffer
}

// startSSHD starts sshd in the foreground and stops it when the test ends.
func startSSHD(t *testing.T, c *cluster) *sshServer {
	t.Helper()
	return startSSHDWith(t, c, "")
}

// startSSHDWith is startSSHD with extra lines of sshd_config.
func startSSHDWith(t *testing.T, c *cluster, extra string) *sshServer {
	t.Helper()
	sshd := requireTool(t, "sshd", "/usr/sbin/sshd")
	s := &sshServer{ssh: requireTool(t, "ssh"), port: freePort(t)}

	dir := t.TempDir()
	hostDir := filepath.Join(dir, "host")
	mustMbot(t, baseEnv(c.home), "sign", "--config", c.config, "--host", "localhost,127.0.0.1", "--out", hostDir)
	userCA := filepath.Join(dir, "user_ca.pub")
	writeFile(t, userCA, c.export(t, "ssh-user-ca"), 0o644)

	cfg := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
HostCertificate %s
TrustedUserCAKeys %s
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
`, s.port, filepath.Join(hostDir, "key"), filepath.Join(hostDir, "key-cert.pub"), userCA, filepath.Join(dir, "sshd.pid")) + extra
	if os.Geteuid() == 0 {
		// root logs in only with PermitRootLogin, and sshd's privilege
		// separation needs its empty chroot directory.
		cfg += "PermitRootLogin yes\n"
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatalf("creating sshd's privilege separation directory: %v", err)
		}
	}
	cfgPath := filepath.Join(dir, "sshd_config")
	writeFile(t, cfgPath, cfg, 0o600)

	// sshd re-executes itself, so it must be started by absolute path.
	bg := startBackground(t, baseEnv(c.home), false, sshd, "-D", "-e", "-f", cfgPath)
	s.logs = bg.logs
	waitForPort(t, "127.0.0.1:"+strconv.Itoa(s.port), bg.exited, bg.logs)
	return s
}

// connect runs `ssh ... localhost echo mbot-ok` with opts before the host.
func (s *sshServer) connect(t *testing.T, c *cluster, opts ...string) result {
	t.Helper()
	args := slices.Concat(opts, []string{"-p", strconv.Itoa(s.port), "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
		"-o", "AddressFamily=inet", "-o", "ConnectTimeout=10", "localhost", "echo", "mbot-ok"})
	return run(t, baseEnv(c.home), s.ssh, args...)
}

// waitForLog waits briefly for sshd to log a line containing one of wants
// and returns the one it found, or "".
func (s *sshServer) waitForLog(wants ...string) string {
	deadline := time.Now().Add(3 * time.Second)
	for {
		logs := s.logs.String()
		for _, want := range wants {
			if strings.Contains(logs, want) {
				return want
			}
		}
		if time.Now().After(deadline) {
			return ""
		}
		time.Sleep(20 * time.Millisecond)
	}
}
