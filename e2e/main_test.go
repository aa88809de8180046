package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/internal/skipreport"
	"github.com/mbot-dev/mbot/internal/testservers"
)

// mbotBin is the mbot binary under test, built once by TestMain.
var mbotBin string

// commandTimeout bounds every subprocess a test runs to completion.
const commandTimeout = 30 * time.Second

func TestMain(m *testing.M) {
	// The suite starts real servers one test after another: on 2 shared
	// cores it needs more than go test's default 10 minutes, after which
	// the go command kills the test binary (at -timeout plus 1 minute,
	// whatever the binary sets itself). The README's test command gives
	// -timeout 40m.
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "mbot-e2e-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	goTool, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: the go command is needed to build mbot: %v\n", err)
		return 1
	}
	mbotBin = filepath.Join(dir, "mbot")
	build := exec.Command(goTool, "build", "-o", mbotBin, "github.com/mbot-dev/mbot")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: building mbot: %v\n", err)
		return 1
	}
	return skipreport.Main(m)
}

// result is how a finished subprocess ended.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s--- stderr:\n%s", r.code, r.stdout, r.stderr)
}

// run runs name with args in exactly env (nil: an empty environment) and
// waits for it. A process that cannot start or times out fails the test.
func run(t *testing.T, env []string, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	if cmd.Env == nil {
		cmd.Env = []string{}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%s %s: timed out after %s\n%s", name, strings.Join(args, " "), commandTimeout, res)
	case errors.As(err, &exitErr):
		if !exitErr.Exited() {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, res)
		}
		res.code = exitErr.ExitCode()
	case err != nil:
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return res
}

// mbot runs the binary under test.
func mbot(t *testing.T, env []string, args ...string) result {
	t.Helper()
	return run(t, env, mbotBin, args...)
}

// mustMbot runs the binary under test and fails the test unless it exits 0.
func mustMbot(t *testing.T, env []string, args ...string) result {
	t.Helper()
	res := mbot(t, env, args...)
	if res.code != 0 {
		t.Fatalf("mbot %s: %s", strings.Join(args, " "), res)
	}
	return res
}

// baseEnv is the smallest environment a job step has: PATH and HOME.
func baseEnv(home string) []string {
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home}
}

// withVars adds vars to env, in a stable order.
func withVars(env []string, vars map[string]string) []string {
	out := append([]string{}, env...)
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		out = append(out, k+"="+vars[k])
	}
	return out
}

// freePort returns a TCP port on 127.0.0.1 for a server the test starts
// (testservers.FreePort: below the ephemeral range, never twice).
func freePort(t *testing.T) int { return testservers.FreePort(t) }

// waitForPort waits until addr accepts connections or exited is closed.
func waitForPort(t *testing.T, addr string, exited <-chan struct{}, logs *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			t.Fatalf("the server for %s exited before it listened:\n%s", addr, logs)
		default:
		}
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s after 15s:\n%s", addr, logs)
}

// syncBuffer collects a background process's output.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// background is a long-running subprocess (authority, sshd).
type background struct {
	cmd    *exec.Cmd
	logs   *syncBuffer
	exited chan struct{}
	err    error // set when exited is closed
}

// startBackground starts name and stops it with SIGTERM when the test ends.
// With wantCleanExit, the test fails unless the process then exits 0.
func startBackground(t *testing.T, env []string, wantCleanExit bool, name string, args ...string) *background {
	t.Helper()
	b := &background{logs: &syncBuffer{}, exited: make(chan struct{})}
	b.cmd = exec.Command(name, args...)
	b.cmd.Env = env
	b.cmd.Stdout, b.cmd.Stderr = b.logs, b.logs
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		b.err = b.cmd.Wait()
		close(b.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-b.exited:
			t.Errorf("%s exited before the end of the test: %v\n%s", filepath.Base(name), b.err, b.logs)
			return
		default:
		}
		if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Errorf("signalling %s: %v", filepath.Base(name), err)
		}
		select {
		case <-b.exited:
		case <-time.After(15 * time.Second):
			_ = b.cmd.Process.Kill()
			<-b.exited
			t.Errorf("%s did not stop within 15s of SIGTERM\n%s", filepath.Base(name), b.logs)
			return
		}
		if wantCleanExit && b.err != nil {
			t.Errorf("%s did not shut down cleanly on SIGTERM: %v\n%s", filepath.Base(name), b.err, b.logs)
		}
		if t.Failed() {
			t.Logf("output of %s:\n%s", filepath.Base(name), b.logs)
		}
	})
	return b
}

// requireTool finds a tool the test needs. A missing tool skips the test
// on a developer machine but fails it in CI, where .ci/run installs it.
func requireTool(t *testing.T, name string, extraPaths ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return absPath(t, p)
	}
	for _, p := range extraPaths {
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	msg := fmt.Sprintf("%s is not installed (looked in PATH and %v); install openssh-server, openssh-client and openssl, or run .ci/run", name, extraPaths)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	skipreport.Skip(t, msg)
	return ""
}

func absPath(t *testing.T, p string) string {
	t.Helper()
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}
