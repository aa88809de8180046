package commands

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/admin"
	"github.com/mbot-dev/mbot/identity"
	"github.com/urfave/cli/v2"
)

func unlockCommand() *cli.Command {
	return &cli.Command{
		Name:      "unlock",
		Usage:     "lift the lock on a bot instance whose identity was copied, ending its renewals (or on every instance of a bot, on an admin: --admin NAME, or on a bound_keypair join token: --join-token NAME)",
		ArgsUsage: "bot_instance/ID | --instance ID | BOT | --admin NAME | --join-token NAME",
		Description: `The authority locks a bot instance (instance_locked) when a certificate
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
			&cli.StringFlag{Name: "instance", Usage: "unlock this bot instance (its ID, as mbot get bot_instances lists it)"},
			&cli.StringFlag{Name: "admin", Usage: "unlock this admin (see mbot lock) instead of a bot"},
			&cli.StringFlag{Name: "join-token", Usage: "unlock this bound_keypair join token (join_token_locked) instead of a bot"}),
		Action: func(c *cli.Context) error {
			args, err := positionalArgs(c)
			if err != nil {
				return err
			}
			instance, adminName, joinToken := c.String("instance"), c.String("admin"), c.String("join-token")
			if len(args) == 1 {
				if id, ok := strings.CutPrefix(args[0], "bot_instance/"); ok {
					instance, args = id, nil
				}
			}
			given := len(args)
			for _, f := range []string{instance, adminName, joinToken} {
				if f != "" {
					given++
				}
			}
			if given != 1 {
				return usagef("usage: mbot unlock bot_instance/ID (or --instance ID), mbot unlock BOT, mbot unlock --admin NAME or mbot unlock --join-token NAME: one of them")
			}
			switch {
			case joinToken != "":
				return unlockWith(c, func(client admin.Client) (*admin.JoinTokenUnlocked, error) {
					return client.UnlockJoinToken(c.Context, joinToken)
				}, printJoinTokenUnlocked)
			case adminName != "":
				return unlockWith(c, func(client admin.Client) (*admin.AdminLock, error) {
					return client.UnlockAdmin(c.Context, adminName)
				}, printAdminUnlocked)
			case instance != "":
				return unlockWith(c, func(client admin.Client) (*admin.Unlocked, error) {
					return client.UnlockInstance(c.Context, instance)
				}, printUnlocked)
			default:
				return unlockWith(c, func(client admin.Client) (*admin.Unlocked, error) {
					return client.Unlock(c.Context, args[0])
				}, printUnlocked)
			}
		},
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

func printAdminUnlocked(l *admin.AdminLock) {
	fmt.Printf("unlocked admin %s (locked since %s: %s); its identities that have not expired work again.\n",
		l.Admin, l.Time.Format(time.RFC3339), l.Reason)
}

func printJoinTokenUnlocked(u *admin.JoinTokenUnlocked) {
	fmt.Printf("unlocked join token %s (locked since %s: %s); the runner with the current join sequence joins again.\n",
		u.JoinToken, u.LockedSince.Format(time.RFC3339), u.Reason)
}
