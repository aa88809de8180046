package commands

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/mbot-dev/mbot/client"
	"github.com/urfave/cli/v2"
)

func startCommand() *cli.Command {
	return &cli.Command{
		Name:  "start",
		Usage: "run as a daemon that keeps the credentials of a self-hosted runner fresh",
		Description: `Joins like mbot issue, writes the outputs, and renews them every
--renewal-interval (default: a third of the TTL) until stopped. Jobs on the
runner read the outputs; they are replaced atomically and always valid.

   mbot start --authority https://auth.acme.internal:8443 --ca-pin sha256:... \
              --token jenkins-1 --join-method token --out /var/lib/mbot/identity \
              --ttl 1h --health-addr 127.0.0.1:9090

A token join uses its single-use secret (MBOT_JOIN_SECRET) once; after that
the daemon renews with its current certificate, also across restarts while
that certificate is valid. Other methods join again with a fresh proof.

If the authority cannot be reached, the daemon keeps the current credentials
and retries with backoff; it never exits because renewals fail.
GET /healthz on --health-addr answers 200 while the credentials are valid and
503 otherwise, with {status, last_renewal, not_after, last_error,
reload_failures}.

An output's reload: in --config (a command, such as [systemctl, reload,
postgresql]) runs after each successful write of that output, never through
a shell and never after a failed write; it is killed after reload_timeout
(default 30s). A failure is logged with the output's name and exit status.

SIGHUP reloads --config and renews at once; SIGTERM and SIGINT stop the
daemon (exit 0) and leave the outputs in place.`,
		Flags: append(issueCommand().Flags,
			&cli.DurationFlag{Name: "renewal-interval", EnvVars: []string{"MBOT_RENEWAL_INTERVAL"},
				Usage: "time between renewals, shorter than --ttl (default: renewal_interval in --config, else a third of the TTL)"},
			&cli.StringFlag{Name: "health-addr", EnvVars: []string{"MBOT_HEALTH_ADDR"},
				Usage: "serve GET /healthz over plain HTTP on this address, such as 127.0.0.1:9090 (default: off)"},
		),
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("mbot start takes no arguments, got %q", c.Args().Slice())
			}
			reload := make(chan os.Signal, 1)
			signal.Notify(reload, syscall.SIGHUP)
			defer signal.Stop(reload)
			return client.RunDaemon(c.Context, client.DaemonOptions{
				IssueOptions:    issueOptions(c),
				RenewalInterval: c.Duration("renewal-interval"),
				HealthAddr:      c.String("health-addr"),
				Reload:          reload,
			})
		},
	}
}
