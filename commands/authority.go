package commands

import (
	"strings"

	"fmt"
	"os"

	"github.com/mbot-dev/mbot/authority"
	"github.com/urfave/cli/v2"
)

func authorityConfigFlag() *cli.StringFlag {
	return &cli.StringFlag{Name: "config", Aliases: []string{"c"}, EnvVars: []string{"MBOT_AUTHORITY_CONFIG"},
		Value: "authority.yaml", Usage: "authority configuration file"}
}

func authorityCommand() *cli.Command {
	return &cli.Command{
		Name:  "authority",
		Usage: "run the authority that verifies join proofs and signs certificates",
		Subcommands: []*cli.Command{
			{
				Name:  "start",
				Usage: "serve the authority API (creates the CAs on first start)",
				Description: `Example:

   mbot authority start --config authority.yaml`,
				Flags: []cli.Flag{authorityConfigFlag()},
				Action: func(c *cli.Context) error {
					cfg, err := authority.LoadConfig(c.String("config"))
					if err != nil {
						return err
					}
					a, err := authority.Open(c.Context, cfg, authority.Options{})
					if err != nil {
						return err
					}
					defer a.Close()
					return a.Serve(c.Context, nil)
				},
			},
			{
				Name:  "export",
				Usage: "print the CA pin or a CA for clients and servers",
				Description: `Examples:

   mbot authority export --type ca-pin        # for mbot issue --ca-pin
   mbot authority export --type ssh-user-ca   # a line for sshd's TrustedUserCAKeys
   mbot authority export --type ssh-host-ca   # for known_hosts @cert-authority lines
   mbot authority export --type tls-ca        # PEM, for servers that verify bots' client certificates
   mbot authority export --type database-client-ca    # PEM, a database server's ssl_ca_file / ssl-ca
   mbot authority export --type database-server-ca    # PEM, signs servers of mbot sign --format postgres|mysql
   mbot authority export --type kubernetes-client-ca  # PEM, the API server's --client-ca-file
   mbot authority export --type spiffe-ca             # PEM, the SPIFFE X.509 trust bundle
   mbot authority export --type jwt-jwks              # JSON Web Key Set of the JWT-SVID signing key
   mbot authority export --type spiffe-bundle         # SPIFFE bundle (JWKS): spiffe CA and JWT key, for federation`,
				Flags: []cli.Flag{authorityConfigFlag(),
					&cli.StringFlag{Name: "type", Required: true, Usage: strings.Join(authority.ExportTypes, ", ")}},
				Action: func(c *cli.Context) error {
					st, cas, err := openCAs(c)
					if err != nil {
						return err
					}
					defer st.Close()
					out, err := cas.Export(c.String("type"))
					if err != nil {
						return usagef("%v", err)
					}
					_, err = fmt.Fprint(os.Stdout, out)
					return err
				},
			},
			migrateStoreCommand(),
		},
	}
}
