package commands

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/mbot-dev/mbot/admin"
	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/urfave/cli/v2"
)

// adminFlags are how the admin commands (apply, get, rm, bots add, unlock,
// audit, lint) reach an authority: locally with --config, or remotely with
// --auth.
func adminFlags() []cli.Flag {
	return []cli.Flag{authorityConfigFlag(),
		&cli.StringFlag{Name: "auth", EnvVars: []string{"MBOT_ADMIN_IDENTITY"},
			Usage: "admin identity directory (the authority writes one to <data_dir>/admin); uses the admin API instead of --config"},
		&cli.StringFlag{Name: "authority", EnvVars: []string{"MBOT_AUTHORITY"},
			Usage: "authority URL for --auth (default: the one recorded in the identity's admin.json)"},
	}
}

// openAdmin opens the authority an admin command acts on: remotely through
// the admin API with --auth, otherwise its store directly, on the authority
// host, as configured by --config.
func openAdmin(c *cli.Context) (admin.Client, error) {
	if dir := c.String("auth"); dir != "" {
		return admin.OpenRemote(dir, c.String("authority"))
	}
	cfg, err := authority.LoadConfig(c.String("config"))
	if err != nil {
		return nil, err
	}
	local, err := admin.OpenLocal(c.Context, cfg)
	if err != nil {
		return nil, err
	}
	return local, nil
}

// openCAs opens the store and CAs of the authority that --config names,
// for commands that sign or export on the authority host.
func openCAs(c *cli.Context) (store.Store, *authority.CAs, error) {
	cfg, err := authority.LoadConfig(c.String("config"))
	if err != nil {
		return nil, nil, err
	}
	return authority.OpenAdmin(c.Context, cfg)
}

// outputFlag is -o for commands that print resources or records.
func outputFlag(formats ...string) *cli.StringFlag {
	return withValues(&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: formats[0],
		Usage: "output format: " + strings.Join(formats, ", ")}, func() []string { return formats })
}

// outputFormat returns -o, refusing a format the command does not know.
func outputFormat(c *cli.Context, formats ...string) (string, error) {
	f := c.String("output")
	if !slices.Contains(formats, f) {
		return "", usagef("-o %q is not one of %s", f, strings.Join(formats, ", "))
	}
	return f, nil
}

// parseKind turns roles, bot, join_tokens, ... into a resource kind.
func parseKind(s string) (string, error) {
	if kind, ok := admin.Kinds[s]; ok {
		return kind, nil
	}
	return "", usagef("unknown resource kind %q; use roles, bots, join_tokens, databases, kubernetes_clusters, trusted_clusters or leaf_clusters", s)
}

// positionalArgs returns the command's arguments after applying the flags
// written among them, as in "mbot get bots -o json": urfave/cli stops
// reading flags at the first argument.
func positionalArgs(c *cli.Context) ([]string, error) {
	var args []string
	rest := c.Args().Slice()
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if a == "--" {
			return append(args, rest[i+1:]...), nil
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			args = append(args, a)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		flag := lookupFlag(c.Command.Flags, name)
		if flag == nil {
			return nil, usageError{fmt.Errorf("%s", unknownFlagMessage(c.Command.Flags, name, c.Command.HelpName))}
		}
		if flag == cli.HelpFlag {
			cli.HelpPrinter(c.App.Writer, cli.CommandHelpTemplate, c.Command)
			return nil, cli.Exit("", 0) // urfave/cli exits 0 on it; nothing is open yet
		}
		if _, isBool := flag.(*cli.BoolFlag); isBool && !hasValue {
			value, hasValue = "true", true
		}
		if !hasValue {
			if i+1 == len(rest) {
				return nil, usagef("%s needs a value%s", dashed(name), formatHint(flag))
			}
			i++
			value = rest[i]
		}
		if err := c.Set(flag.Names()[0], value); err != nil {
			return nil, explainFlagError(c.Command.Flags, c.Command.HelpName, fmt.Errorf("invalid value %q for flag -%s: %v", value, name, err))
		}
	}
	return args, nil
}

func lookupFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		if slices.Contains(f.Names(), name) {
			return f
		}
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
