package commands

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/mbot-dev/mbot/admin"
	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/identity"
	"github.com/urfave/cli/v2"
)

func lintCommand() *cli.Command {
	return &cli.Command{
		Name:  "lint",
		Usage: "check what every bot is granted and what would block it",
		Description: `For each bot, lists its roles and the logins each grants once templates such
as "{{internal.logins}}" expand from the bot's traits, then reports:

   error    roles with require_session_mfa: true or device_trust_mode: required
            (their joins are refused at issue time), cluster-wide
            require_session_mfa or device_trust_mode: required in authority.yaml,
            which no bot can satisfy, and join tokens whose allow rules do not
            pin the owner (organization, project, account): the authority
            refuses to start with them, and the message says what to add
   warning  templates that expand to nothing because the bot lacks the trait,
            bots without any login, role max_ttl above the 24h bot cap

Before the authority's first start (no database in data_dir yet) it reads
the resources: files of authority.yaml and reports on them, creating
nothing. Exits 1 when there is an error. Example:

   mbot lint --config authority.yaml`,
		Flags: append(adminFlags(), outputFlag("text", "json")),
		Action: func(c *cli.Context) error {
			args, err := positionalArgs(c)
			if err != nil {
				return err
			}
			if len(args) > 0 {
				return usagef("mbot lint takes no arguments, got %q", args)
			}
			format, err := outputFormat(c, "text", "json")
			if err != nil {
				return err
			}
			set, settings, err := lintedResources(c)
			if err != nil {
				return err
			}
			report := admin.Lint(set, settings)
			if format == "json" {
				if err := writeJSON(os.Stdout, report); err != nil {
					return err
				}
			} else {
				writeLintReport(os.Stdout, report)
			}
			if n := report.Blocking(); n > 0 {
				return fmt.Errorf("lint found %d blocking problem(s)", n)
			}
			return nil
		},
	}
}

// lintedResources are the resources and settings mbot lint checks: those
// in effect, or, before the first start (no store yet), those of the
// resources: files, read without creating data_dir or the database.
func lintedResources(c *cli.Context) (*resources.Set, *admin.Settings, error) {
	if c.String("auth") == "" {
		cfg, err := authority.LoadConfig(c.String("config"))
		if err != nil {
			return nil, nil, err
		}
		if !authority.StoreCreated(cfg) {
			set, err := authority.ResourceFileSet(cfg)
			if err != nil {
				return nil, nil, err
			}
			settings := admin.SettingsOf(cfg)
			settings.CAKeysAtRest = "sealed"
			if kek, err := authority.LoadKEK(cfg); err != nil {
				return nil, nil, err
			} else if kek == nil {
				settings.CAKeysAtRest = "clear"
			}
			fmt.Fprintf(os.Stderr, "mbot: the authority has not started yet (no database in %s): linting its resources: files (%s); nothing was created\n",
				cfg.DataDir, strings.Join(cfg.Resources, ", "))
			return set, settings, nil
		}
	}
	client, err := openAdmin(c)
	if err != nil {
		return nil, nil, err
	}
	defer client.Close()
	set, err := client.Resources(c.Context)
	if err != nil {
		return nil, nil, err
	}
	settings, err := client.Settings(c.Context)
	if err != nil {
		return nil, nil, err
	}
	return set, settings, nil
}

func writeLintReport(w io.Writer, r *admin.Report) {
	traitOnly := false
	for _, b := range r.Bots {
		fmt.Fprintf(w, "bot %s\n", displayName(b.Bot))
		for _, rl := range b.Roles {
			logins, marked := formatLogins(rl)
			traitOnly = traitOnly || marked
			fmt.Fprintf(w, "  role %s: %s\n", displayName(rl.Role), logins)
			for _, g := range formatGrants(rl) {
				fmt.Fprintf(w, "    %s\n", g)
			}
		}
	}
	if len(r.Bots) == 0 {
		fmt.Fprintln(w, "no bots")
	}
	if traitOnly {
		fmt.Fprint(w, traitOnlyNote)
	}
	if len(r.Findings) > 0 {
		fmt.Fprintln(w)
	}
	for _, f := range r.Findings {
		// A message may span lines (a rule shown with the line to add);
		// each line is escaped on its own.
		lines := strings.Split(f.Message, "\n")
		for i, l := range lines {
			lines[i] = identity.Printable(l)
		}
		fmt.Fprintf(w, "%s: %s\n", f.Severity, strings.Join(lines, "\n"))
	}
	warnings := len(r.Findings) - r.Blocking()
	fmt.Fprintf(w, "\n%d error(s), %d warning(s)\n", r.Blocking(), warnings)
}
