package commands

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
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
   # sshd_config: HostKey ./web1/key, HostCertificate ./web1/key-cert.pub

A long-lived identity for a user, on purpose (bots never get one through
mbot issue). It is written like mbot issue's identity directory, may live
longer than the 24h bot cap up to max_admin_ttl in authority.yaml, and is
recorded in the audit log:

   mbot sign --config authority.yaml --user alice --roles deploy --logins alice --ttl 720h --out ./alice
   ssh -F ./alice/ssh_config web1.acme.internal

An admin identity for the admin API (--auth DIR), like the one every start
writes to <data_dir>/admin, for another admin; with --read-only the admin
API answers its reads (mbot get, audit, lint, console) and refuses every
change (admin_read_only). It lives admin_identity_ttl unless --ttl says
otherwise (at most max_admin_ttl), and is recorded in the audit log:

   mbot sign --config authority.yaml --admin carol --read-only --out ./carol
   mbot console --auth ./carol

A database server's certificate (signed by the database-server CA) and the
CA it must check clients by (the database-client CA), with the exact
postgresql.conf and pg_hba.conf or my.cnf lines printed:

   mbot sign --config authority.yaml --format postgres --host db.acme.internal --out /etc/postgresql/mbot --owner postgres
   mbot sign --config authority.yaml --format mysql --host db.acme.internal,10.0.0.7 --out ./my`,
		Flags: []cli.Flag{authorityConfigFlag(),
			&cli.StringFlag{Name: "host", Usage: "comma-separated DNS names and IP addresses, no wildcards (host credentials)"},
			&cli.StringFlag{Name: "format", Usage: "with --host: postgres or mysql, for a database server's certificate"},
			&cli.StringFlag{Name: "user", Usage: "user name, like a bot's: lower-case letters, digits, - _ . (a long-lived user identity)"},
			&cli.StringFlag{Name: "roles", Usage: "with --user: comma-separated roles whose logins the user gets"},
			&cli.StringFlag{Name: "logins", Usage: "with --user: the user's logins trait, for {{internal.logins}} in the roles"},
			&cli.StringFlag{Name: "admin", Usage: "admin name, like a bot's (an admin identity for --auth; mbot lock --admin NAME refuses it)"},
			&cli.BoolFlag{Name: "read-only", Usage: "with --admin: the identity may only read (the admin API refuses its changes: admin_read_only)"},
			&cli.StringFlag{Name: "out", Required: true, Usage: "directory to write the credentials to"},
			&cli.DurationFlag{Name: "ttl", Usage: "certificate lifetime (--host: default 8760h; --user: required, at most max_admin_ttl; --admin: admin_identity_ttl unless given, at most max_admin_ttl)"},
			&cli.StringFlag{Name: "owner", Usage: "USER[:GROUP] to give the --out directory and its files to (as root), for a server that reads them as its own user: --owner postgres"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("mbot sign takes no arguments, got %q", c.Args().Slice())
			}
			if _, _, err := lookupOwner(c.String("owner")); err != nil {
				return err
			}
			if c.IsSet("read-only") && !c.IsSet("admin") {
				return usagef("--read-only goes with --admin NAME (an admin identity)")
			}
			given := 0
			for _, f := range []string{"host", "user", "admin"} {
				if c.IsSet(f) {
					given++
				}
			}
			switch {
			case given > 1:
				return usagef("mbot sign takes one of --host, --user and --admin")
			case c.IsSet("admin"):
				if c.IsSet("format") || c.IsSet("roles") || c.IsSet("logins") {
					return usagef("--format, --roles and --logins do not go with --admin: an admin identity is for the admin API")
				}
				return signAdmin(c)
			case c.IsSet("user"):
				if c.IsSet("format") {
					return usagef("--format goes with --host (a database server), not --user")
				}
				return signUser(c)
			case c.IsSet("host"):
				if c.IsSet("roles") || c.IsSet("logins") {
					return usagef("--roles and --logins go with --user, not --host")
				}
				if c.IsSet("format") {
					return signDatabase(c)
				}
				return signHost(c)
			}
			return usagef("mbot sign needs --host NAME[,NAME], --user NAME or --admin NAME")
		},
	}
}

func signHost(c *cli.Context) error {
	names := splitList(c.String("host"))
	if len(names) == 0 {
		return usagef("mbot sign needs --host NAME[,NAME]")
	}
	ttl := c.Duration("ttl")
	if !c.IsSet("ttl") {
		ttl = 8760 * time.Hour
	}
	created, err := checkOut(c.String("out"))
	if err != nil {
		return err
	}
	st, cas, err := openCAs(c)
	if err != nil {
		return err
	}
	defer st.Close()
	files, err := authority.SignHost(c.Context, st, cas, names, ttl)
	if err != nil {
		return err
	}
	if err := writeOwned(c, c.String("out"), files); err != nil {
		return err
	}
	reportCreated(created)
	fmt.Fprintf(os.Stderr, "mbot: wrote host credentials for %v to %s\n", names, c.String("out"))
	return nil
}

func signDatabase(c *cli.Context) error {
	format := c.String("format")
	if !slices.Contains(authority.DatabaseServerFormats, format) {
		return usagef("--format %s is not one of %s", identity.Quote(format), strings.Join(authority.DatabaseServerFormats, ", "))
	}
	names := splitList(c.String("host"))
	if len(names) == 0 {
		return usagef("mbot sign --format %s needs --host NAME[,NAME]: the names clients dial", format)
	}
	ttl := c.Duration("ttl")
	if !c.IsSet("ttl") {
		ttl = 8760 * time.Hour
	}
	dir, err := filepath.Abs(c.String("out"))
	if err != nil {
		return err
	}
	config, err := authority.DatabaseServerConfig(format, dir)
	if err != nil {
		return err
	}
	created, err := checkOut(dir)
	if err != nil {
		return err
	}
	st, cas, err := openCAs(c)
	if err != nil {
		return err
	}
	defer st.Close()
	creds, err := authority.SignDatabaseServer(c.Context, st, cas, format, names, ttl)
	if err != nil {
		return err
	}
	if err := writeOwned(c, dir, creds.Files); err != nil {
		return err
	}
	reportCreated(created)
	fmt.Fprintf(os.Stderr, "mbot: wrote %s server credentials for %v to %s, valid until %s\n", format, names, dir, creds.NotAfter.UTC().Format(time.RFC3339))
	fmt.Print(config)
	return nil
}

func signUser(c *cli.Context) error {
	if !c.IsSet("ttl") {
		return usagef("mbot sign --user needs --ttl: a long-lived credential is never given by default")
	}
	dir, created, a, err := openLocalOut(c)
	if err != nil {
		return err
	}
	defer a.Close()
	signed, err := a.SignUser(c.Context, authority.UserSignRequest{
		User:   c.String("user"),
		Roles:  splitList(c.String("roles")),
		Logins: splitList(c.String("logins")),
		TTL:    c.Duration("ttl"),
		Dir:    dir,
	})
	if err != nil {
		return err
	}
	for _, w := range signed.Warnings {
		fmt.Fprintf(os.Stderr, "warning: %s\n", w)
	}
	if err := writeOwned(c, dir, signed.Files); err != nil {
		return err
	}
	reportCreated(created)
	out := signed.Output
	fmt.Fprintf(os.Stderr, "mbot: signed user %q: roles %s, logins %s, valid until %s (recorded in the audit log)\nmbot: wrote %s (use: ssh -F %s/ssh_config <host>)\n",
		c.String("user"), strings.Join(out.Roles, ","), strings.Join(out.Logins, ","), out.NotAfter.UTC().Format(time.RFC3339), dir, dir)
	return nil
}

func signAdmin(c *cli.Context) error {
	dir, created, a, err := openLocalOut(c)
	if err != nil {
		return err
	}
	defer a.Close()
	signed, err := a.SignAdmin(c.Context, authority.AdminSignRequest{Admin: c.String("admin"), ReadOnly: c.Bool("read-only"), TTL: c.Duration("ttl")})
	if err != nil {
		return err
	}
	if err := writeOwned(c, dir, signed.Files); err != nil {
		return err
	}
	reportCreated(created)
	kind := "admin identity"
	if c.Bool("read-only") {
		kind = "read-only admin identity"
	}
	fmt.Fprintf(os.Stderr, "mbot: signed a %s for %q, valid until %s (recorded in the audit log)\nmbot: wrote %s (use: --auth %s; mbot lock --admin %s revokes it)\n",
		kind, c.String("admin"), signed.NotAfter.UTC().Format(time.RFC3339), dir, dir, c.String("admin"))
	return nil
}

// openLocalOut resolves and checks --out (before anything is signed) and
// opens the authority of --config, for mbot sign --user and --admin; it
// returns --out, the parent directories writing will create, and the
// authority, which the caller closes.
func openLocalOut(c *cli.Context) (string, []string, *authority.Authority, error) {
	dir, err := filepath.Abs(c.String("out"))
	if err != nil {
		return "", nil, nil, err
	}
	created, err := checkOut(dir)
	if err != nil {
		return "", nil, nil, err
	}
	cfg, err := authority.LoadConfig(c.String("config"))
	if err != nil {
		return "", nil, nil, err
	}
	a, err := authority.OpenLocal(c.Context, cfg, authority.Options{})
	if err != nil {
		return "", nil, nil, err
	}
	return dir, created, a, nil
}

// checkOut refuses an --out that mbot would not write into before anything
// is signed, and returns the parent directories writing will create.
func checkOut(out string) ([]string, error) {
	if err := identity.CheckDir(out); err != nil {
		return nil, err
	}
	return identity.MissingParents(out), nil
}

func reportCreated(dirs []string) {
	for _, d := range dirs {
		fmt.Fprintf(os.Stderr, "mbot: created the missing directory %s (mode 0700) above --out\n", d)
	}
}

// writeOwned writes the credentials and, with --owner, gives them to that
// user: the directory is 0700 and the key 0600, so a server running as
// another user than mbot sign's could not read them otherwise.
func writeOwned(c *cli.Context, dir string, files []identity.File) error {
	if err := identity.WriteDir(dir, files); err != nil {
		return err
	}
	if c.String("owner") == "" {
		return nil
	}
	uid, gid, err := lookupOwner(c.String("owner"))
	if err != nil {
		return err
	}
	if err := identity.ChownDir(dir, uid, gid); err != nil {
		os.RemoveAll(dir) // nothing half-given: sign again
		return fmt.Errorf("--owner %s: %w (chown needs root)", c.String("owner"), err)
	}
	fmt.Fprintf(os.Stderr, "mbot: gave %s and its files to %s\n", dir, c.String("owner"))
	return nil
}

// lookupOwner reads --owner USER[:GROUP] (identity.LookupOwner). An
// empty owner is none: -1, -1.
func lookupOwner(owner string) (uid, gid int, err error) {
	o, err := identity.LookupOwner(owner)
	if err != nil {
		return 0, 0, usagef("--owner %v", err)
	}
	if o == nil {
		return -1, -1, nil
	}
	return o.UID, o.GID, nil
}
