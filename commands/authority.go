package commands

import (
	"os/user"
	"strings"
	"time"

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
				Description: `Examples:

   mbot authority start --config authority.yaml
   mbot authority start --config authority.yaml --log-format json   # one JSON object per line

With metrics_listen: in authority.yaml it also serves /metrics, /healthz and
/readyz over plain HTTP on that address (docs/operations.md).`,
				Flags: []cli.Flag{authorityConfigFlag(),
					&cli.StringFlag{Name: "log-format", EnvVars: []string{"MBOT_LOG_FORMAT"}, Value: "text",
						Usage: "log format on stderr: " + strings.Join(authority.LogFormats, " or ")}},
				Action: func(c *cli.Context) error {
					logger, err := authority.NewLogger(os.Stderr, c.String("log-format"))
					if err != nil {
						return usagef("%v", err)
					}
					cfg, err := authority.LoadConfig(c.String("config"))
					if err != nil {
						return err
					}
					a, err := authority.Open(c.Context, cfg, authority.Options{Logger: logger})
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
   mbot authority export --type spiffe-bundle         # SPIFFE bundle (JWKS): spiffe CA and JWT key, for federation
   mbot authority export --type ssh-krl > revoked_keys          # OpenSSH KRL of locked certificates, for sshd's RevokedKeys
   mbot authority export --type crl --purpose database-client   # PEM CRL, for ssl_crl_file (PostgreSQL), ssl_crl (MariaDB, nginx)`,
				Flags: []cli.Flag{authorityConfigFlag(),
					&cli.StringFlag{Name: "type", Required: true, Usage: strings.Join(authority.ExportTypes, ", ") + ", ssh-krl, crl"},
					&cli.StringFlag{Name: "purpose", Usage: "for --type crl: the CA, one of " + strings.Join(authority.CRLPurposes, ", ")}},
				Action: func(c *cli.Context) error {
					st, cas, err := openCAs(c)
					if err != nil {
						return err
					}
					defer st.Close()
					if typ := c.String("type"); typ == "ssh-krl" || typ == "crl" {
						list, err := authority.ExportRevocations(c.Context, st, cas, typ, c.String("purpose"))
						if err != nil {
							return err
						}
						_, err = os.Stdout.Write(list)
						return err
					}
					out, err := cas.Export(c.String("type"))
					if err != nil {
						return usagef("%v", err)
					}
					_, err = fmt.Fprint(os.Stdout, out)
					return err
				},
			},
			{
				Name:  "gen-kek",
				Usage: "make a CA key-encryption key (ca_key_encryption.key_file) in a new file readable by its owner only",
				Description: `Writes 32 random bytes, base64, to a new file with mode 0600 (an existing
file is never overwritten). Point ca_key_encryption.key_file in
authority.yaml at it, or put its content in $MBOT_CA_KEK. PostgreSQL
storage requires one. Keep a copy apart from the database backups: without
it, sealed CA keys cannot be opened again.

Example:

   mbot authority gen-kek --out /etc/mbot/kek`,
				Flags: []cli.Flag{&cli.StringFlag{Name: "out", Required: true, Usage: "the file to create"}},
				Action: func(c *cli.Context) error {
					if err := authority.GenerateKEK(c.String("out")); err != nil {
						return err
					}
					fmt.Fprintf(os.Stderr, "mbot: wrote a key-encryption key to %s; set ca_key_encryption: {key_file: %s} in authority.yaml\n", c.String("out"), c.String("out"))
					return nil
				},
			},
			{
				Name:  "migrate-keys",
				Usage: "seal every CA key in the store with the key-encryption key (or re-key, or unseal)",
				Description: `Seals, in place and in one transaction, every CA private key the store
holds in the clear, with the key of ca_key_encryption.key_file in
authority.yaml (or $MBOT_CA_KEK). Keys already sealed are left alone, so it
can be run again. Stop the authority first, and start it again after.

Examples:

   mbot authority migrate-keys --config authority.yaml
   mbot authority migrate-keys --config authority.yaml --new-key-file /etc/mbot/kek.new   # re-key
   mbot authority migrate-keys --config authority.yaml --unseal                           # back to the clear`,
				Flags: []cli.Flag{authorityConfigFlag(),
					&cli.StringFlag{Name: "new-key-file", Usage: "re-seal every CA key with the key in this file (then point key_file at it)"},
					&cli.BoolFlag{Name: "unseal", Usage: "store every CA key in the clear again"}},
				Action: func(c *cli.Context) error {
					cfg, err := authority.LoadConfig(c.String("config"))
					if err != nil {
						return err
					}
					out, err := authority.MigrateKeys(c.Context, cfg, authority.MigrateKeysRequest{
						NewKeyFile: c.String("new-key-file"), Unseal: c.Bool("unseal"), Actor: localActor()})
					if err != nil {
						return err
					}
					_, err = fmt.Fprint(os.Stdout, out)
					return err
				},
			},
			{
				Name:  "rotate",
				Usage: "rotate a CA in phases (init, update_clients, update_servers, standby), or show rotations with --status",
				Description: `A rotation adds the new CA to every trust bundle first (init), then signs
clients' credentials with it (update_clients), then servers' certificates,
the authority's own included (update_servers), and drops the old CA last
(standby). update_servers and standby wait for the grace period, counted
from update_clients. Every running authority on the store follows.

Examples:

   mbot authority rotate --config authority.yaml --type ssh-user --grace 24h   # starts: init
   mbot authority rotate --config authority.yaml --type ssh-user --phase update_clients
   mbot authority rotate --config authority.yaml --type ssh-user --phase update_servers
   mbot authority rotate --config authority.yaml --type ssh-user --phase standby
   mbot authority rotate --config authority.yaml --status`,
				Flags: []cli.Flag{authorityConfigFlag(),
					&cli.StringFlag{Name: "type", Usage: "the CA: " + strings.Join(authority.RotationTypes(), ", ")},
					&cli.StringFlag{Name: "phase", Usage: "the phase to move to: update_clients, update_servers, standby (default: start a rotation, init)"},
					&cli.DurationFlag{Name: "grace", Value: authority.DefaultRotationGrace,
						Usage: "when starting: how long the old CA stays trusted after the new one signs (at least the longest credential lifetime)"},
					&cli.BoolFlag{Name: "force", Usage: "move on before the grace period has passed, breaking what trusts only the old CA"},
					&cli.BoolFlag{Name: "status", Usage: "show every CA's rotation phase instead"}},
				Action: func(c *cli.Context) error {
					if c.Bool("status") == (c.String("type") != "") {
						return usagef("pass --type to take a rotation step, or --status to show rotations")
					}
					if c.IsSet("grace") && c.String("phase") != "" {
						return usagef("--grace is given when a rotation starts (without --phase); it cannot change later")
					}
					st, cas, err := openCAs(c)
					if err != nil {
						return err
					}
					defer st.Close()
					out := cas.RotationStatus(time.Now())
					if !c.Bool("status") {
						out, err = authority.RotateCA(c.Context, st, cas, authority.RotateRequest{Type: c.String("type"),
							Phase: c.String("phase"), Grace: c.Duration("grace"), Force: c.Bool("force"), Now: time.Now(), Actor: localActor()})
						if err != nil {
							return err
						}
					}
					_, err = fmt.Fprint(os.Stdout, out)
					return err
				},
			},
			migrateStoreCommand(),
		},
	}
}

// localActor names who runs a command on the authority host, for the audit log.
func localActor() string {
	if u, err := user.Current(); err == nil {
		return "local admin " + u.Username
	}
	return "local admin"
}
