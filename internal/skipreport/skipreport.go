// Package skipreport makes a plain `go test ./...` say which tests were
// skipped and why. The go command shows a passing package's output only
// with -v, so a test package's TestMain calls Main, tests skip through Skip
// and Skipf, and Main prints one line after the run, such as
//
//	e2e: 12 tests skipped: sshd is not installed (5), no pseudo-terminal here (7)
//
// to the terminal (/dev/tty) when there is one, so that it shows beside the
// package's "ok" line; with -v it goes to the standard output, and without a
// terminal (CI, where a missing server fails the test instead of skipping
// it) to the standard error, which the go command shows if the package
// fails. A cached run replays no output: the line shows on the run that ran
// the tests.
package skipreport

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

var (
	mu      sync.Mutex
	skipped = map[string]string{} // test name -> reason
)

// Skip records reason and skips t.
func Skip(t testing.TB, reason string) {
	t.Helper()
	record(t.Name(), reason)
	t.Skip(reason)
}

// Skipf is Skip with a format.
func Skipf(t testing.TB, format string, args ...any) {
	t.Helper()
	Skip(t, fmt.Sprintf(format, args...))
}

func record(name, reason string) {
	mu.Lock()
	defer mu.Unlock()
	skipped[name] = reason
}

// Main runs the package's tests and reports the skipped ones; its result is
// the exit code for os.Exit.
func Main(m *testing.M) int {
	code := m.Run()
	if line := Summary(packageName()); line != "" {
		out, closeOut := destination()
		fmt.Fprintln(out, line)
		closeOut()
	}
	return code
}

// Summary is the report of the tests skipped so far, "" if none: how many,
// and each reason (up to its first " (" or ";", the detail) with its count,
// the commonest first.
func Summary(pkg string) string {
	mu.Lock()
	defer mu.Unlock()
	if len(skipped) == 0 {
		return ""
	}
	counts := map[string]int{}
	for _, reason := range skipped {
		counts[short(reason)]++
	}
	reasons := make([]string, 0, len(counts))
	for r := range counts {
		reasons = append(reasons, r)
	}
	slices.SortFunc(reasons, func(a, b string) int {
		if counts[a] != counts[b] {
			return counts[b] - counts[a]
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(reasons))
	for i, r := range reasons {
		parts[i] = fmt.Sprintf("%s (%d)", r, counts[r])
	}
	tests := "tests"
	if len(skipped) == 1 {
		tests = "test"
	}
	return fmt.Sprintf("%s: %d %s skipped: %s", pkg, len(skipped), tests, strings.Join(parts, ", "))
}

// short is a reason without its detail, on one line.
func short(reason string) string {
	reason = strings.TrimSpace(strings.SplitN(reason, "\n", 2)[0])
	for _, sep := range []string{" (", ";"} {
		if i := strings.Index(reason, sep); i > 0 {
			reason = reason[:i]
		}
	}
	return reason
}

// packageName is the test binary's package, from its name (e2e.test).
func packageName() string {
	return strings.TrimSuffix(filepath.Base(os.Args[0]), ".test")
}

func destination() (io.Writer, func()) {
	if testing.Verbose() {
		return os.Stdout, func() {}
	}
	if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
		return tty, func() { tty.Close() }
	}
	return os.Stderr, func() {}
}
