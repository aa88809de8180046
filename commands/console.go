package commands

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/mbot-dev/mbot/console"
	"github.com/urfave/cli/v2"
)

// defaultConsoleListen is mbot console's address: loopback only.
const defaultConsoleListen = "127.0.0.1:7390"

func consoleCommand() *cli.Command {
	return &cli.Command{
		Name:  "console",
		Usage: "open a web console of bots, instances, joins, refusals, clusters and CAs",
		Description: `Starts a web server on this machine and prints one URL with a one-time token,
like Jupyter: open it in a browser. The token is exchanged for a session
cookie (HttpOnly, SameSite=Strict) and dropped from the address bar. The
console reads the authority through the admin API with an admin identity
(--auth), or from its store on the authority host (--config); the authority
gets no new listener. Pages: overview (joins per minute, refusals by code,
top projects, CA states), bots (roles and grants, join tokens, instances,
locks), audit (filters by bot, join token, method, result, code, claim,
time, serial), trusted clusters and actions (lock and unlock a bot, an
instance or a join token, with a reason and a confirmation step; audited as
the admin). It listens on loopback unless --listen names another address;
reach it from another machine through an SSH tunnel. Examples:

   mbot console --auth ~/.mbot/admin
   mbot console --config /etc/mbot/authority.yaml --listen 127.0.0.1:8080
   mbot console --auth ./admin --read-only`,
		Flags: append(adminFlags(),
			&cli.StringFlag{Name: "listen", Value: defaultConsoleListen, Usage: "address to listen on, HOST:PORT (port 0 picks a free one); keep it on loopback"},
			&cli.BoolFlag{Name: "read-only", Usage: "show the pages but take no action (no lock or unlock)"}),
		Action: func(c *cli.Context) error {
			args, err := positionalArgs(c)
			if err != nil {
				return err
			}
			if len(args) > 0 {
				return usagef("mbot console takes no arguments, got %q", args)
			}
			listen := c.String("listen")
			host, _, err := net.SplitHostPort(listen)
			if err != nil {
				return usagef("--listen %q is not HOST:PORT (such as 127.0.0.1:7390)", listen)
			}
			client, err := openAdmin(c)
			if err != nil {
				return err
			}
			defer client.Close()
			source := "store of " + c.String("config")
			if dir := c.String("auth"); dir != "" {
				source = "admin API with the identity in " + dir
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("mbot console: %w", err)
			}
			if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
				fmt.Fprintf(os.Stderr, "mbot: warning: --listen %s is not a loopback address: anyone who can reach it can try the console's URL, which travels in clear text (plain HTTP); prefer 127.0.0.1 and an SSH tunnel\n", listen)
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			srv, err := console.New(console.Options{Client: client, ReadOnly: c.Bool("read-only"), Addr: ln.Addr().String(), Source: source, Log: log})
			if err != nil {
				ln.Close()
				return err
			}
			hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, WriteTimeout: 2 * time.Minute,
				ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
			fmt.Fprintf(os.Stdout, "mbot console: open this URL in a browser (its token works once):\n\n    %s\n\n", srv.URL())
			done := make(chan error, 1)
			go func() { done <- hs.Serve(ln) }()
			select {
			case err := <-done:
				if !errors.Is(err, http.ErrServerClosed) {
					return err
				}
			case <-c.Context.Done():
				fmt.Fprintln(os.Stderr, "mbot console: stopping")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return hs.Shutdown(ctx)
		},
	}
}
