//go:build unix

package skipreport_test

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/mbot-dev/mbot/internal/skipreport"
)

func TestMain(m *testing.M) { os.Exit(skipreport.Main(m)) }

// The child tests: skipped only when this binary runs itself as a child.
func TestChildNoSSHD(t *testing.T) {
	child(t, "sshd is not installed (install openssh-server, or run .ci/run)")
}
func TestChildNoSSHD2(t *testing.T) {
	child(t, "sshd is not installed (install openssh-server, or run .ci/run)")
}
func TestChildNoTTY(t *testing.T) { child(t, "no pseudo-terminal here: open /dev/ptmx: no such file") }
func TestChildRuns(t *testing.T) {
	if os.Getenv("SKIPREPORT_CHILD") == "" {
		t.Skip("a child test")
	}
}

func child(t *testing.T, reason string) {
	if os.Getenv("SKIPREPORT_CHILD") == "" {
		t.Skip("a child test")
	}
	skipreport.Skip(t, reason)
}

// TestReport runs this test binary's child tests as go test runs a package
// (no -v, its output captured) in a session of their own, without a
// terminal: the summary line must be on the standard error, and with -v on
// the standard output.
func TestReport(t *testing.T) {
	if os.Getenv("SKIPREPORT_CHILD") != "" {
		t.Skip("a child test")
	}
	const want = "skipreport: 3 tests skipped: sshd is not installed (2), no pseudo-terminal here: open /dev/ptmx: no such file (1)\n"
	for _, verbose := range []bool{false, true} {
		args := []string{"-test.run=^TestChild"}
		if verbose {
			args = append(args, "-test.v")
		}
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = append(os.Environ(), "SKIPREPORT_CHILD=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("the child run failed: %v\n%s%s", err, stdout.String(), stderr.String())
		}
		got := stderr.String()
		if verbose {
			got = stdout.String()
			if !strings.HasSuffix(got, want) && !strings.Contains(got, "\n"+want) {
				t.Errorf("with -v, the standard output does not end with the summary %q:\n%s", want, got)
			}
			continue
		}
		if got != want {
			t.Errorf("the standard error is %q, want the summary %q (stdout %q)", got, want, stdout.String())
		}
	}
}

func TestSummaryNone(t *testing.T) {
	if os.Getenv("SKIPREPORT_CHILD") != "" {
		t.Skip("a child test")
	}
	// In this process only TestChild* skipped, through t.Skip, which
	// Summary does not see: nothing went through skipreport.
	if got := skipreport.Summary("p"); got != "" {
		t.Errorf("Summary = %q with no skips recorded", got)
	}
}
