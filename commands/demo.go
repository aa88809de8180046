package commands

import (
	"os"

	"github.com/mbot-dev/mbot/internal/demo"
	"github.com/urfave/cli/v2"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run the whole flow on this machine: authority, simulated GitHub Actions job, real mbot issue, real SSH login",
		Description: `Starts an authority on the embedded database in a temporary directory and a
simulated GitHub Actions OIDC issuer, runs mbot issue against them and writes
the identity to --out. The job then logs in with the written ssh_config to a
real sshd started on 127.0.0.1 (trusting the SSH user CA, presenting a host
certificate), as the user running the demo, and connects with tls.crt to an
mTLS echo server. Where sshd or ssh is missing it says so and shows the
command it would run. Without --keep everything stops at the end; with
--keep the authority, the simulated platform and the sshd keep running and
the demo prints the export lines and commands to continue by hand, until
Ctrl-C. Examples:

   mbot demo && ssh-keygen -L -f ./mbot-demo/key-cert.pub
   mbot demo --keep     # then, in another shell: the printed exports, mbot issue, ssh, mbot audit`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Value: "./mbot-demo", Usage: "directory to write the demo identity to"},
			&cli.BoolFlag{Name: "keep", Usage: "keep the authority, the simulated platform and the sshd running until Ctrl-C, and print how to use them"},
		},
		Action: func(c *cli.Context) error {
			return demo.Run(c.Context, os.Stdout, demo.Options{Out: c.String("out"), Keep: c.Bool("keep")})
		},
	}
}
