package commands

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

func unlockCommand() *cli.Command {
	return &cli.Command{
		Name:      "unlock",
		Usage:     "lift the lock on a bot whose identity was copied, ending the renewals of its identities (or on an admin: --admin NAME)",
		ArgsUsage: "BOT | --admin NAME",
		Description: `The authority locks a bot (bot_locked) when a certificate generation of a
token join that was already renewed is presented again: a copy of the bot's
identity is in use elsewhere. Unlocking lifts the lock and, since the copy
cannot be told from the original, ends the renewals of every identity of the
bot: the daemons holding one are refused at their next renewal
(renewal_refused) and join again with a new secret. Joins of other methods
(github, kubernetes, ...) are admitted again. A bot that is not locked is
refused (exit 1) and left alone. The unlock is recorded in mbot audit.
Example:

   mbot unlock deployer --config authority.yaml
   mbot tokens add --bot deployer --config authority.yaml   # a new secret for each runner

With --admin NAME it lifts a lock that mbot lock --admin put on an admin:
its identities that have not expired work again.`,
		Flags: append(adminFlags(), outputFlag("text", "json"),
			&cli.StringFlag{Name: "admin", Usage: "unlock this admin (see mbot lock) instead of a bot"}),
		Action: func(c *cli.Context) error {
			args, err := positionalArgs(c)
			if err != nil {
				return err
			}
			if admin := c.String("admin"); admin != "" {
				if len(args) > 0 {
					return usagef("mbot unlock takes a BOT or --admin NAME, not both")
				}
				return unlockAdmin(c, admin)
			}
			if len(args) != 1 {
				return usagef("usage: mbot unlock BOT, or mbot unlock --admin NAME")
			}
			format, err := outputFormat(c, "text", "json")
			if err != nil {
				return err
			}
			client, err := openAdmin(c)
			if err != nil {
				return err
			}
			defer client.Close()
			u, err := client.Unlock(c.Context, args[0])
			if err != nil {
				return err
			}
			if format == "json" {
				return writeJSON(os.Stdout, u)
			}
			ended := "no token-joined identity of it was renewing"
			if len(u.EndedJoinTokens) > 0 {
				ended = "the identities from join tokens " + strings.Join(u.EndedJoinTokens, ", ") + " are refused at their next renewal"
			}
			fmt.Printf("unlocked bot %s (locked since %s by a copy from join token %s); %s.\n"+
				"Give each of its token-joined runners a new secret: mbot tokens add --bot %s; other join methods join again by themselves.\n",
				u.Bot, u.LockedSince.Format(time.RFC3339), u.LockedBy, ended, u.Bot)
			return nil
		},
	}
}

func unlockAdmin(c *cli.Context, name string) error {
	format, err := outputFormat(c, "text", "json")
	if err != nil {
		return err
	}
	client, err := openAdmin(c)
	if err != nil {
		return err
	}
	defer client.Close()
	l, err := client.UnlockAdmin(c.Context, name)
	if err != nil {
		return err
	}
	if format == "json" {
		return writeJSON(os.Stdout, l)
	}
	fmt.Printf("unlocked admin %s (locked since %s: %s); its identities that have not expired work again.\n",
		l.Admin, l.Time.Format(time.RFC3339), l.Reason)
	return nil
}
