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

func lockCommand() *cli.Command {
	return &cli.Command{
		Name:      "lock",
		Usage:     "refuse every join, renewal and exchange of a bot, bot instance, join token, role, certificate or claim (or every admin API request of an admin) until mbot unlock",
		ArgsUsage: "bot/NAME | bot_instance/ID | join_token/NAME | role/NAME | cert/SERIAL | admin/NAME | --claim NAME=VALUE | --admin NAME",
		Description: `Sets a lock. When mbot lock returns, every authority replica sharing the
store refuses what it covers, and leaf clusters refuse the root's locked
bots, instances, certificates, roles, join tokens and claims within a second:

   bot/NAME           every join and renewal of the bot (bot_locked)
   bot_instance/ID    the renewals of one token-joined runner (instance_locked)
   join_token/NAME    every join with the join token and renewal from it (join_token_locked)
   role/NAME          every join, renewal or exchange that would grant the role (role_locked)
   cert/SERIAL        renewals and exchanges presenting that certificate (cert_locked);
                      the serial as mbot audit prints it: ssh:DECIMAL or tls:HEX
   --claim NAME=VALUE every join whose proof carries that identifying claim, as
                      mbot audit shows it, matched exactly (claim_locked), e.g.
                      --claim repository=acme/app for all that repository gets
   admin/NAME         every admin API request of the admin (admin_locked; --admin NAME)

--reason says why (the refusal and mbot get locks show it); --expires ends
the lock by itself, after a duration (2h) or at an RFC 3339 time. The lock
and its unlock are recorded in mbot audit. The unexpired SSH user and X.509
certificates it covers go into the KRL and CRLs. Kubeconfigs (kube-apiserver
reads no CRL) and JWT-SVIDs (at most 1 h) already issued cannot be revoked:
they stop at their expiry and are not renewed; mbot lock says how many it
covers and when the last expires (-o json: unrevocable).
Examples:

   mbot lock bot/deployer --reason "CI secret leaked" --config authority.yaml
   mbot lock --claim repository=acme/app --expires 24h --reason "repository compromised"
   mbot get locks
   mbot unlock bot/deployer`,
		Flags: append(adminFlags(),
			&cli.StringFlag{Name: "admin", Usage: "name of the admin to lock (its identities have URI SAN spiffe://<cluster>/admin/NAME); the same as admin/NAME"},
			&cli.StringFlag{Name: "claim", Usage: "lock every join whose proof carries this identifying claim: NAME=VALUE, as mbot audit shows it"},
			&cli.StringFlag{Name: "reason", Usage: "why, for the refusals, mbot get locks and the audit log"},
			&cli.StringFlag{Name: "expires", Usage: "end the lock after a duration (2h, 30m) or at an RFC 3339 time; by default it stays until mbot unlock"},
			outputFlag("text", "json")),
		Action: func(c *cli.Context) error {
			kind, target, err := lockTarget(c, "lock")
			if err != nil {
				return err
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
			added, err := client.Lock(c.Context, admin.LockRequest{Kind: kind, Target: target, Reason: c.String("reason"), Expires: c.String("expires")})
			if err != nil {
				return err
			}
			if format == "json" {
				return writeJSON(os.Stdout, added)
			}
			printLockAdded(added)
			return nil
		},
	}
}

// lockTarget reads what mbot lock or unlock names: KIND/NAME, --claim or --admin, exactly one.
func lockTarget(c *cli.Context, verb string) (kind, target string, err error) {
	args, err := positionalArgs(c)
	if err != nil {
		return "", "", err
	}
	usage := usagef("usage: mbot %s KIND/NAME (bot/NAME, bot_instance/ID, join_token/NAME, role/NAME, cert/SERIAL, admin/NAME), mbot %s --claim NAME=VALUE or mbot %s --admin NAME: one of them",
		verb, verb, verb)
	given := len(args)
	if c.String("claim") != "" {
		given++
		kind, target = locks.KindClaim, c.String("claim")
	}
	if c.String("admin") != "" {
		given++
		kind, target = locks.KindAdmin, c.String("admin")
	}
	if given != 1 {
		return "", "", usage
	}
	if len(args) == 1 {
		var ok bool
		if kind, target, ok = strings.Cut(args[0], "/"); !ok || target == "" {
			return "", "", usage
		}
		kind = strings.TrimSuffix(kind, "s") // bots/NAME as mbot get spells kinds
		if kind == "bot_instance" || kind == "instance" {
			kind = locks.KindInstance
		}
	}
	return kind, target, nil
}

func printLockAdded(added *admin.LockAdded) {
	l := added.Lock
	until := "until mbot unlock " + identity.Printable(l.Name())
	if l.Kind == locks.KindClaim {
		until = "until mbot unlock --claim " + identity.Printable(l.Target)
	}
	if !l.Expires.IsZero() {
		until = "until " + l.Expires.Format(time.RFC3339) + " (or " + strings.TrimPrefix(until, "until ") + ")"
	}
	fmt.Printf("locked %s at %s %s: %s (%s).\n", identity.Printable(l.Name()), l.Since.Format(time.RFC3339), until,
		lockCovers(l.Kind), l.Code())
	for _, n := range added.Notes {
		fmt.Printf("Note: %s.\n", n)
	}
}

// lockCovers says what a lock of kind refuses.
func lockCovers(kind string) string {
	switch kind {
	case locks.KindAdmin:
		return "the admin API refuses its identities"
	case locks.KindInstance:
		return "its renewals and exchanges are refused"
	case locks.KindCert:
		return "renewals and exchanges presenting the certificate are refused"
	}
	return "every join, renewal and exchange it covers is refused"
}
