package commands

import (
	"os"

	"github.com/mbot-dev/mbot/internal/demo"
	"github.com/urfave/cli/v2"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run the whole flow on this machine: authority, simulated GitHub Actions job, real mbot issue",
		Description: `Starts an authority on the embedded database in a temporary directory and a
simulated GitHub Actions OIDC issuer, runs mbot issue against them, writes the
identity to --out and stops everything. Example:

   mbot demo && ssh-keygen -L -f ./mbot-demo/key-cert.pub`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Value: "./mbot-demo", Usage: "directory to write the demo identity to"},
		},
		Action: func(c *cli.Context) error {
			return demo.Run(c.Context, os.Stdout, c.String("out"))
		},
	}
}
