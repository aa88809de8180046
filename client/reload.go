package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mbot-dev/mbot/identity"
	"gopkg.in/yaml.v3"
)

// DefaultReloadTimeout is how long an output's reload command may run
// when reload_timeout does not say.
const DefaultReloadTimeout = 30 * time.Second

// maxReloadArgs bounds a reload command's words.
const maxReloadArgs = 64

// ReloadCommand is an output's reload: in mbot.yaml, the command mbot start
// runs after each successful write of the output, so that the server
// reading it picks up the new files. It is run directly, never through a
// shell: a list is the argv ([pg_ctlcluster, "15", main, reload]); a string
// is split at spaces ("systemctl reload postgresql") and may hold nothing
// a shell would interpret. [sh, -c, "..."] runs a shell on purpose.
type ReloadCommand []string

// shellOnly are the characters a reload string may not hold: they mean
// something to a shell, which mbot does not run.
const shellOnly = "'\"\\$`|&;<>(){}[]*?~#!"

func (c *ReloadCommand) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.SequenceNode:
		var argv []string
		if err := n.Decode(&argv); err != nil {
			return fmt.Errorf("line %d: reload: is a command as a list of words, such as [systemctl, reload, postgresql]", n.Line)
		}
		*c = argv
		return nil
	case yaml.ScalarNode:
		if i := strings.IndexAny(n.Value, shellOnly); i >= 0 {
			return fmt.Errorf("line %d: reload: %q holds %q, which only a shell understands, and mbot runs the command without one: "+
				"write it as a list, such as [pg_ctlcluster, \"15\", main, reload], or as [sh, -c, \"...\"] to run a shell on purpose",
				n.Line, n.Value, n.Value[i:i+1])
		}
		*c = strings.Fields(n.Value)
		return nil
	}
	return fmt.Errorf("line %d: reload: is a command, such as [systemctl, reload, postgresql] or \"systemctl reload postgresql\"", n.Line)
}

// String is the command as a person would type it, for messages.
func (c ReloadCommand) String() string {
	words := make([]string, len(c))
	for i, w := range c {
		words[i] = w
		if w == "" || strings.ContainsAny(w, shellOnly+" \t\n") {
			words[i] = shellQuote(w)
		}
	}
	return identity.Printable(strings.Join(words, " "))
}

// ReloadTimeout is reload_timeout in mbot.yaml, written like ttl.
type ReloadTimeout time.Duration

func (d *ReloadTimeout) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || v <= 0 {
		return fmt.Errorf("line %d: reload_timeout: %q is not a positive duration such as 10s or 1m", n.Line, n.Value)
	}
	*d = ReloadTimeout(v)
	return nil
}

// checkOwnerAndReload checks owner:, reload: and reload_timeout:, the
// fields every output type has (lookupOwner finds the owner on this host).
func (o *Output) checkOwnerAndReload() error {
	if o.Owner != "" {
		if o.Destination.Secret != nil {
			return badField("owner", "gives a directory to a user; a Secret has no owner: remove owner: or write to a directory")
		}
		user, group, hasGroup := strings.Cut(o.Owner, ":")
		if user == "" || hasGroup && group == "" || strings.ContainsFunc(o.Owner, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return badField("owner", "%s is not USER[:GROUP], such as postgres or postgres:ssl-cert", identity.Quote(o.Owner))
		}
	}
	if len(o.Reload) == 0 {
		if o.ReloadTimeout != 0 {
			return badField("reload_timeout", "bounds the reload: command, which this output does not have; set reload: or remove reload_timeout:")
		}
		return nil
	}
	if len(o.Reload) > maxReloadArgs {
		return badField("reload", "has %d words; at most %d (a longer command belongs in a script)", len(o.Reload), maxReloadArgs)
	}
	for _, w := range o.Reload {
		if strings.ContainsRune(w, 0) {
			return badField("reload", "a word holds a NUL character, which no command line can pass")
		}
	}
	switch prog := o.Reload[0]; {
	case prog == "":
		return badField("reload", "starts with an empty word; the first word is the program to run")
	case strings.ContainsRune(prog, '/') && !filepath.IsAbs(prog):
		return badField("reload", "program %s is a relative path, which depends on the directory mbot start runs in: give an absolute path or a name found in PATH", identity.Quote(prog))
	}
	return nil
}

// lookupOwner finds the output's owner: on this host: mbot issue and
// mbot start do, before anything is joined; the file alone is checked
// wherever it is read.
func (o *Output) lookupOwner() error {
	owner, err := identity.LookupOwner(o.Owner)
	if err != nil {
		return fmt.Errorf("output %q: owner: %w", o.Name, err)
	}
	o.owner = owner
	return nil
}

// reloadTimeout is the output's reload_timeout, or the default.
func (o *Output) reloadTimeout() time.Duration {
	if o.ReloadTimeout > 0 {
		return time.Duration(o.ReloadTimeout)
	}
	return DefaultReloadTimeout
}

// checkReloadPrograms finds every output's reload program, so that mbot
// start refuses a missing one when it starts, not at the first renewal.
func checkReloadPrograms(outputs []Output) error {
	for _, o := range outputs {
		if len(o.Reload) == 0 {
			continue
		}
		if _, err := exec.LookPath(o.Reload[0]); err != nil {
			return fmt.Errorf("output %q: reload: %s cannot be run: %w", o.Name, identity.Quote(o.Reload[0]), err)
		}
	}
	return nil
}

// maxReloadOutput bounds what a reload command's output adds to a log line.
const maxReloadOutput = 2048

// ReloadError is a reload command that failed: it exited non-zero, could
// not start, or outlived its timeout and was killed.
type ReloadError struct {
	Output  string
	Command ReloadCommand
	// ExitStatus is the command's exit status; -1 when it did not exit by
	// itself (not started, killed).
	ExitStatus int
	TimedOut   bool
	Err        error
	// Tail is the end of what it wrote to stdout and stderr.
	Tail string
}

func (e *ReloadError) Error() string {
	what := fmt.Sprintf("exited with status %d", e.ExitStatus)
	switch {
	case e.TimedOut:
		what = "was killed after its timeout"
	case e.ExitStatus < 0:
		what = fmt.Sprintf("could not run: %v", e.Err)
	}
	return fmt.Sprintf("output %q: reload %s %s", e.Output, e.Command, what)
}

func (e *ReloadError) Unwrap() error { return e.Err }

// runReload runs out's reload command, once the output at dir is written.
// It runs without a shell, with stdin empty, in the output's directory's
// parent, with mbot's environment less its MBOT_* variables (which may hold
// the join secret) and with MBOT_OUTPUT_NAME and MBOT_OUTPUT_DIR set. When
// the timeout passes, the command and every process it started are killed.
func runReload(ctx context.Context, out *Output, dir string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), out.reloadTimeout())
	defer cancel()
	cmd := exec.CommandContext(ctx, out.Reload[0], out.Reload[1:]...)
	cmd.Dir = filepath.Dir(dir)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MBOT_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "MBOT_OUTPUT_NAME="+out.Name, "MBOT_OUTPUT_DIR="+dir)
	var tail tailBuffer
	cmd.Stdout, cmd.Stderr = &tail, &tail
	killGroup(cmd)
	// A child that keeps the output pipe open is not waited for long.
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if err == nil {
		return nil
	}
	re := &ReloadError{Output: out.Name, Command: out.Reload, ExitStatus: -1, Err: err, Tail: tail.String()}
	var exit *exec.ExitError
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		re.TimedOut = true
		re.Err = fmt.Errorf("reload_timeout %s passed", out.reloadTimeout())
	case errors.As(err, &exit) && exit.Exited():
		re.ExitStatus = exit.ExitCode()
	}
	return re
}

// reloadWritten runs the reload command of each output written, in order,
// logging each result; it returns how many failed.
func reloadWritten(ctx context.Context, log *slog.Logger, written []writtenOutput) int {
	failed := 0
	for _, w := range written {
		if len(w.out.Reload) == 0 {
			continue
		}
		start := time.Now()
		err := runReload(ctx, &w.out, w.dir)
		var re *ReloadError
		if !errors.As(err, &re) {
			log.Info("ran the output's reload command", "output", w.out.Name, "command", w.out.Reload.String(),
				"took", time.Since(start).Round(time.Millisecond))
			continue
		}
		failed++
		attrs := []any{"output", w.out.Name, "command", w.out.Reload.String(), "exit_status", re.ExitStatus, "err", re.Err}
		if re.TimedOut {
			attrs = append(attrs, "timed_out", true)
		}
		if re.Tail != "" {
			attrs = append(attrs, "command_output", identity.Printable(re.Tail))
		}
		log.Error("the output's reload command failed; the files are written, but the server may still use the previous ones", attrs...)
	}
	return failed
}

// writtenOutput is an output a renewal wrote, at dir.
type writtenOutput struct {
	out Output
	dir string
}

// tailBuffer keeps the last maxReloadOutput bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	cut bool
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - maxReloadOutput; over > 0 {
		b.buf, b.cut = b.buf[over:], true
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := string(bytes.TrimSpace(b.buf))
	if b.cut {
		s = "..." + s
	}
	return s
}
