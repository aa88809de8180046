package commands

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/joiners"
	"github.com/urfave/cli/v2"
)

// renderHelp runs mbot <path...> --help and returns what it printed.
func renderHelp(t *testing.T, path []string) string {
	t.Helper()
	app := App()
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &out
	if err := app.Run(append(append([]string{"mbot"}, path...), "--help")); err != nil {
		t.Fatalf("mbot %s --help: %v", strings.Join(path, " "), err)
	}
	return out.String()
}

// eachCommand calls f with the path of every command and subcommand.
func eachCommand(cmds []*cli.Command, parent []string, f func(path []string, c *cli.Command)) {
	for _, c := range cmds {
		if c.Hidden {
			continue
		}
		path := append(append([]string(nil), parent...), c.Name)
		f(path, c)
		eachCommand(c.Subcommands, path, f)
	}
}

var defaultWord = regexp.MustCompile(`\bdefault\b`)

// TestHelpOfEveryCommand renders every command's --help and checks that each
// flag shows its default at most once, that the command has an example, and
// that every flag read from an environment variable names it.
func TestHelpOfEveryCommand(t *testing.T) {
	n := 0
	eachCommand(App().Commands, nil, func(path []string, c *cli.Command) {
		n++
		name := strings.Join(path, " ")
		t.Run(name, func(t *testing.T) {
			help := renderHelp(t, path)
			_, options, _ := strings.Cut(help, "OPTIONS:")
			for _, line := range strings.Split(options, "\n") {
				if k := len(defaultWord.FindAllString(line, -1)); k > 1 {
					t.Errorf("flag line mentions a default %d times:\n%s", k, line)
				}
			}
			if len(c.Subcommands) == 0 && !strings.Contains(help, "   mbot "+name) {
				t.Errorf("mbot %s --help has no example (a line \"   mbot %s ...\"):\n%s", name, name, help)
			}
			for _, f := range c.Flags {
				ef, ok := f.(interface{ GetEnvVars() []string })
				if !ok {
					continue
				}
				for _, env := range ef.GetEnvVars() {
					if !strings.Contains(help, "$"+env) {
						t.Errorf("mbot %s --help does not name %s, which --%s reads", name, env, f.Names()[0])
					}
				}
			}
		})
	})
	if n < 15 {
		t.Errorf("walked %d commands, want every one", n)
	}
}

// TestIssueHelpListsEveryMethod checks that mbot issue --help names every
// join method and what each detected one is detected by.
func TestIssueHelpListsEveryMethod(t *testing.T) {
	help := renderHelp(t, []string{"issue"})
	for _, s := range joiners.DetectionSignals() {
		if !strings.Contains(help, s) {
			t.Errorf("mbot issue --help does not list %q", s)
		}
	}
	_, desc, _ := strings.Cut(help, "DESCRIPTION:")
	desc, _, _ = strings.Cut(desc, "OPTIONS:")
	for _, m := range joiners.Methods() {
		if !strings.Contains(desc, m) {
			t.Errorf("the description of mbot issue does not name join method %s", m)
		}
	}
}

// TestTopHelpGroupsCommands checks that mbot --help groups the commands.
func TestTopHelpGroupsCommands(t *testing.T) {
	help := renderHelp(t, nil)
	for _, group := range []string{categoryJob + ":", categoryAuthority + ":", categoryAdmin + ":"} {
		if !strings.Contains(help, group) {
			t.Errorf("mbot --help has no group %q:\n%s", group, help)
		}
	}
	for _, c := range App().Commands {
		if c.Category == "" && !c.Hidden {
			t.Errorf("command %s is in no group", c.Name)
		}
	}
}
