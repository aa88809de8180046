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
		Usage:     "lift the lock on a bot whose identity was copied, ending the renewals of its identities",
		ArgsUsage: "BOT",
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
   mbot tokens add --bot deployer --config authority.yaml   # a new secret for each runner`,
		Flags: append(adminFlags(), outputFlag("text", "json")),
		Action: func(c *cli.Context) error {
			args, err := positionalArgs(c)
			if err != nil {
				return err
			}
			if len(args) != 1 {
				return usagef("usage: mbot unlock BOT")
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
