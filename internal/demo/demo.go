// Package demo runs mbot's whole flow on one machine: an authority on the
// embedded database, a simulated GitHub Actions job, and a real mbot issue.
package demo

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/client"
	"github.com/mbot-dev/mbot/internal/simci"
)

const authorityYAML = `cluster_name: demo.mbot
listen: 127.0.0.1:0
data_dir: ./data
resources: [bots.yaml]
ssh:
  host_patterns: ["*.demo.mbot"]
`

const botsYAML = `kind: role
version: v1
metadata: {name: deploy}
spec:
  logins: ["{{internal.logins}}", deploy]
  max_ttl: 8h
---
kind: bot
version: v1
metadata: {name: deployer}
spec:
  roles: [deploy]
  traits: {logins: [ci]}
---
kind: join_token
version: v1
metadata: {name: github-deploy}
spec:
  bot: deployer
  method: github
  github:
    issuer: %s          # the simulated GitHub Actions issuer
    allow:
      - repository: acme/app
        ref: refs/heads/main
`

// Run runs the demo and writes the identity to outDir. w receives the story.
func Run(ctx context.Context, w io.Writer, outDir string) error {
	work, err := os.MkdirTemp("", "mbot-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	platform, err := simci.Start()
	if err != nil {
		return fmt.Errorf("starting the simulated GitHub Actions platform: %w", err)
	}
	defer platform.Close()
	fmt.Fprintf(w, "1. Simulated GitHub Actions OIDC issuer at %s (repository acme/app, ref refs/heads/main)\n", platform.URL)

	cfgPath := filepath.Join(work, "authority.yaml")
	if err := os.WriteFile(cfgPath, []byte(authorityYAML), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(work, "bots.yaml"), fmt.Appendf(nil, botsYAML, platform.URL), 0o600); err != nil {
		return err
	}
	cfg, err := authority.LoadConfig(cfgPath)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	auth, err := authority.Open(ctx, cfg, authority.Options{Logger: logger})
	if err != nil {
		return err
	}
	defer auth.Close()
	serveCtx, stop := context.WithCancel(ctx)
	addrc, errc := make(chan net.Addr, 1), make(chan error, 1)
	go func() { errc <- auth.Serve(serveCtx, func(a net.Addr) { addrc <- a }) }()
	defer func() { stop(); <-errc }()
	var addr net.Addr
	select {
	case addr = <-addrc:
	case err := <-errc:
		return err
	}
	authorityURL := "https://" + addr.String()
	pin := auth.CAs().Pin()
	fmt.Fprintf(w, "2. Authority %q on %s (SQLite in a temporary data_dir), CA pin %s\n", cfg.ClusterName, authorityURL, pin)

	env := platform.GitHubEnv()
	lookup := func(k string) string { return env[k] }
	fmt.Fprintf(w, "3. mbot issue --authority %s --ca-pin %s... --token github-deploy --out %s\n", authorityURL, pin[:19], outDir)
	start := time.Now()
	res, err := client.Issue(ctx, client.IssueOptions{
		Authority: authorityURL, CAPin: pin, Token: "github-deploy", JoinMethod: "auto",
		Out: outDir, TTL: time.Hour, Env: lookup,
	})
	if err != nil {
		return err
	}
	out := res.Response.Outputs[0]
	fmt.Fprintf(w, "   joined by %s in %s as bot %q\n", res.Method, time.Since(start).Round(time.Millisecond), res.Response.Bot)
	fmt.Fprintf(w, "   roles:      %s\n   principals: %s\n   expires:    %s (%s from now)\n",
		strings.Join(out.Roles, ", "), strings.Join(out.Logins, ", "), out.NotAfter.UTC().Format(time.RFC3339),
		time.Until(out.NotAfter).Round(time.Minute))
	fmt.Fprintf(w, "   wrote %s: key key.pub key-cert.pub tls.key tls.crt ca.crt known_hosts ssh_config identity.json\n", res.Dir)

	// A job from another repository presents a valid token that the join
	// token's rules do not admit: refused, nothing written, audited.
	platform.SetGitHubClaim("repository", "evil/app")
	_, refusal := client.Issue(ctx, client.IssueOptions{
		Authority: authorityURL, CAPin: pin, Token: "github-deploy", Out: filepath.Join(work, "refused"), Env: lookup,
	})
	fmt.Fprintf(w, "4. The same join from repository evil/app is refused:\n   %v\n", refusal)

	events, err := auth.Store().ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "5. Audit log: %d records\n", len(events))
	for _, ev := range events {
		if ev.Event != "join" {
			fmt.Fprintf(w, "   %s %s: %s\n", ev.Time.Format(time.TimeOnly), ev.Event, ev.Message)
			continue
		}
		outcome := "admitted"
		if !ev.Allowed {
			outcome = "refused (" + ev.Code + ")"
		}
		fmt.Fprintf(w, "   %s join join_token=%s bot=%s repository=%s ref=%s: %s\n", ev.Time.Format(time.TimeOnly),
			ev.JoinToken, ev.Bot, ev.Claims["repository"], ev.Claims["ref"], outcome)
	}
	fmt.Fprintf(w, `
Use it:
   ssh -F %[1]s/ssh_config web1.demo.mbot          # as %[2]s, with the certificate in %[1]s/key-cert.pub
   ssh-keygen -L -f %[1]s/key-cert.pub              # see principals and validity
   openssl verify -CAfile %[1]s/ca.crt %[1]s/tls.crt
A server trusts these identities with sshd_config "TrustedUserCAKeys <file>"
holding the output of "mbot authority export --type ssh-user-ca".
The demo authority has stopped; nothing is left running.
`, res.Dir, firstOr(out.Logins, "-"))
	return nil
}

func firstOr(s []string, def string) string {
	if len(s) > 0 {
		return s[0]
	}
	return def
}
