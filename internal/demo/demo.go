// Package demo runs mbot's whole flow on one machine: an authority on the
// embedded database, a simulated GitHub Actions job, and a real mbot issue.
package demo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/client"
	"github.com/mbot-dev/mbot/identity"
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
  traits: {logins: [%s]}   # the user running the demo
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

// Options are mbot demo's flags.
type Options struct {
	// Out is the directory the job's identity is written to.
	Out string
	// Keep leaves the authority, the simulated platform and the sshd
	// running until ctx ends, and prints how to continue by hand.
	Keep bool
}

// Run runs the demo and writes the identity to opts.Out. w receives the
// story.
func Run(ctx context.Context, w io.Writer, opts Options) error {
	work, err := os.MkdirTemp("", "mbot-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	outDir := opts.Out

	// The job logs in as the user running the demo: the bot is granted
	// that name through its logins trait.
	login, loginErr := currentLogin()
	botLogin := login
	if loginErr != nil {
		botLogin = "ci"
	}

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
	if err := os.WriteFile(filepath.Join(work, "bots.yaml"), fmt.Appendf(nil, botsYAML, strconv.Quote(botLogin), platform.URL), 0o600); err != nil {
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
	serveCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
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
	fmt.Fprintf(w, "3. The job runs: mbot issue --authority %s --ca-pin %s... --token github-deploy --out %s\n", authorityURL, pin[:19], outDir)
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

	// The server: a host certificate signed as mbot sign --host signs one,
	// for the real sshd and the mTLS echo server.
	hostFiles, err := authority.SignHost(ctx, auth.Store(), auth.CAs(), []string{demoHost}, time.Hour)
	if err != nil {
		return err
	}
	hostDir := filepath.Join(work, "host")
	if err := identity.WriteDir(hostDir, hostFiles); err != nil {
		return err
	}
	sshConfig := filepath.Join(res.Dir, identity.FileSSHConfig)
	var sshd *sshServer
	sshdPath, sshPath, sshErr := findSSH()
	if sshErr == nil && loginErr != nil {
		sshErr = loginErr
	}
	if sshErr == nil {
		userCA, err := auth.CAs().Export("ssh-user-ca")
		if err != nil {
			return err
		}
		if sshd, err = startSSHD(sshdPath, work, hostDir, userCA); err != nil {
			sshErr = fmt.Errorf("the demo's sshd did not start: %w", err)
		} else {
			defer sshd.Close()
		}
	}
	var loginFailed error // the demo's point: a run whose login fails is not a success
	if sshErr == nil {
		fmt.Fprintf(w, "4. The job logs in to %s: a real sshd on 127.0.0.1:%d trusting the SSH user CA, with a host certificate\n", demoHost, sshd.Port)
		args := sshArgs(sshConfig, sshd.Port, remoteCommand)
		fmt.Fprintf(w, "   $ ssh %s\n", shellJoin(args))
		output, err := exec.CommandContext(ctx, sshPath, args...).CombinedOutput()
		if err != nil {
			// This machine's accounts may forbid it (a locked account, a
			// nologin shell): say why, and go on with the story.
			fmt.Fprintf(w, "   the login failed (%v):\n%s\n   sshd logged:\n%s\n", err, indent(output, 5), indent(sshd.logs.Bytes(), 10))
			loginFailed = fmt.Errorf("the SSH login as %s failed (ssh: %v, %q; sshd: %q): this machine's account %s must be able to log in over SSH (not locked, a real login shell)",
				identity.Quote(login), err, identity.Printable(lastLine(output)), identity.Printable(sshdReason(sshd.logs.Bytes())), identity.Quote(login))
		} else {
			fmt.Fprintf(w, "   %s\n", identity.Printable(string(bytes.TrimSpace(output))))
		}
	} else {
		fmt.Fprintf(w, "4. Skipping the SSH login: %v. With sshd trusting the SSH user CA on a server named %s it would run:\n", sshErr, demoHost)
		fmt.Fprintf(w, "   $ ssh %s\n", shellJoin(sshArgs(sshConfig, 22, remoteCommand)))
	}

	echo, err := startEcho(hostFiles, auth.CAs().TLSCertPEM)
	if err != nil {
		return fmt.Errorf("starting the demo's mTLS echo server: %w", err)
	}
	defer echo.Close()
	saw, err := dialEcho(res.Dir, echo.Addr)
	if err != nil {
		return fmt.Errorf("connecting to the mTLS echo server with %s: %w", filepath.Join(res.Dir, identity.FileTLSCert), err)
	}
	fmt.Fprintf(w, "5. The job connects with tls.crt to an mTLS server on %s trusting the TLS CA, which answers:\n   %s\n", echo.Addr, saw)

	// A job from another repository presents a valid token that the join
	// token's rules do not admit: refused, nothing written, audited.
	platform.SetGitHubClaim("repository", "evil/app")
	_, refusal := client.Issue(ctx, client.IssueOptions{
		Authority: authorityURL, CAPin: pin, Token: "github-deploy", Out: filepath.Join(work, "refused"), Env: lookup,
	})
	platform.SetGitHubClaim("repository", "acme/app")
	fmt.Fprintf(w, "6. The same join from repository evil/app is refused:\n   %v\n", refusal)

	events, err := auth.Store().ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "7. Audit log: %d records\n", len(events))
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
	again := runAgain()
	if !opts.Keep {
		fmt.Fprintf(w, `
Look closer:
   ssh-keygen -L -f %[1]s              # principals and validity
   openssl verify -CAfile %[2]s %[3]s
A server trusts these identities with sshd_config "TrustedUserCAKeys <file>"
holding the output of "mbot authority export --type ssh-user-ca".
Everything the demo started has stopped.%[4]s
To continue by hand, run: %[5]s demo --keep
`, shellQuote(filepath.Join(res.Dir, identity.FileSSHCert)), shellQuote(filepath.Join(res.Dir, identity.FileCA)),
			shellQuote(filepath.Join(res.Dir, identity.FileTLSCert)), again.pathNote, again.mbot)
		return loginFailed
	}

	fmt.Fprintf(w, "\nThe authority, the simulated GitHub Actions platform and the sshd keep running. In another shell:\n\n")
	if again.pathNote != "" {
		fmt.Fprintf(w, "#%s\n", strings.ReplaceAll(again.pathNote, "\n", "\n#"))
	}
	for _, kv := range [][2]string{{"MBOT_AUTHORITY", authorityURL}, {"MBOT_CA_PIN", pin}, {"MBOT_TOKEN", "github-deploy"},
		{"GITHUB_ACTIONS", env["GITHUB_ACTIONS"]}, {"ACTIONS_ID_TOKEN_REQUEST_URL", env["ACTIONS_ID_TOKEN_REQUEST_URL"]},
		{"ACTIONS_ID_TOKEN_REQUEST_TOKEN", env["ACTIONS_ID_TOKEN_REQUEST_TOKEN"]}} {
		fmt.Fprintf(w, "export %s=%s\n", kv[0], shellQuote(kv[1]))
	}
	fmt.Fprintf(w, "\nmbot issue --out %s   # as the job; like in GitHub Actions it prints ::add-mask:: for its OIDC token\n", shellQuote(res.Dir))
	if sshd != nil {
		fmt.Fprintf(w, "ssh %s\n", shellJoin(sshArgs(sshConfig, sshd.Port, "whoami")))
	}
	fmt.Fprintf(w, "mbot audit --config %s\n", shellQuote(cfgPath))
	fmt.Fprintf(w, "mbot get roles -o yaml --config %[1]s > roles.yaml   # edit, then:\nmbot apply --config %[1]s -f roles.yaml\n", shellQuote(cfgPath))
	fmt.Fprintf(w, "\nPress Ctrl-C to stop everything.\n")
	<-ctx.Done()
	fmt.Fprintf(w, "Stopping the authority, the simulated platform and the sshd.\n")
	return loginFailed
}

// sshdReason is the last line of sshd's log that says something other than
// that it listened or a connection closed: why it refused a login.
func sshdReason(logs []byte) string {
	reason := "nothing logged"
	for _, line := range strings.Split(string(logs), "\n") {
		line = strings.TrimSpace(line)
		routine := line == ""
		for _, p := range []string{"Server listening", "Connection closed", "kex_exchange_identification", "Received disconnect", "Disconnected from", "Accepted "} {
			routine = routine || strings.HasPrefix(line, p)
		}
		if !routine {
			reason = line
		}
	}
	return reason
}

// lastLine is the last non-empty line of out.
func lastLine(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// rerun is how the user runs this mbot again, so that the printed
// commands work as printed.
type rerun struct {
	mbot     string // "mbot", "go run .", or the binary's path
	pathNote string // how to put mbot on PATH, when it is not there
}

// runAgain finds how this mbot is run again: by name when PATH finds this
// very binary; with go run when go run built it (a temporary binary);
// else by its path, with how to put it on PATH for the other commands.
func runAgain() rerun {
	self, err := os.Executable()
	if err != nil {
		return rerun{mbot: "mbot"}
	}
	if onPath, err := exec.LookPath("mbot"); err == nil && sameFile(onPath, self) {
		return rerun{mbot: "mbot"}
	}
	if strings.Contains(self, string(filepath.Separator)+"go-build") {
		return rerun{mbot: "go run .", pathNote: "\nmbot is not on PATH (go run builds it in a temporary directory): run go install . and add $(go env GOPATH)/bin to PATH, or replace mbot with go run . in the commands below."}
	}
	return rerun{mbot: shellQuote(self), pathNote: fmt.Sprintf("\nmbot is not on PATH: export PATH=%s:\"$PATH\" to run the commands below as printed.", shellQuote(filepath.Dir(self)))}
}

func sameFile(a, b string) bool {
	ia, errA := os.Stat(a)
	ib, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(ia, ib)
}

// indent returns the last n lines of out, indented for the story.
func indent(out []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines {
		lines[i] = "     " + identity.Printable(strings.TrimRight(l, "\r"))
	}
	return strings.Join(lines, "\n")
}

// shellJoin quotes args for a POSIX shell.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=@,+", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
