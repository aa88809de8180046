package commands

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/admin"
	"github.com/mbot-dev/mbot/authority/locks"
	"github.com/mbot-dev/mbot/identity"
	"github.com/urfave/cli/v2"
)

func unlockCommand() *cli.Command {
	return &cli.Command{
		Name:      "unlock",
		Usage:     "lift a lock set by mbot lock (KIND/NAME, --claim), or the lock the authority set on a copied bot instance or bound_keypair join token",
		ArgsUsage: "KIND/NAME | --claim NAME=VALUE | BOT | --admin NAME | --instance ID | --join-token NAME",
		Description: `mbot unlock KIND/NAME (bot/NAME, bot_instance/ID, join_token/NAME,
role/NAME, cert/SERIAL, admin/NAME) or --claim NAME=VALUE lifts a lock that
mbot lock set (mbot get locks lists them); it counts on every replica when
the command returns. Where an admin set no lock on a bot, bot instance or
join token, it lifts the lock the authority set there itself, as below.

The authority locks a bot instance (instance_locked) when a certificate
generation of a token join that was already renewed is presented again: a
copy of that runner's identity is in use elsewhere. Only that instance (one
runner's renewal chain) is locked; the bot's other runners keep renewing.
mbot get bot_instances lists the instances, their runner (first join time
and address) and state. Unlocking an instance lifts its lock and, since the
copy cannot be told from the original, ends its renewals: the daemon holding
it is refused at its next renewal (renewal_refused) and joins again with a
new secret. Unlocking a BOT lifts the locks of all its locked instances (and
a bot-wide lock written by an earlier authority, which ends every renewal of
the bot). Something that is not locked is refused (exit 1) and left alone.
The unlock is recorded in mbot audit. Example:

   mbot get bot_instances deployer --config authority.yaml
   mbot unlock bot_instance/5d41402abc4b2a76b9719d911017c592 --config authority.yaml
   mbot tokens add --bot deployer --config authority.yaml   # a new secret for that runner

With --join-token NAME it lifts the lock on a bound_keypair join token
(join_token_locked: its key was used from two places). The key and the join
sequence stay, so the holder with the current sequence joins again and a
copy with an older one locks the token again. To shut a copy out for good,
bind a new key instead: mbot tokens add --name NAME --method bound_keypair
--rotate [--public-key FILE], which also lifts the lock.

With --admin NAME it lifts a lock that mbot lock --admin put on an admin:
its identities that have not expired work again.`,
		Flags: append(adminFlags(), outputFlag("text", "json"),
			&cli.StringFlag{Name: "instance", Usage: "unlock this bot instance (its ID, as mbot get bot_instances lists it); the same as bot_instance/ID"},
			&cli.StringFlag{Name: "admin", Usage: "unlock this admin (see mbot lock); the same as admin/NAME"},
			&cli.StringFlag{Name: "claim", Usage: "lift the lock mbot lock --claim NAME=VALUE set"},
			&cli.StringFlag{Name: "join-token", Usage: "unlock this join token; the same as join_token/NAME"}),
		Action: func(c *cli.Context) error {
			args, err := positionalArgs(c)
			if err != nil {
				return err
			}
			noFlag := c.String("instance") == "" && c.String("admin") == "" && c.String("claim") == "" && c.String("join-token") == ""
			if len(args) == 1 && !strings.Contains(args[0], "/") && noFlag {
				// mbot unlock BOT, as before KIND/NAME.
				return unlockWith(c, func(client admin.Client) (*admin.Unlocked, error) {
					return client.Unlock(c.Context, args[0])
				}, printUnlocked)
			}
			var kind, target string
			switch {
			case c.String("instance") != "" && len(args) == 0 && c.String("admin") == "" && c.String("claim") == "" && c.String("join-token") == "":
				kind, target = locks.KindInstance, c.String("instance")
			case c.String("join-token") != "" && len(args) == 0 && c.String("admin") == "" && c.String("claim") == "":
				kind, target = locks.KindJoinToken, c.String("join-token")
			default:
				if c.String("instance") != "" || c.String("join-token") != "" {
					return usagef("usage: mbot unlock KIND/NAME, --claim NAME=VALUE, --admin NAME, --instance ID or --join-token NAME: one of them")
				}
				if kind, target, err = lockTarget(c, "unlock"); err != nil {
					return err
				}
			}
			return unlockWith(c, func(client admin.Client) (*admin.LockLifted, error) {
				return client.UnlockLock(c.Context, kind, target)
			}, printLockLifted)
		},
	}
}

// printLockLifted says what mbot unlock KIND/NAME lifted and what still holds.
func printLockLifted(u *admin.LockLifted) {
	if l := u.Lifted; l != nil {
		fmt.Printf("unlocked %s (locked since %s by %s: %s).\n", identity.Printable(l.Name()), l.Since.Format(time.RFC3339),
			identity.Printable(l.LockedBy), identity.Printable(l.Reason))
	}
	if u.Instances != nil {
		printUnlocked(u.Instances)
	}
	if u.JoinToken != nil {
		printJoinTokenUnlocked(u.JoinToken)
	}
	for _, l := range u.Remaining {
		fmt.Printf("%s is still locked by %s (since %s: %s); mbot unlock %s again lifts that lock too.\n", identity.Printable(l.Name()),
			identity.Printable(l.LockedBy), l.Since.Format(time.RFC3339), identity.Printable(l.Reason), identity.Printable(l.Name()))
	}
}

// printUnlocked says what an unlock lifted and what the runners must do.
func printUnlocked(u *admin.Unlocked) {
	if u.BotLock != nil {
		fmt.Printf("lifted the bot-wide lock on bot %s (locked since %s by a copy from join token %s).\n",
			u.Bot, u.BotLock.LockedSince.Format(time.RFC3339), identity.Printable(u.BotLock.LockedBy))
	}
	for _, in := range u.Instances {
		runner := "runner unknown"
		if !in.FirstJoin.IsZero() {
			runner = "first joined " + in.FirstJoin.Format(time.RFC3339) + " from " + identity.Printable(in.Runner)
		}
		fmt.Printf("unlocked instance %s of bot %s (join token %s, %s; locked since %s).\n",
			in.ID, u.Bot, identity.Printable(in.JoinToken), runner, in.LockedSince.Format(time.RFC3339))
	}
	ended := "no token-joined identity of it was renewing"
	if len(u.EndedJoinTokens) > 0 {
		ended = "the identities from join tokens " + identity.Printable(strings.Join(u.EndedJoinTokens, ", ")) + " are refused at their next renewal"
	}
	fmt.Printf("%s; the bot's other instances keep renewing.\n"+
		"Give each of those runners a new secret: mbot tokens add --bot %s.\n", ended, u.Bot)
}

// unlockWith opens the admin client, runs unlock with it and prints what
// it lifted: as JSON with -o json, else with print.
func unlockWith[T any](c *cli.Context, unlock func(admin.Client) (T, error), print func(T)) error {
	format, err := outputFormat(c, "text", "json")
	if err != nil {
		return err
	}
	client, err := openAdmin(c)
	if err != nil {
		return err
	}
	defer client.Close()
	lifted, err := unlock(client)
	if err != nil {
		return err
	}
	if format == "json" {
		return writeJSON(os.Stdout, lifted)
	}
	print(lifted)
	return nil
}

func printJoinTokenUnlocked(u *admin.JoinTokenUnlocked) {
	fmt.Printf("unlocked join token %s (locked since %s: %s); the runner with the current join sequence joins again.\n",
		u.JoinToken, u.LockedSince.Format(time.RFC3339), u.Reason)
}
