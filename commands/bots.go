package commands

import (
	"fmt"

	"github.com/mbot-dev/mbot/admin"
	"github.com/urfave/cli/v2"
)

func botsCommand() *cli.Command {
	return &cli.Command{
		Name:  "bots",
		Usage: "manage bots",
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "create or replace a bot with roles and SSH logins",
				ArgsUsage: "NAME",
				Description: `Writes a bot resource holding --roles, whose logins trait is --logins; roles
grant those logins through "{{internal.logins}}". Replacing an existing bot
keeps its other traits. The roles must exist. A join token then names the
bot (mbot apply -f). Example:

   mbot bots add deployer --roles deploy --logins ubuntu,ci --config authority.yaml
   mbot get bots deployer   # which logins each role grants it`,
				Flags: append(adminFlags(),
					&cli.StringFlag{Name: "roles", Usage: "comma-separated roles the bot holds"},
					&cli.StringFlag{Name: "logins", Usage: "comma-separated SSH logins, the bot's logins trait"}),
				Action: func(c *cli.Context) error {
					args, err := positionalArgs(c)
					if err != nil {
						return err
					}
					if len(args) != 1 {
						return usagef("usage: mbot bots add NAME --roles a,b [--logins x,y]")
					}
					roles := splitList(c.String("roles"))
					if len(roles) == 0 {
						return usagef("--roles is required: the roles the bot holds, comma-separated")
					}
					client, err := openAdmin(c)
					if err != nil {
						return err
					}
					defer client.Close()
					set, err := client.Resources(c.Context)
					if err != nil {
						return err
					}
					doc, err := admin.BotDocument(set, args[0], roles, splitList(c.String("logins")))
					if err != nil {
						return err
					}
					applied, err := client.Apply(c.Context, "mbot bots add", doc)
					if err != nil {
						return err
					}
					for _, name := range applied {
						fmt.Printf("applied %s\n", name)
					}
					return nil
				},
			},
		},
	}
}
