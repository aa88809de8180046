//go:build linux

// Package testservers starts the real servers that mbot's outputs are for
// (PostgreSQL, MariaDB, etcd with kube-apiserver, nginx) on loopback, for
// tests only: each Start function returns a handle with the connection
// details and stops the server when the test ends (t.Cleanup).
//
// The servers come from Debian's packages (postgresql, mariadb-server,
// etcd-server, nginx) and, for kube-apiserver, from a build of the Go
// module that .ci/run caches (.ci/build-kube-apiserver). A missing server
// skips the test on a developer machine and fails it in CI (CI=true),
// where .ci/run installs everything.
//
// TLS material is the caller's: each server is started with the server
// certificate, key and client CA that the test passes as PEM, so a test can
// start a server with what `mbot sign` wrote and connect with what
// `mbot issue` wrote, using only the stock client (psql, mariadb, kubectl,
// curl). For example:
//
//	pg := testservers.StartPostgres(t, testservers.PostgresConfig{
//		ServerCert: crt, ServerKey: key, ClientCA: ca, // from mbot sign --format postgres
//		HBA: []string{"hostssl all all 127.0.0.1/32 cert"},
//	})
//	pg.Exec(t, "CREATE ROLE ci_migrate LOGIN")
//	out, err := pg.Psql(t, []string{"PGSERVICEFILE=" + db + "/pg_service.conf", "PGSERVICE=prod-pg"},
//		"-X", "-A", "-t", "-c", "SELECT current_user")
//
// Each server starts in a few seconds (kube-apiserver in about 5 to 10);
// start one per test and share it between subtests.
package testservers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/internal/skipreport"
)

// startTimeout bounds how long a server may take to become ready.
const startTimeout = 60 * time.Second

// require finds an executable by name in PATH or at one of the given paths.
// A missing one skips the test, or fails it when CI=true.
func require(t testing.TB, name, pkg string, paths ...string) string {
	t.Helper()
	for _, p := range paths {
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs
		}
		return p
	}
	missing(t, fmt.Sprintf("%s is not installed (install the Debian package %s, or run .ci/run)", name, pkg))
	return ""
}

// missing skips the test with msg, or fails it in CI, where .ci/run has
// installed every server.
func missing(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	skipreport.Skip(t, msg)
}

// freePort is FreePort.
func freePort(t testing.TB) int { return FreePort(t) }

// account is the unprivileged user a server runs as. When the test runs as
// root (as CI does), PostgreSQL and MariaDB refuse to run as root and run
// as their Debian user; otherwise they run as the test's own user.
type account struct {
	name     string
	uid, gid int
	cred     *syscall.Credential // nil: run as the test's user
}

func serverAccount(t testing.TB, name, pkg string) account {
	t.Helper()
	if os.Geteuid() != 0 {
		u, err := user.Current()
		if err != nil {
			t.Fatalf("looking up the current user: %v", err)
		}
		return account{name: u.Username, uid: os.Geteuid(), gid: os.Getegid()}
	}
	u, err := user.Lookup(name)
	if err != nil {
		missing(t, fmt.Sprintf("user %s does not exist (the Debian package %s creates it; run .ci/run)", name, pkg))
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return account{name: name, uid: uid, gid: gid,
		cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
}

// dir makes a fresh directory that a owns (mode 0700) in the system's
// temporary directory: not under t.TempDir, whose parent other users cannot
// enter. It is removed when the test ends, after the server using it has
// stopped (cleanups run last in, first out, so call this before starting
// the server).
func (a account) dir(t testing.TB, prefix string) string {
	t.Helper()
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o700); err != nil {
		t.Fatal(err)
	}
	a.chown(t, d)
	return d
}

func (a account) chown(t testing.TB, path string) {
	t.Helper()
	if a.cred == nil {
		return
	}
	if err := os.Lchown(path, a.uid, a.gid); err != nil {
		t.Fatalf("chown %s to %s: %v", path, a.name, err)
	}
}

// mkdir makes a directory owned by a, mode 0700.
func (a account) mkdir(t testing.TB, path string) {
	t.Helper()
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	a.chown(t, path)
}

// writeFile writes content to path with mode, owned by a: servers demand
// that their private key is theirs and not readable by others.
func (a account) writeFile(t testing.TB, path string, content []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, content, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	a.chown(t, path)
}

// command is exec.Command run as a, in dir.
func (a account) command(dir, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: a.cred, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// mustRun runs cmd to completion and fails the test with its output when it
// fails.
func mustRun(t testing.TB, what string, cmd *exec.Cmd) string {
	t.Helper()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %s: %v\n%s", what, cmd, err, out)
	}
	return string(out)
}

// process is a server running in the foreground of a child process.
type process struct {
	name   string
	cmd    *exec.Cmd
	logs   *logBuffer
	exited chan struct{} // closed when the process has exited
	err    error         // its exit status, once exited is closed
}

// startProcess starts cmd and, when the test ends, sends it stop (then
// SIGKILL after 10 s) and waits for it; on failure its output is logged.
func startProcess(t testing.TB, name string, cmd *exec.Cmd, stop syscall.Signal) *process {
	t.Helper()
	p := &process{name: name, cmd: cmd, logs: &logBuffer{}, exited: make(chan struct{})}
	cmd.Stdout = p.logs
	cmd.Stderr = p.logs
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL // never outlive the test binary
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Signal(stop)
			select {
			case <-p.exited:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-p.exited
			}
		}
		if t.Failed() {
			t.Logf("output of %s:\n%s", name, p.logs)
		}
	})
	return p
}

// waitUntil polls ready until it returns nil, the process exits or the
// start timeout passes; the last two fail the test with the process output.
func (p *process) waitUntil(t testing.TB, ready func(context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := ready(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-p.exited:
			t.Fatalf("%s exited before it was ready (%v):\n%s", p.name, p.err, p.logs)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s was not ready after %s: %v\n%s", p.name, startTimeout, err, p.logs)
		}
	}
}

// listening is a readiness check: something accepts TCP connections on addr.
func listening(addr string) func(context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// logBuffer collects a process's output; safe for concurrent writes.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// clientEnv is the environment for a stock client run by a test: only PATH,
// a fresh HOME (so no ~/.pgpass, ~/.my.cnf or ~/.kube/config of the
// machine's user is read), and then env, whose entries win.
func clientEnv(t testing.TB, env []string) []string {
	t.Helper()
	return append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "LC_ALL=C"}, env...)
}

// runClient runs a client program with env and returns its standard
// output; a non-zero exit is an error that carries the standard error (the
// client's refusal message).
func runClient(t testing.TB, env []string, stdin string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = clientEnv(t, env)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return stdout.String(), fmt.Errorf("%s exited with %d: %s", filepath.Base(name), exit.ExitCode(), bytes.TrimSpace(stderr.Bytes()))
		}
		return stdout.String(), fmt.Errorf("running %s: %w", name, err)
	}
	return stdout.String(), nil
}
