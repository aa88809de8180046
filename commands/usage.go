package commands

import (
	"fmt"
	"os"
	"reflect"
	"strings"

	"github.com/mbot-dev/mbot/internal/lazyregexp"
	"github.com/mbot-dev/mbot/internal/suggest"
	"github.com/urfave/cli/v2"
)

// Mistakes in the command line get one message on stderr that says what
// to change, and exit code 2: a mistyped command or flag names the nearest
// known one, a bad value says the format, and a missing required flag
// prints a one-line usage instead of the whole help on stdout (where it
// would end up in `mbot tokens add -o json > x.json`).

// commandNotFound is the app's CommandNotFound, for commands and subcommands.
func commandNotFound(c *cli.Context, name string) {
	fmt.Fprintln(c.App.ErrWriter, "mbot: "+unknownCommandMessage(c.App, c.Command, name))
	os.Exit(exitUsage)
}

func unknownCommandMessage(app *cli.App, parent *cli.Command, name string) string {
	cmds, path := app.Commands, app.Name
	if parent != nil && len(parent.Subcommands) > 0 && parent.HelpName != "" {
		cmds, path = parent.Subcommands, parent.HelpName
	}
	var names []string
	for _, c := range cmds {
		if !c.Hidden {
			names = append(names, c.Names()...)
		}
	}
	msg := fmt.Sprintf("%s has no command %q", path, name)
	if near := suggest.Nearest(name, names); near != "" {
		msg += fmt.Sprintf(" (did you mean %s?)", near)
	}
	if path == app.Name {
		return msg + "; see " + app.Name + " --help"
	}
	return msg + "; its commands: " + strings.Join(names, ", ")
}

// The errors of Go's flag package and urfave/cli's environment variables.
var (
	invalidFlagValue = lazyregexp.New(`^invalid (?:boolean )?value "(.*)" for (?:flag )?-([\w-]+): (.*)$`)
	invalidEnvValue  = lazyregexp.New(`^could not parse "(.*)" as (\w+) value from env var "(\w+)" for flag ([\w-]+): (.*)$`)
)

// flagUsageError is the commands' OnUsageError: the flag package's message
// in mbot's words, flags written with two dashes.
func flagUsageError(c *cli.Context, err error, _ bool) error {
	var flags []cli.Flag
	path := c.App.Name
	if c.Command != nil {
		flags = c.Command.Flags
		if c.Command.HelpName != "" {
			path = c.Command.HelpName
		}
	} else {
		flags = c.App.Flags
	}
	return explainFlagError(flags, path, err)
}

func explainFlagError(flags []cli.Flag, path string, err error) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
		return usageError{fmt.Errorf("%s", unknownFlagMessage(flags, strings.TrimLeft(name, "-"), path))}
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: "); ok {
		name = strings.TrimLeft(name, "-")
		return usagef("%s needs a value%s", dashed(name), formatHint(lookupFlag(flags, name)))
	}
	if m := invalidFlagValue.FindStringSubmatch(msg); m != nil {
		if hint := formatHint(lookupFlag(flags, m[2])); hint != "" {
			return usagef("%s %q is not valid%s", dashed(m[2]), m[1], hint)
		}
		return usagef("%s %q: %s", dashed(m[2]), m[1], m[3])
	}
	if m := invalidEnvValue.FindStringSubmatch(msg); m != nil {
		if hint := formatHint(lookupFlag(flags, m[4])); hint != "" {
			return usagef("$%s %q (read by %s) is not valid%s", m[3], m[1], dashed(m[4]), hint)
		}
	}
	return usageError{err}
}

// formatHint says how a flag's value is written, for the types whose
// format is not obvious.
func formatHint(f cli.Flag) string {
	switch f.(type) {
	case *cli.DurationFlag:
		return ": write a duration as a number and a unit, such as 90m, 2h or 24h"
	case *cli.BoolFlag:
		return ": write true or false, or give the flag alone"
	case *cli.IntFlag, *cli.Int64Flag, *cli.UintFlag:
		return ": write a whole number"
	}
	return ""
}

// unknownFlagMessage names the nearest flag of the command, if any is near.
func unknownFlagMessage(flags []cli.Flag, name, path string) string {
	var names []string
	for _, f := range flags {
		if isHiddenFlag(f) {
			continue
		}
		for _, n := range f.Names() {
			if len(n) > 1 {
				names = append(names, n)
			}
		}
	}
	msg := fmt.Sprintf("%s has no flag %s", path, dashed(name))
	if near := suggest.Nearest(name, names); near != "" {
		msg += fmt.Sprintf(" (did you mean %s?)", dashed(near))
	}
	return msg + "; see " + path + " --help"
}

func isHiddenFlag(f cli.Flag) bool {
	v := reflect.ValueOf(f)
	if v.Kind() == reflect.Pointer && v.Elem().Kind() == reflect.Struct {
		if h := v.Elem().FieldByName("Hidden"); h.IsValid() && h.Kind() == reflect.Bool {
			return h.Bool()
		}
	}
	return false
}

// dashed writes a flag's name as it is typed: -o, --token.
func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// checkRequiredFlagsQuietly takes the Required flags of every command out
// of urfave/cli's hands, which prints the whole help to stdout when one is
// missing, and checks them in the command's Before instead. It runs as the
// app's Before, so the command definitions (which the CLI reference is
// generated from) keep saying which flags are required.
func checkRequiredFlagsQuietly(cmds []*cli.Command) {
	for _, cmd := range cmds {
		var required []cli.Flag
		for _, f := range cmd.Flags {
			if rf, ok := f.(cli.RequiredFlag); ok && rf.IsRequired() {
				if r := reflect.ValueOf(f).Elem().FieldByName("Required"); r.CanSet() {
					r.SetBool(false)
					required = append(required, f)
				}
			}
		}
		if len(required) > 0 {
			cmd.Before = requireFlags(cmd, required, cmd.Before)
		}
		checkRequiredFlagsQuietly(cmd.Subcommands)
	}
}

func requireFlags(cmd *cli.Command, required []cli.Flag, next cli.BeforeFunc) cli.BeforeFunc {
	return func(c *cli.Context) error {
		for _, f := range required {
			if !c.IsSet(f.Names()[0]) {
				usage := ""
				if df, ok := f.(cli.DocGenerationFlag); ok {
					usage = " (" + df.GetUsage() + ")"
				}
				return usagef("missing %s%s\nusage: %s", dashed(f.Names()[0]), usage, oneLineUsage(cmd, required))
			}
		}
		if next != nil {
			return next(c)
		}
		return nil
	}
}

// oneLineUsage is "mbot tokens add --bot BOT [options]; ... --help for all".
func oneLineUsage(cmd *cli.Command, required []cli.Flag) string {
	line := cmd.HelpName
	for _, f := range required {
		line += " " + dashed(f.Names()[0])
		if df, ok := f.(cli.DocGenerationFlag); ok && df.TakesValue() {
			line += " " + strings.ToUpper(strings.ReplaceAll(f.Names()[0], "-", "_"))
		}
	}
	return line + " [options]   (" + cmd.HelpName + " --help shows them all)"
}
