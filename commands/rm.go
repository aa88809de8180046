package commands

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

func rmCommand() *cli.Command {
	return &cli.Command{
		Name:      "rm",
		Usage:     "remove roles, bots, join tokens, databases or kubernetes clusters",
		ArgsUsage: "KIND/NAME [KIND/NAME...]",
		Description: `Removes each resource in the order given. A role that a bot holds, or a bot
that a join token names, is not removed: remove or change what refers to it
first. A resource that authority.yaml's resources: files define comes back
at the next start. Example:

   mbot rm --config authority.yaml join_token/github-deploy bot/deployer role/deploy`,
		Flags: adminFlags(),
		Action: func(c *cli.Context) error {
			args, err := positionalArgs(c)
			if err != nil {
				return err
			}
			if len(args) == 0 {
				return usagef("usage: mbot rm KIND/NAME (for example role/deploy)")
			}
			type target struct{ kind, name string }
			var targets []target
			for _, arg := range args {
				k, name, ok := strings.Cut(arg, "/")
				if !ok || name == "" {
					return usagef("%q is not KIND/NAME (for example role/deploy, bot/deployer, join_token/github-deploy)", arg)
				}
				kind, err := parseKind(k)
				if err != nil {
					return err
				}
				targets = append(targets, target{kind, name})
			}
			client, err := openAdmin(c)
			if err != nil {
				return err
			}
			defer client.Close()
			for _, t := range targets {
				set, err := client.Resources(c.Context)
				if err != nil {
					return err
				}
				if err := set.CheckRemovable(t.kind, t.name); err != nil {
					return fmt.Errorf("cannot remove %s/%s: %w", t.kind, t.name, err)
				}
				if err := client.Delete(c.Context, t.kind, t.name); err != nil {
					return err
				}
				fmt.Printf("removed %s/%s\n", t.kind, t.name)
			}
			return nil
		},
	}
}
