package commands

import (
	"fmt"
	"os"
	"time"

	"github.com/urfave/cli/v2"
)

func lockCommand() *cli.Command {
	return &cli.Command{
		Name:  "lock",
		Usage: "refuse every identity of an admin at the admin API until mbot unlock --admin",
		Description: `Locks an admin: the admin API refuses its identities (admin_locked) at once
when locked through the admin API, and within 250 ms when locked on the
authority host with --config. This is how a copied or lost admin identity is
revoked before it expires (admin identities live admin_identity_ttl, 24h by
default). Bot instances are locked by the authority itself when a copy of a
runner's identity shows up (see mbot get bot_instances and mbot unlock). The lock is recorded in mbot audit.
Example:

   mbot lock --admin admin --reason "laptop lost" --config authority.yaml
   mbot unlock --admin admin --config authority.yaml`,
		Flags: append(adminFlags(),
			&cli.StringFlag{Name: "admin", Usage: "name of the admin to lock (its identities have URI SAN spiffe://<cluster>/admin/NAME)"},
			&cli.StringFlag{Name: "reason", Usage: "why, for the audit log"},
			outputFlag("text", "json")),
		Action: func(c *cli.Context) error {
			args, err := positionalArgs(c)
			if err != nil {
				return err
			}
			if len(args) > 0 || c.String("admin") == "" {
				return usagef("usage: mbot lock --admin NAME [--reason TEXT]")
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
			l, err := client.LockAdmin(c.Context, c.String("admin"), c.String("reason"))
			if err != nil {
				return err
			}
			if format == "json" {
				return writeJSON(os.Stdout, l)
			}
			fmt.Printf("locked admin %s at %s: the admin API refuses its identities (admin_locked) until mbot unlock --admin %s.\n",
				l.Admin, l.Time.Format(time.RFC3339), l.Admin)
			return nil
		},
	}
}
