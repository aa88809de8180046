package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/internal/skipreport"
)

// TestCompletion checks `mbot completion bash|zsh|fish`: each script is
// valid for its shell, and the bash one completes commands, flags and the
// completion command's own argument by asking the binary.
func TestCompletion(t *testing.T) {
	env := withVars(nil, map[string]string{"PATH": pathWithMbot(mbotBin), "HOME": t.TempDir()})
	scripts := map[string]string{}
	for _, shell := range []string{"bash", "zsh", "fish"} {
		res := mbot(t, env, "completion", shell)
		if res.code != 0 || res.stderr != "" {
			t.Fatalf("mbot completion %s: %s", shell, res)
		}
		scripts[shell] = res.stdout
	}
	for shell, want := range map[string]string{
		"bash": "complete -o bashdefault -o default -F _mbot_complete mbot",
		"zsh":  "compdef _mbot_complete mbot",
		"fish": "complete -c mbot ",
	} {
		if !strings.Contains(scripts[shell], want) {
			t.Errorf("the %s script lacks %q", shell, want)
		}
	}
	if !strings.HasPrefix(scripts["zsh"], "#compdef mbot\n") {
		t.Errorf("the zsh script does not start with #compdef mbot, so compinit would not load it from fpath")
	}
	if !strings.Contains(scripts["fish"], "-a 'completion'") || !strings.Contains(scripts["fish"], "-l ttl") {
		t.Errorf("the fish script does not list the completion command and issue's --ttl:\n%s", scripts["fish"])
	}
	for _, shell := range []string{"zsh", "fish"} {
		if path, err := exec.LookPath(shell); err == nil {
			if res := run(t, env, path, "-n", "-c", scripts[shell]); res.code != 0 {
				t.Errorf("%s -n rejects the %s script: %s", shell, shell, res)
			}
		} else {
			t.Logf("%s is not installed: its script is not syntax-checked", shell)
		}
	}

	complete := func(words ...string) string {
		t.Helper()
		script := scripts["bash"] + `
COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
_mbot_complete
printf '%s\n' "${COMPREPLY[@]}"
`
		res := run(t, env, "bash", append([]string{"--noprofile", "--norc", "-c", script, "bash"}, words...)...)
		if res.code != 0 {
			t.Fatalf("bash completion of %q: %s", words, res)
		}
		return strings.TrimSpace(res.stdout)
	}
	for _, tc := range []struct {
		words []string
		want  string
	}{
		{[]string{"mbot", "iss"}, "issue"},
		{[]string{"mbot", "compl"}, "completion"},
		{[]string{"mbot", "issue", "--ca"}, "--ca-pin"},
		{[]string{"mbot", "completion", "z"}, "zsh"},
	} {
		if got := complete(tc.words...); got != tc.want {
			t.Errorf("completing %q gave %q, want %q", tc.words, got, tc.want)
		}
	}
}

// TestPlainOutput checks that mbot writes no terminal escape sequences,
// whatever the terminal claims (NO_COLOR needs nothing), and the exit codes
// the README documents.
func TestPlainOutput(t *testing.T) {
	env := withVars(baseEnv(t.TempDir()), map[string]string{"TERM": "xterm-256color", "CLICOLOR_FORCE": "1", "FORCE_COLOR": "1", "COLORTERM": "truecolor"})
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"--help"}, 0},
		{[]string{"--version"}, 0},
		{[]string{"issue", "--help"}, 0},
		{[]string{"completion", "--help"}, 0},
		{[]string{"completion", "bash"}, 0},
		{[]string{"issue"}, 2}, // no authority: a setting is missing
		{[]string{"issue", "--no-such-flag"}, 2},
		{[]string{"no-such-command"}, 2},
		{[]string{"authority", "export"}, 2},                                         // --type is required
		{[]string{"issue", "--authority", "https://127.0.0.1:1", "--token", "x"}, 1}, // no CI platform detected
		{[]string{"issue", "unexpected"}, 2},
		{[]string{"completion"}, 2},
		{[]string{"completion", "tcsh"}, 2},
	} {
		res := mbot(t, env, tc.args...)
		if res.code != tc.code {
			t.Errorf("mbot %s: exit %d, want %d\n%s", strings.Join(tc.args, " "), res.code, tc.code, res)
		}
		if strings.ContainsRune(res.stdout+res.stderr, '\x1b') {
			t.Errorf("mbot %s wrote an escape sequence:\n%q", strings.Join(tc.args, " "), res.stdout+res.stderr)
		}
	}
	if res := mbot(t, env, "--version"); !strings.HasPrefix(res.stdout, "mbot version ") || !strings.Contains(res.stdout, "(commit ") && !strings.Contains(res.stdout, "(module ") {
		t.Errorf("mbot --version should print the version and where it comes from: %q", res.stdout)
	}
	if res := mbot(t, env, "--help"); !strings.Contains(res.stdout, "completion") {
		t.Errorf("mbot --help does not list the completion command:\n%s", res.stdout)
	}
}

// TestCommandLineMistakes checks what a mistake in the command line gets:
// exit code 2, nothing on stdout (where a redirect would keep it), and one
// message on stderr that says what to change: the nearest command or flag,
// the format of a value, the one-line usage of a missing required flag.
func TestCommandLineMistakes(t *testing.T) {
	env := baseEnv(t.TempDir())
	pin := "sha256:" + strings.Repeat("ab", 32)
	for _, tc := range []struct {
		args  []string
		wants []string
	}{
		{[]string{"isue"}, []string{`mbot: mbot has no command "isue" (did you mean issue?)`}},
		{[]string{"authority", "strat"}, []string{`mbot authority has no command "strat" (did you mean start?); its commands: `, "export"}},
		{[]string{"issue", "--tokn", "x"}, []string{"mbot issue has no flag --tokn (did you mean --token?)"}},
		{[]string{"get", "bots", "--outptu", "json"}, []string{"mbot get has no flag --outptu (did you mean --output?)"}},
		{[]string{"issue", "--ttl", "2days"}, []string{`--ttl "2days" is not valid`, "90m, 2h or 24h"}},
		{[]string{"issue", "--authority", "https://127.0.0.1:1", "--token", "x", "--ca-pin", "sha256:zz"}, []string{`--ca-pin "sha256:zz" is not sha256:<64 hex digits>`}},
		{[]string{"issue", "--authority", "auth.acme.internal:8443", "--token", "x", "--ca-pin", pin}, []string{`--authority "auth.acme.internal:8443" is not a URL`}},
		{[]string{"issue", "--authority", "http://auth.acme.internal:8443", "--token", "x"}, []string{"must use https://"}},
		{[]string{"tokens", "add", "-o", "json"}, []string{"mbot: missing --bot", "\nusage: mbot tokens add --bot BOT [options]"}},
		{[]string{"authority", "export"}, []string{"mbot: missing --type", "\nusage: mbot authority export --type TYPE [options]"}},
	} {
		res := mbot(t, env, tc.args...)
		if res.code != 2 || res.stdout != "" {
			t.Errorf("mbot %s: exit %d with stdout %q, want exit 2 and nothing on stdout\n%s", strings.Join(tc.args, " "), res.code, res.stdout, res)
		}
		for _, want := range tc.wants {
			if !strings.Contains(res.stderr, want) {
				t.Errorf("mbot %s: stderr lacks %q:\n%s", strings.Join(tc.args, " "), want, res.stderr)
			}
		}
		if n := strings.Count(strings.TrimSpace(res.stderr), "\n"); n > 1 {
			t.Errorf("mbot %s printed %d lines, want the error and at most a usage line:\n%s", strings.Join(tc.args, " "), n+1, res.stderr)
		}
	}
}

// TestVersionFromCheckout builds mbot as a user does in a clone (go build,
// no ldflags) and checks that --version names the commit it was built from
// and its time, read from the VCS information the go command embeds.
func TestVersionFromCheckout(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(root, ".git")); err != nil || !fi.IsDir() {
		// The go command stamps VCS information only where .git is a
		// directory: not in a git worktree (a .git file) or an exported tree.
		skipreport.Skip(t, "the checkout has no .git directory (a git worktree or an exported tree): the go command embeds no VCS information")
	}
	git := func(args ...string) string {
		out, err := exec.Command("git", append([]string{"-C", root}, args...)...).Output()
		if err != nil {
			t.Fatalf("git %s: %v", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out))
	}
	rev := git("rev-parse", "HEAD")
	when, err := time.Parse(time.RFC3339, git("log", "-1", "--format=%cI"))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "mbot")
	build := exec.Command("go", "build", "-buildvcs=true", "-o", bin, ".")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	res := run(t, nil, bin, "--version")
	want := regexp.MustCompile(`^mbot version 0\.0\.0-\d{14}-([0-9a-f]{12})(\+dirty)? \(commit ([0-9a-f]{12})(\+dirty)?, committed (\S+), from a checkout\)\n$`)
	m := want.FindStringSubmatch(res.stdout)
	if res.code != 0 || m == nil {
		t.Fatalf("mbot --version from a checkout: want the pseudo-version, commit and commit time, got\n%s", res)
	}
	if m[1] != rev[:12] || m[3] != rev[:12] {
		t.Errorf("--version names commit %s, HEAD is %s", m[3], rev)
	}
	if got, err := time.Parse(time.RFC3339, m[5]); err != nil || !got.Equal(when) {
		t.Errorf("--version says committed %s, HEAD was committed %s", m[5], when.UTC().Format(time.RFC3339))
	}
}
