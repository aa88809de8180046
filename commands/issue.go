package commands

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mbot-dev/mbot/client"
	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/joiners"
	"github.com/urfave/cli/v2"
)

func issueCommand() *cli.Command {
	return &cli.Command{
		Name:  "issue",
		Usage: "join the authority once and write short-lived SSH and TLS credentials",
		Description: `Detects the CI platform or cloud it runs on, fetches its proof (an OIDC token
or a cloud identity), exchanges it with the authority for certificates valid at
most 24h, and writes them to --out. Example:

   mbot issue --authority https://auth.acme.internal:8443 --ca-pin sha256:... \
              --token github-deploy --out ./mbot
   ssh -F ./mbot/ssh_config deploy@web1.acme.internal

Several outputs, each with its own keys, roles and directory, from one join:

   mbot issue --config mbot.yaml

   # mbot.yaml
   authority: https://auth.acme.internal:8443
   ca_pin: sha256:...
   token: github-deploy
   outputs:
     - {type: identity, destination: ./mbot-deploy, roles: [deploy]}
     - {type: identity, destination: ./mbot-readonly, roles: [audit-read]}

On a machine others SSH into (an ephemeral VM), an SSH host certificate for
names a role's host_names grants, and sshd_config lines that use it:

   mbot issue ... --host-names web1.ci.acme.internal --out /etc/ssh/mbot

Flags and MBOT_* variables override mbot.yaml.

` + joinMethodsHelp(),
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "authority", EnvVars: []string{"MBOT_AUTHORITY"}, Usage: "authority URL, https://host:port"},
			&cli.StringFlag{Name: "ca-pin", EnvVars: []string{"MBOT_CA_PIN"}, Usage: "pin of the authority's TLS CA (mbot authority export --type ca-pin); while the TLS CA is rotated, the old and the new pin separated by a comma"},
			&cli.StringFlag{Name: "token", EnvVars: []string{"MBOT_TOKEN"}, Usage: "name of the join token to join with"},
			&cli.StringFlag{Name: "join-method", EnvVars: []string{"MBOT_JOIN_METHOD"}, Usage: "auto (default) or one of: " + strings.Join(joiners.Methods(), ", ")},
			&cli.StringFlag{Name: "out", EnvVars: []string{"MBOT_OUT"}, Usage: "directory to write the identity to (default " + client.DefaultOut + ")"},
			&cli.DurationFlag{Name: "ttl", EnvVars: []string{"MBOT_TTL"}, Usage: "certificate lifetime, at most 24h (default " + client.DefaultTTL.String() + ")"},
			&cli.StringFlag{Name: "roles", EnvVars: []string{"MBOT_ROLES"}, Usage: "comma-separated subset of the bot's roles (default: all)"},
			&cli.StringFlag{Name: "host-names", EnvVars: []string{"MBOT_HOST_NAMES"}, Usage: "comma-separated names for an ssh_host output: writes an SSH host key and certificate instead of an identity"},
			&cli.StringFlag{Name: "config", EnvVars: []string{"MBOT_CONFIG"}, Usage: "mbot.yaml: connection settings and several outputs"},
			&cli.StringFlag{Name: "keypair-path", EnvVars: []string{joiners.KeypairPathEnv},
				Usage: "bound_keypair: the runner's private key (its join sequence is kept beside it in <path>.state); generated here when registering with " + joiners.RegistrationSecretEnv},
			&cli.BoolFlag{Name: "rotate-keypair", EnvVars: []string{"MBOT_ROTATE_KEYPAIR"},
				Usage: "bound_keypair: rotate to a freshly generated key in this join (signed by the current one)"},
			&cli.DurationFlag{Name: "timeout", EnvVars: []string{"MBOT_TIMEOUT"}, Value: 30 * time.Second,
				Usage: "give up after this long; within it a join refused while the authority's store is down is retried with backoff"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("mbot issue takes no arguments, got %q", c.Args().Slice())
			}
			if c.Duration("timeout") <= 0 {
				return usagef("--timeout %s: give a positive duration such as 30s", c.Duration("timeout"))
			}
			ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
			defer cancel()
			opts := issueOptions(c)
			opts.Stdout = os.Stdout
			res, err := client.Issue(ctx, opts)
			if err != nil {
				return err
			}
			for _, w := range res.Response.Warnings {
				w = identity.Printable(w) // the authority's text, printed and read as a workflow command
				fmt.Fprintf(os.Stderr, "warning: %s\n", w)
				if os.Getenv("GITHUB_ACTIONS") == "true" {
					fmt.Printf("::warning title=mbot::%s\n", w)
				}
			}
			if res.CIPlatform != "" {
				fmt.Fprintf(os.Stderr, "mbot: %s join on %s as bot %q\n", res.Method, res.CIPlatform, res.Response.Bot)
			} else {
				fmt.Fprintf(os.Stderr, "mbot: %s join as bot %q\n", res.Method, res.Response.Bot)
			}
			for _, out := range res.Outputs {
				if h := out.Grant.SSHHost; h != nil {
					fmt.Fprintf(os.Stderr, "mbot: wrote %s: SSH host certificate for %s, valid until %s (use: Include %s in sshd_config)\n",
						out.Where(), strings.Join(h.HostNames, ","), out.Grant.NotAfter.UTC().Format(time.RFC3339), filepath.Join(out.Dir, client.FileSSHDConfigSnippet))
					continue
				}
				if out.Summary != "" {
					fmt.Fprintf(os.Stderr, "mbot: wrote %s: %s\n", out.Where(), out.Summary)
					continue
				}
				if t := out.Grant.Type; t != "" && t != client.OutputTypeIdentity {
					fmt.Fprintf(os.Stderr, "mbot: wrote %s: %s output, roles %s, valid until %s\n",
						out.Where(), t, strings.Join(out.Grant.Roles, ","), out.Grant.NotAfter.UTC().Format(time.RFC3339))
					continue
				}
				fmt.Fprintf(os.Stderr, "mbot: wrote %s: roles %s, logins %s, valid until %s (use: ssh -F %s/ssh_config <host>)\n",
					out.Where(), strings.Join(out.Grant.Roles, ","), strings.Join(out.Grant.Logins, ","),
					out.Grant.NotAfter.UTC().Format(time.RFC3339), out.Dir)
			}
			return nil
		},
	}
}

// joinMethodsHelp lists every join method: the detected ones in detection
// order with their signals, then those only --join-method picks.
var joinMethodsHelp = sync.OnceValue(func() string {
	var b strings.Builder
	b.WriteString("Join methods --join-method auto detects, in this order, by their signals:\n")
	detected := map[string]bool{}
	for _, s := range joiners.DetectionSignals() {
		method, _, _ := strings.Cut(s, " ")
		detected[method] = true
		b.WriteString("   " + s + "\n")
	}
	b.WriteString("Only with --join-method:\n")
	for _, m := range joiners.Methods() {
		if j, err := joiners.ByMethod(m); err == nil && !detected[m] {
			b.WriteString("   " + m + " (" + j.Signals() + ")\n")
		}
	}
	return strings.TrimSuffix(b.String(), "\n")
})

// issueOptions reads the flags (and MBOT_* variables) issue and start share.
func issueOptions(c *cli.Context) client.IssueOptions {
	return client.IssueOptions{
		Authority:     c.String("authority"),
		CAPin:         c.String("ca-pin"),
		Token:         c.String("token"),
		JoinMethod:    c.String("join-method"),
		Out:           c.String("out"),
		TTL:           c.Duration("ttl"),
		Roles:         splitList(c.String("roles")),
		HostNames:     splitList(c.String("host-names")),
		Config:        c.String("config"),
		KeypairPath:   c.String("keypair-path"),
		RotateKeypair: c.Bool("rotate-keypair"),
		Stderr:        os.Stderr,
	}
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
