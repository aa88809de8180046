package demo

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/internal/skipreport"
)

// TestShellQuote checks that what the demo prints for copying into a shell
// reaches the command unchanged, whatever the path holds.
func TestShellQuote(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		skipreport.Skip(t, "no sh")
	}
	for _, arg := range []string{"plain", "/tmp/mbot-demo/ssh_config", "http://127.0.0.1:1/github/token?api-version=2.0",
		"it's", "a b", "$(whoami)", "`id`", "x;y", "", "*", "'"} {
		out, err := exec.Command(sh, "-c", "printf %s "+shellQuote(arg)).Output()
		if err != nil || string(out) != arg {
			t.Errorf("shellQuote(%q) = %s: the shell gives %q (%v)", arg, shellQuote(arg), out, err)
		}
	}
	if got := shellJoin([]string{"echo", "a b"}); !strings.HasSuffix(got, "'a b'") {
		t.Errorf("shellJoin quoted %q", got)
	}
}
