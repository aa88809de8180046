// Package authoritytest serves an authority and a simulated CI issuer on
// loopback for tests and benchmarks that drive the real join path in-process.
package authoritytest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/internal/simci"
)

// DeployerYAML is the smallest resources file for Start: bot deployer with
// role deploy (login ci), and join token github-deploy admitting the
// issuer's GitHub Actions tokens of acme/app.
const DeployerYAML = `kind: role
version: v1
metadata: {name: deploy}
spec: {logins: [ci]}
---
kind: bot
version: v1
metadata: {name: deployer}
spec: {roles: [deploy]}
---
kind: join_token
version: v1
metadata: {name: github-deploy}
spec:
  bot: deployer
  method: github
  github:
    issuer: %[1]s
    allow: [{repository: acme/app}]
`

// Env is a running authority and its issuer.
type Env struct {
	Issuer    *simci.Issuer
	Authority *authority.Authority
	URL       string // https://127.0.0.1:port
	Pin       string
	DataDir   string
}

// Start serves an authority of cluster clusterName. Its resources file is
// botsYAML with every %[1]s replaced by the issuer's URL; extraConfig lines
// are appended to its authority.yaml. Everything stops at the end of the test.
func Start(tb testing.TB, clusterName, botsYAML, extraConfig string) *Env {
	tb.Helper()
	iss, err := simci.Start()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { iss.Close() })
	return StartWithIssuer(tb, iss, clusterName, botsYAML, extraConfig)
}

// StartWithIssuer is Start with an issuer already running: a second
// authority replica beside the first (extraConfig naming the same
// PostgreSQL storage) trusts the same one.
func StartWithIssuer(tb testing.TB, iss *simci.Issuer, clusterName, botsYAML, extraConfig string) *Env {
	tb.Helper()
	dir := tb.TempDir()
	resourcesYAML := strings.ReplaceAll(botsYAML, "%[1]s", iss.URL)
	if err := os.WriteFile(filepath.Join(dir, "bots.yaml"), []byte(resourcesYAML), 0o600); err != nil {
		tb.Fatal(err)
	}
	cfg, err := authority.ParseConfig(filepath.Join(dir, "authority.yaml"), fmt.Appendf(nil,
		"cluster_name: %s\nlisten: 127.0.0.1:0\ndata_dir: ./data\nresources: [bots.yaml]\n%s", clusterName, extraConfig))
	if err != nil {
		tb.Fatal(err)
	}
	a, err := authority.Open(context.Background(), cfg, authority.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan net.Addr, 1), make(chan error, 1)
	go func() { done <- a.Serve(ctx, func(addr net.Addr) { ready <- addr }) }()
	var addr net.Addr
	select {
	case addr = <-ready:
	case err := <-done:
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cancel(); <-done; a.Close() })
	return &Env{Issuer: iss, Authority: a, URL: "https://" + addr.String(), Pin: a.CAs().Pin(), DataDir: cfg.DataDir}
}
