package commands

import (
	"fmt"
	"os"
	"time"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/identity"
	"github.com/urfave/cli/v2"
)

func signCommand() *cli.Command {
	return &cli.Command{
		Name:  "sign",
		Usage: "issue credentials directly from the authority's CAs (run on the authority host)",
		Description: `Host credentials for a server that mbot identities connect to:

   mbot sign --config authority.yaml --host web1.acme.internal,10.0.0.5 --out ./web1
   # sshd_config: HostKey ./web1/key, HostCertificate ./web1/key-cert.pub`,
		Flags: []cli.Flag{authorityConfigFlag(),
			&cli.StringFlag{Name: "host", Usage: "comma-separated host names and addresses"},
			&cli.StringFlag{Name: "out", Required: true, Usage: "directory to write the credentials to"},
			&cli.DurationFlag{Name: "ttl", Value: 8760 * time.Hour, Usage: "certificate lifetime"},
		},
		Action: func(c *cli.Context) error {
			names := splitList(c.String("host"))
			if len(names) == 0 {
				return usagef("mbot sign needs --host NAME[,NAME]")
			}
			cfg, err := authority.LoadConfig(c.String("config"))
			if err != nil {
				return err
			}
			st, cas, err := authority.OpenAdmin(c.Context, cfg)
			if err != nil {
				return err
			}
			defer st.Close()
			files, err := authority.SignHost(c.Context, st, cas, names, c.Duration("ttl"))
			if err != nil {
				return err
			}
			if err := identity.WriteDir(c.String("out"), files); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "mbot: wrote host credentials for %v to %s\n", names, c.String("out"))
			return nil
		},
	}
}
