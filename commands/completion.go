package commands

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/mbot-dev/mbot/admin"
	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/locks"
	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/joiners"
	"github.com/urfave/cli/v2"
)

// completionCommand prints a shell completion script. bash and zsh ask the
// binary for candidates as they go (the app's hidden
// --generate-bash-completion flag, urfave/cli's EnableBashCompletion, with
// the words typed so far), so they follow the commands and flags of
// whichever mbot is on PATH; fish gets the command tree written out by
// urfave/cli.
func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash, zsh or fish)",
		ArgsUsage: "bash|zsh|fish",
		Description: `Prints the completion script for a shell. Load it in the current shell, or
install it where the shell looks for completions:

   source <(mbot completion bash)                      # bash, this shell
   mbot completion bash > /etc/bash_completion.d/mbot  # bash, every shell
   mbot completion zsh > "${fpath[1]}/_mbot"           # zsh (compinit)
   mbot completion fish > ~/.config/fish/completions/mbot.fish`,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("mbot completion takes one argument, bash, zsh or fish")
			}
			return writeCompletion(c.App, c.App.Writer, c.Args().First())
		},
	}
}

func writeCompletion(app *cli.App, w io.Writer, shell string) error {
	switch shell {
	case "bash":
		_, err := fmt.Fprintf(w, bashCompletion, app.Name)
		return err
	case "zsh":
		_, err := fmt.Fprintf(w, zshCompletion, app.Name)
		return err
	case "fish":
		script, err := app.ToFishCompletion()
		if err != nil {
			return err
		}
		_, err = io.WriteString(w, script)
		return err
	default:
		return usagef("mbot completion: unknown shell %q (bash, zsh or fish)", shell)
	}
}

// What completion offers beyond command and flag names, registered where
// the command or flag is defined, from the lists the command itself checks
// against: a flag's values (withValues) and a command's arguments
// (withArgs). Keyed by the flag or command.
var (
	flagValues  sync.Map // cli.Flag -> func() []string
	commandArgs sync.Map // *cli.Command -> func(before []string) []string
)

// withValues registers the values completion offers for flag f.
func withValues[F cli.Flag](f F, values func() []string) F {
	flagValues.Store(cli.Flag(f), values)
	return f
}

// withArgs registers the arguments completion offers for cmd, given the
// arguments written before the one completed.
func withArgs(cmd *cli.Command, args func(before []string) []string) *cli.Command {
	commandArgs.Store(cmd, args)
	return cmd
}

// registerCompletions says what completion offers for the arguments and
// flag values of app's commands, each from the list the command checks
// against (one place for all of them; the lists live with their packages).
func registerCompletions(app *cli.App) {
	args := map[string]func(before []string) []string{
		"get":        firstArg(getKinds),
		"rm":         func([]string) []string { return kindPrefixes(resourceKinds()) },
		"lock":       firstArg(func() []string { return kindPrefixes(lockKinds()) }),
		"unlock":     firstArg(func() []string { return kindPrefixes(lockKinds()) }),
		"completion": firstArg(func() []string { return []string{"bash", "zsh", "fish"} }),
	}
	joinMethods := func() []string { return append([]string{"auto"}, joiners.Methods()...) }
	values := map[string]func() []string{
		"issue --join-method":     joinMethods,
		"start --join-method":     joinMethods,
		"authority export --type": func() []string { return authority.ExportTypes },
		"authority rotate --type": authority.RotationTypes,
		"tokens add --method":     func() []string { return []string{"token", verify.BoundKeypairMethod} },
		"sign --format":           func() []string { return []string{"postgres", "mysql"} },
	}
	var walk func(cmds []*cli.Command, parent string)
	walk = func(cmds []*cli.Command, parent string) {
		for _, c := range cmds {
			path := strings.TrimSpace(parent + " " + c.Name)
			c.BashComplete = printCompletions
			if a, ok := args[path]; ok {
				withArgs(c, a)
			}
			for _, f := range c.Flags {
				if v, ok := values[path+" --"+flagName(f)]; ok {
					withValues(f, v)
				}
			}
			walk(c.Subcommands, path)
		}
	}
	walk(app.Commands, "")
	app.BashComplete = printCompletions
}

// flagName is f's name, read from the flag itself: Names (urfave/cli's
// FlagNames) runs a regular expression on each name, and
// registerCompletions runs at every start.
func flagName(f cli.Flag) string {
	switch f := f.(type) {
	case *cli.StringFlag:
		return f.Name
	case *cli.BoolFlag:
		return f.Name
	case *cli.DurationFlag:
		return f.Name
	case *cli.IntFlag:
		return f.Name
	case *cli.StringSliceFlag:
		return f.Name
	}
	return f.Names()[0]
}

// firstArg offers values for a command's first argument only.
func firstArg(values func() []string) func(before []string) []string {
	return func(before []string) []string {
		if len(before) > 0 {
			return nil
		}
		return values()
	}
}

// kindPrefixes are "role/", "bot/", ...: the start of a KIND/NAME argument.
func kindPrefixes(kinds []string) []string {
	out := make([]string, len(kinds))
	for i, k := range kinds {
		out[i] = k + "/"
	}
	return out
}

// resourceKinds are the resource kinds in the singular (role, bot, ...),
// as mbot rm KIND/NAME takes them.
func resourceKinds() []string {
	var out []string
	for k := range admin.Kinds {
		if _, plural := admin.Kinds[k+"s"]; plural {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// getKinds are what mbot get lists: the resources in the plural, then the
// other lists.
func getKinds() []string {
	out := make([]string, 0, len(admin.Kinds))
	for _, k := range resourceKinds() {
		out = append(out, k+"s")
	}
	return append(out, "bot_instances", "locks")
}

// lockKinds are the kinds of mbot lock KIND/NAME (a claim is --claim).
func lockKinds() []string {
	return slices.DeleteFunc(slices.Clone(locks.Kinds), func(k string) bool { return k == locks.KindClaim })
}

// generateCompletionFlag is urfave/cli's hidden flag a completion script
// appends to the words typed so far.
const generateCompletionFlag = "--generate-bash-completion"

// printCompletions is the BashComplete of the app and every command: the
// scripts pass every word up to the cursor, the last being the one
// completed ("" for a new one), so it resolves the command itself from
// the process arguments rather than from urfave/cli's partial parse.
func printCompletions(c *cli.Context) {
	args := os.Args[1:]
	if n := len(args); n > 0 && args[n-1] == generateCompletionFlag {
		args = args[:n-1]
	}
	for _, s := range completions(c.App, args) {
		fmt.Fprintln(c.App.Writer, s)
	}
}

// completions are the candidates for the last of words (the words after
// "mbot"); the shell keeps those that start with what is typed.
func completions(app *cli.App, words []string) []string {
	if len(words) == 0 {
		words = []string{""}
	}
	var cmd *cli.Command
	subs, flags := app.Commands, app.Flags
	var before []string // arguments of cmd before the completed word
	for i := 0; i < len(words)-1; i++ {
		w := words[i]
		if strings.HasPrefix(w, "-") && w != "-" {
			name, _, hasValue := strings.Cut(strings.TrimLeft(w, "-"), "=")
			if f := lookupFlag(flags, name); f != nil && takesValue(f) && !hasValue {
				if i+1 == len(words)-1 { // the completed word is this flag's value
					if values, ok := flagValues.Load(f); ok {
						return values.(func() []string)()
					}
					return nil
				}
				i++
			}
			continue
		}
		if sub := visibleCommand(subs, w); sub != nil && len(before) == 0 {
			cmd, subs, flags = sub, sub.Subcommands, sub.Flags
			continue
		}
		before = append(before, w)
	}
	cur := words[len(words)-1]
	if strings.HasPrefix(cur, "-") {
		var out []string
		for _, f := range flags {
			if f == cli.HelpFlag || isHiddenFlag(f) {
				continue
			}
			names := f.Names()
			long := names[0]
			for _, n := range names {
				if len(n) > 1 {
					long = n
					break
				}
			}
			out = append(out, dashed(long))
		}
		return out
	}
	if len(before) == 0 {
		var out []string
		for _, sub := range subs {
			if !sub.Hidden {
				out = append(out, sub.Name)
			}
		}
		if len(out) > 0 {
			return out
		}
	}
	if cmd != nil {
		if args, ok := commandArgs.Load(cmd); ok {
			return args.(func([]string) []string)(before)
		}
	}
	return nil
}

func visibleCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if !c.Hidden && c.HasName(name) {
			return c
		}
	}
	return nil
}

func takesValue(f cli.Flag) bool {
	df, ok := f.(cli.DocGenerationFlag)
	return ok && df.TakesValue()
}

// bashCompletion asks the binary with every word up to the cursor, the
// current one last (empty for a new word). A word that is complete gets a
// trailing space; a KIND/ prefix does not, so that NAME follows it; with no
// candidate bash completes file names (-o default).
const bashCompletion = `# bash completion for %[1]s; generated by "%[1]s completion bash".
_%[1]s_complete() {
  local cur words cword
  COMPREPLY=()
  if declare -F _init_completion >/dev/null 2>&1; then
    _init_completion -n "=:" || return
  else
    cur="${COMP_WORDS[COMP_CWORD]}"
    words=("${COMP_WORDS[@]}")
    cword=$COMP_CWORD
  fi
  local opts
  opts=$("${words[0]}" "${words[@]:1:$cword}" --generate-bash-completion 2>/dev/null)
  COMPREPLY=($(compgen -W "${opts}" -- "${cur}"))
  if [[ ${#COMPREPLY[@]} -eq 1 && "${COMPREPLY[0]}" == */ ]]; then
    compopt -o nospace 2>/dev/null
  fi
  return 0
}
complete -o bashdefault -o default -F _%[1]s_complete %[1]s
`

// zshCompletion does the same for zsh, loaded from fpath (compinit) or
// sourced.
const zshCompletion = `#compdef %[1]s
# zsh completion for %[1]s; generated by "%[1]s completion zsh".

_%[1]s_complete() {
  local -a opts prefixes
  opts=("${(@f)$("${words[1]}" "${(@)words[2,CURRENT]}" --generate-bash-completion 2>/dev/null)}")
  opts=(${opts:#})
  prefixes=(${(M)opts:#*/})
  opts=(${opts:#*/})
  if (( ${#opts} + ${#prefixes} == 0 )); then
    _files
    return
  fi
  (( ${#opts} )) && compadd -- "${opts[@]}"
  (( ${#prefixes} )) && compadd -S '' -- "${prefixes[@]}"
  return 0
}

if [[ "${funcstack[1]}" == "_%[1]s" ]]; then
  _%[1]s_complete "$@"
else
  compdef _%[1]s_complete %[1]s
fi
`
