// Package commands is mbot's command line: one file per command, each
// reading flags and environment and making one call into the package that
// does the work.
package commands

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/client"
	"github.com/urfave/cli/v2"
)

// Build information, set with -ldflags by the release build.
var (
	version = "dev"
	commit  = "none"
	date    = "unknown"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the operation failed: refusal, unreachable authority, bad input
	exitUsage   = 2 // the command line itself is wrong
)

// App builds the mbot command tree.
func App() *cli.App {
	versionText, shortVersion := buildVersion()
	authority.Version = shortVersion
	app := &cli.App{
		Name:    "mbot",
		Usage:   "short-lived machine identities for CI jobs, with no stored secret",
		Version: versionText,
		Commands: []*cli.Command{
			issueCommand(),
			startCommand(),
			authorityCommand(),
			signCommand(),
			applyCommand(),
			getCommand(),
			rmCommand(),
			botsCommand(),
			lockCommand(),
			unlockCommand(),
			tokensCommand(),
			auditCommand(),
			lintCommand(),
			consoleCommand(),
			demoCommand(),
			completionCommand(),
		},
		HideHelpCommand:      true,
		OnUsageError:         flagUsageError,
		CommandNotFound:      commandNotFound,
		EnableBashCompletion: true,
	}
	app.Before = func(*cli.Context) error {
		checkRequiredFlagsQuietly(app.Commands)
		return nil
	}
	// urfave/cli calls a command's own OnUsageError for its flags. No
	// command has a "help" subcommand: --help is enough, and completion
	// would offer it beside the real ones.
	var setUsage func(cmds []*cli.Command)
	setUsage = func(cmds []*cli.Command) {
		for _, c := range cmds {
			if c.OnUsageError == nil {
				c.OnUsageError = app.OnUsageError
			}
			c.HideHelpCommand = true
			setUsage(c.Subcommands)
		}
	}
	setUsage(app.Commands)
	registerCompletions(app)
	for _, c := range app.Commands {
		c.Category = categories[c.Name]
	}
	return app
}

// categories groups the commands in mbot --help.
var categories = map[string]string{
	"issue": categoryJob, "start": categoryJob, "demo": categoryJob, "completion": categoryJob,
	"authority": categoryAuthority, "sign": categoryAuthority,
	"apply": categoryAdmin, "get": categoryAdmin, "rm": categoryAdmin, "bots": categoryAdmin, "lock": categoryAdmin,
	"unlock": categoryAdmin, "tokens": categoryAdmin, "audit": categoryAdmin, "lint": categoryAdmin, "console": categoryAdmin,
}

// urfaveFlagString is urfave/cli's own rendering of a flag's help line.
var urfaveFlagString = cli.FlagStringer

func init() { cli.FlagStringer = flagString }

// flagString renders a flag's help line as urfave/cli does, without its
// "(default: ...)" when the usage text already says what the default is:
// a flag whose zero value means "unset" would otherwise show two defaults,
// "(default 1h0m0s) (default: 0s)".
func flagString(f cli.Flag) string {
	line := urfaveFlagString(f)
	df, ok := f.(cli.DocGenerationFlag)
	if !ok || !strings.Contains(df.GetUsage(), "default") {
		return line
	}
	if d := df.GetDefaultText(); d != "" {
		line = strings.Replace(line, df.GetUsage()+" (default: "+d+")", df.GetUsage(), 1)
	}
	return line
}

// Run runs the command line and returns the process exit code.
func Run(args []string) int {
	app := App()
	// SIGINT and SIGTERM cancel the command's context (mbot issue removes
	// what it has not finished writing), from the app's Before on: --version
	// and --help have nothing to clean up and do not pay for the handler's
	// goroutines and locked thread.
	stop := func() {}
	defer func() { stop() }()
	before := app.Before
	app.Before = func(c *cli.Context) error {
		c.Context, stop = signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
		return before(c)
	}
	if err := app.RunContext(context.Background(), args); err != nil {
		fmt.Fprintf(os.Stderr, "mbot: %v\n", err)
		var usage usageError
		if errors.As(err, &usage) || errors.Is(err, client.ErrMissingSettings) || errors.Is(err, client.ErrBadSetting) {
			return exitUsage
		}
		return exitFailure
	}
	return exitOK
}

// usageError marks a mistake in the command line.
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// The groups of mbot --help.
const (
	categoryJob       = "In a CI job, on a runner, or trying mbot"
	categoryAuthority = "On the authority host"
	categoryAdmin     = "Administration (on the authority host, or with --auth over the admin API)"
)
