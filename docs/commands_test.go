package docs

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/commands"
	"github.com/urfave/cli/v2"
)

// quotedCommand is one mbot command line quoted in the docs.
type quotedCommand struct {
	where string   // file:line
	words []string // from "mbot" on
	env   []string // variables set before it on the line or exported earlier in its block
	// partial: the line elides arguments ("..."), so required flags are
	// not looked for.
	partial bool
	// inline: a code span of the prose, which may mention a command, a flag
	// (`mbot sign --host`) or mbot's output (`mbot version 1.2.3`) rather
	// than give a whole command line.
	inline bool
}

var inlineCode = regexp.MustCompile("`([^`\n]+(?:\n[^`\n]+)?)`")

// shellWords splits a shell line into words: quotes and backslashes as a
// shell reads them, a comment dropped; it stops at a pipe, &&, ||, ;, a
// redirection or a command substitution, which end the command.
func shellWords(line string) []string {
	var (
		words []string
		cur   strings.Builder
		in    bool
		quote rune
	)
	flush := func() {
		if in {
			words = append(words, cur.String())
		}
		cur.Reset()
		in = false
	}
	rs := []rune(line)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, in = r, true
		case r == '\\' && i+1 < len(rs):
			i++
			cur.WriteRune(rs[i])
			in = true
		case r == ' ' || r == '\t':
			flush()
		case r == '#' && !in:
			flush()
			return words
		case r == '|' || r == ';' || r == '&' || r == '>' || r == '<' || r == '(' || r == ')':
			flush()
			return words
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	flush()
	return words
}

var envAssign = regexp.MustCompile(`^([A-Z_][A-Z0-9_]*)=`)

// commandIn returns the mbot command of one shell line, if it has one: the
// words from mbot (or a path ending in /mbot) on, after variable
// assignments and sudo.
func commandIn(line string, exported []string) (quotedCommand, bool) {
	words := shellWords(line)
	env := slices.Clone(exported)
	for len(words) > 0 {
		w := words[0]
		if m := envAssign.FindStringSubmatch(w); m != nil {
			env = append(env, m[1])
			words = words[1:]
			continue
		}
		if w == "sudo" || w == "exec" || w == "time" || w == "-" || w == "$" {
			words = words[1:]
			continue
		}
		break
	}
	if len(words) == 0 || !(words[0] == "mbot" || strings.HasSuffix(words[0], "/mbot")) {
		return quotedCommand{}, false
	}
	return quotedCommand{words: words, env: env, partial: strings.Contains(line, "...") || strings.Contains(line, "…")}, true
}

// quotedCommands returns every mbot command line of README.md and docs/:
// the lines of sh, bash, console and text code blocks (with their
// continuation lines joined) and the inline code spans of the prose.
func quotedCommands(t *testing.T) []quotedCommand {
	var out []quotedCommand
	for file, text := range markdownFiles(t) {
		if file == "docs/reference/cli.md" { // generated from the definitions themselves
			continue
		}
		for _, b := range codeBlocks(file, text) {
			lang, _, _ := strings.Cut(b.info, " ")
			if lang != "sh" && lang != "bash" && lang != "console" && lang != "shell" && lang != "" {
				continue
			}
			var exported []string
			lines := strings.Split(b.body, "\n")
			for i := 0; i < len(lines); i++ {
				start := i
				line := lines[i]
				for strings.HasSuffix(line, "\\") && i+1 < len(lines) {
					i++
					line = strings.TrimSuffix(line, "\\") + " " + lines[i]
				}
				line = strings.TrimSpace(line)
				if rest, ok := strings.CutPrefix(line, "export "); ok {
					for _, w := range shellWords(rest) {
						if m := envAssign.FindStringSubmatch(w + "="); m != nil {
							exported = append(exported, m[1])
						}
					}
					continue
				}
				if m := envAssign.FindStringSubmatch(line); m != nil && !strings.Contains(line, "mbot") {
					exported = append(exported, m[1])
				}
				if c, ok := commandIn(line, exported); ok {
					c.where = fmt.Sprintf("%s:%d", file, b.line+1+start)
					out = append(out, c)
				}
			}
		}
		// A code span may continue on the next line of its paragraph.
		p := prose(text)
		for _, m := range inlineCode.FindAllStringSubmatchIndex(p, -1) {
			span := strings.ReplaceAll(p[m[2]:m[3]], "\n", " ")
			if !strings.HasPrefix(span, "mbot ") {
				continue
			}
			if c, ok := commandIn(span, nil); ok {
				c.inline = true
				c.where = fmt.Sprintf("%s (prose line %d)", file, strings.Count(p[:m[0]], "\n")+1)
				out = append(out, c)
			}
		}
	}
	return out
}

// placeholder is an argument that stands for what the reader fills in.
var placeholder = regexp.MustCompile(`^(<[^>]*>|[A-Z][A-Z0-9_:]*|\[.*\]|\{.*\}|\.\.\.|…)$`)

// checkCommand parses words as urfave/cli would against app: each word
// before the first argument names a (sub)command, each --flag or -f is
// one of that command's (or a global) flag, a flag that takes a value has
// one, and, unless the line elides arguments or names no flag at all (a
// mention of the command, not a command line), every required flag is
// given on the line or through its environment variable.
func checkCommand(app *cli.App, c quotedCommand) error {
	words := c.words[1:]
	var (
		cmd  *cli.Command
		path = []string{"mbot"}
		subs = app.Commands
	)
	hasFlag := slices.ContainsFunc(words, func(w string) bool { return strings.HasPrefix(w, "-") })
	for len(words) > 0 && !strings.HasPrefix(words[0], "-") {
		next := findCommand(subs, words[0])
		if next == nil && cmd == nil && c.inline && !hasFlag {
			return nil // mbot's output quoted in the prose: `mbot version 1.2.3`
		}
		if next == nil {
			if cmd == nil || len(cmd.Subcommands) > 0 {
				if placeholder.MatchString(words[0]) {
					return nil // "mbot COMMAND": a pattern, not a command line
				}
				return fmt.Errorf("%s has no command %q", strings.Join(path, " "), words[0])
			}
			break
		}
		cmd, subs = next, next.Subcommands
		path = append(path, next.Name)
		words = words[1:]
	}
	if cmd == nil {
		// mbot --version, mbot --help
		for _, w := range words {
			if w != "--version" && w != "-v" && w != "--help" && w != "-h" {
				return fmt.Errorf("mbot %s: a flag before any command", w)
			}
		}
		return nil
	}
	flags := append(slices.Clone(cmd.Flags), app.Flags...)
	given := map[string]bool{}
	nflags := 0
	for i := 0; i < len(words); i++ {
		w := words[i]
		if w == "--" {
			break
		}
		if !strings.HasPrefix(w, "-") || w == "-" {
			continue
		}
		nflags++
		name, _, hasValue := strings.Cut(strings.TrimLeft(w, "-"), "=")
		if name == "help" || name == "h" {
			return nil
		}
		f := findFlag(flags, name)
		if f == nil {
			return fmt.Errorf("%s has no flag %s (its flags: %s)", strings.Join(path, " "), w, flagNames(flags))
		}
		for _, n := range f.Names() {
			given[n] = true
		}
		if df, ok := f.(cli.DocGenerationFlag); ok && df.TakesValue() && !hasValue {
			if _, isBool := f.(*cli.BoolFlag); !isBool {
				if i+1 >= len(words) {
					if c.inline {
						break // a mention of the flag: `mbot sign --host`
					}
					return fmt.Errorf("%s: flag %s needs a value", strings.Join(path, " "), w)
				}
				i++
			}
		}
	}
	// A span of the prose that names one flag mentions it; a line with
	// two or more is a command line a reader will copy.
	if c.partial || nflags == 0 || c.inline && nflags < 2 {
		return nil
	}
	for _, f := range cmd.Flags {
		rf, ok := f.(cli.RequiredFlag)
		if !ok || !rf.IsRequired() || given[f.Names()[0]] {
			continue
		}
		if df, ok := f.(cli.DocGenerationFlag); ok && slices.ContainsFunc(df.GetEnvVars(), func(v string) bool { return slices.Contains(c.env, v) }) {
			continue
		}
		return fmt.Errorf("%s needs --%s, which the line does not give", strings.Join(path, " "), f.Names()[0])
	}
	return nil
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.Name == name || slices.Contains(c.Aliases, name) {
			return c
		}
	}
	return nil
}

func findFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		if slices.Contains(f.Names(), name) {
			return f
		}
	}
	return nil
}

func flagNames(flags []cli.Flag) string {
	var names []string
	for _, f := range flags {
		names = append(names, "--"+f.Names()[0])
	}
	return strings.Join(names, " ")
}

// TestQuotedCommandsParse checks every mbot command line quoted in
// README.md and docs/ against the real command definitions: commands,
// flags, values and required flags.
func TestQuotedCommandsParse(t *testing.T) {
	app := commands.App()
	cmds := quotedCommands(t)
	if len(cmds) < 50 {
		t.Fatalf("found only %d quoted mbot command lines; is the extraction broken?", len(cmds))
	}
	slices.SortFunc(cmds, func(a, b quotedCommand) int { return strings.Compare(a.where, b.where) })
	for _, c := range cmds {
		if err := checkCommand(app, c); err != nil {
			t.Errorf("%s: `%s`: %v", c.where, strings.Join(c.words, " "), err)
		}
	}
}

// TestCheckCommand checks the checker on lines it must refuse and accept.
func TestCheckCommand(t *testing.T) {
	app := commands.App()
	for _, tc := range []struct {
		line string
		want string // "" accepts
	}{
		{"mbot issue --token x --authority https://a:8443", ""},
		{"mbot isue --token x", `mbot has no command "isue"`},
		{"mbot issue --tokn x", "mbot issue has no flag --tokn"},
		{"mbot authority export --type ca-pin", ""},
		{"mbot authority export --config x", "needs --type"},
		{"mbot tokens add --method bound_keypair --rotate --public-key FILE", "needs --bot"},
		{"mbot tokens add --method bound_keypair ...", ""},
		{"mbot tokens add", ""},
		{"mbot --version", ""},
		{"MBOT_TOKEN=x mbot issue --ttl 1h | tee log", ""},
	} {
		c, ok := commandIn(tc.line, nil)
		if !ok {
			t.Fatalf("%q: not taken for an mbot command", tc.line)
		}
		err := checkCommand(app, c)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q refused: %v", tc.line, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: got %v, want an error containing %q", tc.line, err, tc.want)
		}
	}
}
