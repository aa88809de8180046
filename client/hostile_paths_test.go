package client_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/client"
	"github.com/mbot-dev/mbot/internal/authoritytest"
)

// TestIssueRefusesHostileDestinations runs mbot issue's join against a real
// authority with destinations it must not write. Each is refused before the
// proof is fetched (the authority records no join), with a message naming
// the output and the path, and nothing is written, a link's target included.
func TestIssueRefusesHostileDestinations(t *testing.T) {
	e := authoritytest.Start(t, "paths.test", authoritytest.DeployerYAML, "")
	env := e.Issuer.GitHubEnv()
	tests := []struct {
		name string
		// setup prepares base and returns --out and mbot.yaml (empty: none).
		setup func(t *testing.T, base string) (out, config string)
		want  []string
	}{
		{"--out is a symlink to a directory", func(t *testing.T, base string) (string, string) {
			if err := os.Mkdir(filepath.Join(base, "real"), 0o700); err != nil {
				t.Fatal(err)
			}
			link(t, filepath.Join(base, "real"), filepath.Join(base, "mbot"))
			return filepath.Join(base, "mbot"), ""
		}, []string{`output "identity"`, "mbot is a symbolic link to", "real", "set --out"}},
		{"--out is a dangling symlink", func(t *testing.T, base string) (string, string) {
			link(t, filepath.Join(base, "later"), filepath.Join(base, "mbot"))
			return filepath.Join(base, "mbot"), ""
		}, []string{"mbot is a symbolic link to", "points nowhere"}},
		{"--out holds a newline", func(t *testing.T, base string) (string, string) {
			return filepath.Join(base, "mbot\nProxyCommand x"), ""
		}, []string{`mbot\nProxyCommand x`, "control character"}},
		{"second destination in mbot.yaml is a symlink", func(t *testing.T, base string) (string, string) {
			link(t, "/etc", filepath.Join(base, "etc"))
			cfg := filepath.Join(base, "mbot.yaml")
			data := "outputs:\n  - destination: " + filepath.Join(base, "first") + "\n  - destination: " + filepath.Join(base, "etc") + "\n"
			if err := os.WriteFile(cfg, []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
			return "", cfg
		}, []string{`output "etc"`, "etc is a symbolic link to \"/etc\"", "set --out"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			out, cfg := tc.setup(t, base)
			before := listTree(t, base)
			var stderr bytes.Buffer
			_, err := client.Issue(t.Context(), client.IssueOptions{Authority: e.URL, CAPin: e.Pin, Token: "github-deploy",
				Out: out, Config: cfg, Env: func(k string) string { return env[k] }, Stderr: &stderr})
			if err == nil {
				t.Fatal("Issue succeeded, want a refusal")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if after := listTree(t, base); after != before {
				t.Errorf("a refused issue changed %s:\nbefore:\n%s\nafter:\n%s", base, before, after)
			}
			if n := joins(t, e); n != 0 {
				t.Errorf("the authority recorded %d joins; a bad destination must be refused before the proof is spent", n)
			}
		})
	}
}

// TestIssueCreatesMissingParents checks that missing parents of --out are
// created 0700 and that the run says so.
func TestIssueCreatesMissingParents(t *testing.T) {
	e := authoritytest.Start(t, "paths.test", authoritytest.DeployerYAML, "")
	env := e.Issuer.GitHubEnv()
	base := t.TempDir()
	out := filepath.Join(base, "creds", "ci", "mbot")
	var stderr bytes.Buffer
	if _, err := client.Issue(t.Context(), client.IssueOptions{Authority: e.URL, CAPin: e.Pin, Token: "github-deploy",
		Out: out, Env: func(k string) string { return env[k] }, Stderr: &stderr}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(base, "creds"), filepath.Join(base, "creds", "ci"), out} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %o, want 0700", p, st.Mode().Perm())
		}
		if p != out && !strings.Contains(stderr.String(), "created the missing directory "+p+" (mode 0700)") {
			t.Errorf("the run did not say it created %s; stderr: %q", p, stderr.String())
		}
	}
}

// TestDaemonRefusesSymlinkedDestination checks that mbot start refuses a
// symlinked destination at start, as a setting it cannot run with.
func TestDaemonRefusesSymlinkedDestination(t *testing.T) {
	base := t.TempDir()
	if err := os.Mkdir(filepath.Join(base, "real"), 0o700); err != nil {
		t.Fatal(err)
	}
	link(t, filepath.Join(base, "real"), filepath.Join(base, "mbot"))
	// Without the check the daemon would run, retrying, until ctx ends.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	err := client.RunDaemon(ctx, client.DaemonOptions{IssueOptions: client.IssueOptions{
		Authority: "https://127.0.0.1:1", Token: "github-deploy", Out: filepath.Join(base, "mbot"),
		Env: func(string) string { return "" }}})
	if err == nil || !strings.Contains(err.Error(), "mbot is a symbolic link to") {
		t.Fatalf("RunDaemon = %v, want a refusal of the symlinked destination", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(base, "real")); len(entries) != 0 {
		t.Errorf("written through the link: %v", entries)
	}
}

func link(t *testing.T, target, path string) {
	t.Helper()
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
}

// listTree lists every path under base with its type, without following links.
func listTree(t *testing.T, base string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(base, func(path string, st os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		b.WriteString(path + " " + st.Mode().String() + "\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// joins counts the join records of the authority's audit log.
func joins(t *testing.T, e *authoritytest.Env) int {
	t.Helper()
	events, err := e.Authority.Store().ListAudit(t.Context(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ev := range events {
		if ev.Event == "join" {
			n++
		}
	}
	return n
}
