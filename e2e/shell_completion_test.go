//go:build linux

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mbot-dev/mbot/internal/skipreport"
)

// terminal is an interactive shell on a pseudo-terminal: what it echoes
// and prints is collected as it comes.
type terminal struct {
	t      *testing.T
	master *os.File
	mu     sync.Mutex
	out    bytes.Buffer
}

// startTerminal runs argv on a new pseudo-terminal as its controlling one.
func startTerminal(t *testing.T, env []string, argv ...string) *terminal {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		skipreport.Skipf(t, "no pseudo-terminal here: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetUint32(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_ = unix.IoctlSetWinsize(int(slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 200})
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	term := &terminal{t: t, master: master}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			term.mu.Lock()
			term.out.Write(buf[:n])
			term.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		master.Close()
	})
	return term
}

func (term *terminal) send(keys string) {
	term.t.Helper()
	if _, err := term.master.WriteString(keys); err != nil {
		term.t.Fatal(err)
	}
}

// waitFor waits until the terminal has shown s after offset, and returns
// the offset after it.
func (term *terminal) waitFor(s string, offset int) int {
	term.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		term.mu.Lock()
		out := term.out.String()
		term.mu.Unlock()
		if i := strings.Index(out[min(offset, len(out)):], s); i >= 0 {
			return min(offset, len(out)) + i + len(s)
		}
		if time.Now().After(deadline) {
			term.t.Fatalf("the terminal did not show %q; it shows:\n%q", s, out[min(offset, len(out)):])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// completed types line, presses Tab and types X (so that zsh keeps the
// space it added, which it drops before a key that moves the cursor), then
// has the shell print the line between brackets, and returns what was
// between them without the X.
func (term *terminal) completed(line string, offset *int) string {
	term.t.Helper()
	term.send(line + "\t")
	time.Sleep(300 * time.Millisecond) // the shell runs mbot for the candidates
	// X, Ctrl-A, "echo '[", Ctrl-E, "]'": the shell prints the line.
	term.send("X\x01echo '[\x05]'\r")
	// The printed line starts a line; the echoed input has "'[" instead.
	start := term.waitFor("X]\r", *offset)
	term.mu.Lock()
	out := term.out.String()[*offset:start]
	term.mu.Unlock()
	*offset = start
	i := max(strings.LastIndex(out, "\r["), strings.LastIndex(out, "\n["))
	if i < 0 {
		term.t.Fatalf("no printed line in %q", out)
	}
	return strings.TrimSuffix(out[i+2:], "X]\r")
}

// TestCompletionInShells types partial command lines into real interactive
// bash and zsh shells that loaded mbot completion bash|zsh, presses Tab,
// and checks the line each shell completed: commands, kinds after get, rm
// and lock, values of --type, --join-method and -o, flags, and a space
// after a complete word but none after a KIND/ prefix.
func TestCompletionInShells(t *testing.T) {
	cases := []struct{ typed, want string }{
		{"mbot iss", "mbot issue "},
		{"mbot get join_t", "mbot get join_tokens "},
		{"mbot get bot_i", "mbot get bot_instances "},
		{"mbot rm rol", "mbot rm role/"},
		{"mbot lock join", "mbot lock join_token/"},
		{"mbot authority exp", "mbot authority export "},
		{"mbot authority export --type ca-p", "mbot authority export --type ca-pin "},
		{"mbot issue --join-method gitl", "mbot issue --join-method gitlab "},
		{"mbot get bots -o js", "mbot get bots -o json "},
		{"mbot issue --ca", "mbot issue --ca-pin "},
		{"mbot completion z", "mbot completion zsh "},
	}
	for _, shell := range []string{"bash", "zsh"} {
		t.Run(shell, func(t *testing.T) {
			path, err := exec.LookPath(shell)
			if err != nil {
				if os.Getenv("CI") == "true" {
					t.Fatalf("%s is not installed: in CI (.ci/run installs it) its completion must be tested", shell)
				}
				skipreport.Skipf(t, "%s is not installed: its completion is not tested", shell)
			}
			home := t.TempDir()
			env := withVars(nil, map[string]string{"PATH": pathWithMbot(mbotBin), "HOME": home, "TERM": "xterm", "LANG": "C.UTF-8"})
			script := mustMbot(t, env, "completion", shell).stdout
			var term *terminal
			switch shell {
			case "bash":
				file := filepath.Join(home, "mbot.bash")
				writeFile(t, file, script, 0o644)
				term = startTerminal(t, env, path, "--noprofile", "--norc", "-i")
				// As a user's shell has it: bash-completion when installed, then mbot's.
				term.send("PS1='$ '; [ -f /usr/share/bash-completion/bash_completion ] && . /usr/share/bash-completion/bash_completion; . " + file + "; echo loaded-$((40+2))\r")
			case "zsh":
				dir := filepath.Join(home, "zfunc")
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				writeFile(t, filepath.Join(dir, "_mbot"), script, 0o644) // from fpath, as mbot completion --help says
				term = startTerminal(t, env, path, "-f", "-i")
				term.send("PS1='$ '; bindkey -e; fpath=(" + dir + " $fpath); autoload -Uz compinit && compinit -u -D; echo loaded-$((40+2))\r")
			}
			offset := term.waitFor("loaded-42", 0)
			for _, tc := range cases {
				if got := term.completed(tc.typed, &offset); got != tc.want {
					t.Errorf("%s completed %q to %q, want %q", shell, tc.typed, got, tc.want)
				}
			}
		})
	}
}
