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
		ArgsUsage: "BOT | --admin NAME | --join-token NAME",
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

With --join-token NAME it lifts the lock on a bound_keypair join token
(join_token_locked: its key was used from two places). The key and the join
sequence stay, so the holder with the current sequence joins again and a
copy with an older one locks the token again. To shut a copy out for good,
bind a new key instead: mbot tokens add --name NAME --method bound_keypair
--rotate [--public-key FILE], which also lifts the lock.

With --admin NAME it lifts a lock that mbot lock --admin put on an admin:
its identities that have not expired work again.`,
		Flags: append(adminFlags(), outputFlag("text", "json"),
			&cli.StringFlag{Name: "admin", Usage: "unlock this admin (see mbot lock) instead of a bot"},
			&cli.StringFlag{Name: "join-token", Usage: "unlock this bound_keypair join token (join_token_locked) instead of a bot"}),
		Action: func(c *cli.Context) error {
			args, err := positionalArgs(c)
			if err != nil {
				return err
			}
			if name := c.String("join-token"); name != "" {
				if len(args) > 0 || c.String("admin") != "" {
					return usagef("mbot unlock takes a BOT, --admin NAME or --join-token NAME, one of them")
				}
				return unlockJoinToken(c, name)
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

func unlockJoinToken(c *cli.Context, name string) error {
	format, err := outputFormat(c, "text", "json")
	if err != nil {
		return err
	}
	client, err := openAdmin(c)
	if err != nil {
		return err
	}
	defer client.Close()
	u, err := client.UnlockJoinToken(c.Context, name)
	if err != nil {
		return err
	}
	if format == "json" {
		return writeJSON(os.Stdout, u)
	}
	fmt.Printf("unlocked join token %s (locked since %s: %s); the runner with the current join sequence joins again.\n",
		u.JoinToken, u.LockedSince.Format(time.RFC3339), u.Reason)
	return nil
}
