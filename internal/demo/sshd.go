package demo

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/mbot-dev/mbot/identity"
)

// demoHost is the name the job logs in to: one of the demo's host_patterns,
// dialled at 127.0.0.1, and the principal of the sshd's host certificate.
const demoHost = "web1.demo.mbot"

// sshdPath is where OpenSSH's sshd lives; it re-executes itself, so it must
// be started by absolute path.
const sshdPath = "/usr/sbin/sshd"

// currentLogin is the name of the user running the demo, which the demo's
// bot is granted as a login so that it logs in as that user. It is "" when
// the name is not a valid POSIX user name (the login is then skipped).
func currentLogin() (string, error) {
	u, err := user.Current()
	if err != nil {
		return "", fmt.Errorf("finding the current user: %w", err)
	}
	if err := identity.CheckLogin("the current user name", u.Username); err != nil {
		return "", err
	}
	return u.Username, nil
}

// sshServer is a real OpenSSH sshd on loopback that trusts the authority's
// SSH user CA and presents a host certificate signed by its SSH host CA.
type sshServer struct {
	Port int
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{}
	// privsep is /run/sshd when the demo created it (running as root).
	privsep string
}

// findSSH returns the paths of sshd and ssh, or why the login cannot run.
func findSSH() (sshd, sshClient string, err error) {
	if runtime.GOOS == "windows" {
		return "", "", errors.New("the demo does not start sshd on Windows")
	}
	sshd = sshdPath
	if _, err := os.Stat(sshd); err != nil {
		if sshd, err = exec.LookPath("sshd"); err != nil {
			return "", "", fmt.Errorf("sshd is not installed (no %s, none in PATH)", sshdPath)
		}
	}
	if sshClient, err = exec.LookPath("ssh"); err != nil {
		return "", "", errors.New("the ssh client is not installed (none in PATH)")
	}
	return sshd, sshClient, nil
}

// startSSHD starts sshd in dir with the host key and certificate in
// hostDir, trusting the SSH user CA userCA.
func startSSHD(sshd, dir, hostDir, userCA string) (*sshServer, error) {
	userCAPath := filepath.Join(dir, "user_ca.pub")
	if err := os.WriteFile(userCAPath, []byte(userCA), 0o644); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &sshServer{Port: port, logs: &syncBuffer{}, done: make(chan struct{})}
	// StrictModes is off: the files live in a temporary directory.
	cfg := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
HostCertificate %s
TrustedUserCAKeys %s
AuthorizedKeysFile none
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
PidFile %s
PrintMotd no
PrintLastLog no
UseDNS no
`, port, filepath.Join(hostDir, "key"), filepath.Join(hostDir, "key-cert.pub"), userCAPath, filepath.Join(dir, "sshd.pid"))
	if os.Geteuid() == 0 {
		// sshd's privilege separation needs its empty chroot directory.
		if _, err := os.Stat("/run/sshd"); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
				return nil, fmt.Errorf("creating sshd's privilege separation directory: %w", err)
			}
			s.privsep = "/run/sshd"
		}
	}
	cfgPath := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	s.cmd = exec.Command(sshd, "-D", "-e", "-f", cfgPath)
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	// A session sshd forked (a login by hand under --keep) may hold the log
	// pipe open after sshd is stopped: do not wait for it.
	s.cmd.WaitDelay = time.Second
	if err := s.cmd.Start(); err != nil {
		s.removePrivsep()
		return nil, fmt.Errorf("starting %s: %w", sshd, err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for deadline := time.Now().Add(5 * time.Second); ; {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return s, nil
		}
		select {
		case <-s.done:
			s.removePrivsep()
			return nil, fmt.Errorf("sshd exited: %s", bytes.TrimSpace(s.logs.Bytes()))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Close()
			return nil, fmt.Errorf("sshd did not listen on %s within 5s: %s", addr, bytes.TrimSpace(s.logs.Bytes()))
		}
	}
}

// Close stops sshd and waits for it to exit.
func (s *sshServer) Close() {
	_ = s.cmd.Process.Kill()
	<-s.done
	s.removePrivsep()
}

func (s *sshServer) removePrivsep() {
	if s.privsep != "" {
		_ = os.Remove(s.privsep) // only if still empty
	}
}

// sshArgs are the arguments of the ssh client that logs in to the demo's
// sshd with the identity's ssh_config: the host name matches the demo's
// host_patterns (and the host certificate), dialled at 127.0.0.1.
func sshArgs(sshConfig string, port int, command string) []string {
	return []string{"-F", sshConfig, "-o", "Hostname=127.0.0.1", "-o", "HostKeyAlias=" + demoHost, "-p", strconv.Itoa(port),
		"-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", demoHost, command}
}

// remoteCommand is what the demo runs on its server.
const remoteCommand = "echo hello from $(hostname) as $(whoami)"

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// syncBuffer collects sshd's log for an error message.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.b.Bytes())
}
