package commands

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/admin"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/urfave/cli/v2"
)

func TestPositionalArgs(t *testing.T) {
	cases := []struct {
		args       []string
		wantArgs   []string
		wantOutput string
		wantDenied bool
		wantErr    string // a usage error containing this
	}{
		{args: []string{"bots"}, wantArgs: []string{"bots"}, wantOutput: "text"},
		{args: []string{"-o", "json", "bots"}, wantArgs: []string{"bots"}, wantOutput: "json"},
		{args: []string{"bots", "-o", "json"}, wantArgs: []string{"bots"}, wantOutput: "json"},
		{args: []string{"bots", "deployer", "--output=yaml", "--denied"}, wantArgs: []string{"bots", "deployer"}, wantOutput: "yaml", wantDenied: true},
		{args: []string{"bots", "--denied=false", "x"}, wantArgs: []string{"bots", "x"}, wantOutput: "text"},
		{args: []string{"bots", "--", "-o"}, wantArgs: []string{"bots", "-o"}, wantOutput: "text"},
		{args: []string{"bots", "-"}, wantArgs: []string{"bots", "-"}, wantOutput: "text"},
		{args: []string{"bots", "--colour", "red"}, wantErr: "mbot get has no flag --colour; see mbot get --help"},
		{args: []string{"bots", "-o"}, wantErr: "-o needs a value"},
		{args: []string{"bots", "--denied=maybe"}, wantErr: `--denied "maybe" is not valid: write true or false`},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var (
				got     []string
				output  string
				denied  bool
				callErr error
			)
			app := &cli.App{Name: "mbot", Commands: []*cli.Command{{
				Name:  "get",
				Flags: []cli.Flag{outputFlag("text", "yaml", "json"), &cli.BoolFlag{Name: "denied"}},
				Action: func(c *cli.Context) error {
					got, callErr = positionalArgs(c)
					output, denied = c.String("output"), c.Bool("denied")
					return nil
				},
			}}}
			if err := app.Run(append([]string{"mbot", "get"}, tc.args...)); err != nil {
				t.Fatal(err)
			}
			if tc.wantErr != "" {
				var usage usageError
				if !errors.As(callErr, &usage) || !strings.Contains(callErr.Error(), tc.wantErr) {
					t.Errorf("error %v, want a usage error containing %q", callErr, tc.wantErr)
				}
				return
			}
			if callErr != nil {
				t.Fatal(callErr)
			}
			if !reflect.DeepEqual(got, tc.wantArgs) || output != tc.wantOutput || denied != tc.wantDenied {
				t.Errorf("args %q output %q denied %v; want %q %q %v", got, output, denied, tc.wantArgs, tc.wantOutput, tc.wantDenied)
			}
		})
	}
}

func TestAuditDetails(t *testing.T) {
	cases := []struct {
		name string
		ev   store.AuditEvent
		want string
	}{
		{"github join", store.AuditEvent{Event: "join", Claims: map[string]string{
			"repository": "acme/app", "ref": "refs/heads/main", "sub": "repo:acme/app:ref:refs/heads/main", "actor": "octocat"}},
			"repository=acme/app ref=refs/heads/main"},
		{"gitlab join", store.AuditEvent{Event: "join", Claims: map[string]string{
			"project_path": "acme/app", "project_id": "20", "ref": "main", "environment": "production"}},
			"project_path=acme/app ref=main environment=production"},
		{"circleci join", store.AuditEvent{Event: "join", Claims: map[string]string{
			"project_id": "8f2b", "vcs_origin": "github.com/acme/app", "vcs_ref": "refs/heads/main", "sub": "org/x"}},
			"vcs_origin=github.com/acme/app vcs_ref=refs/heads/main"},
		{"join with only a subject", store.AuditEvent{Event: "join", Claims: map[string]string{"sub": "system:serviceaccount:ci:deployer"}},
			"sub=system:serviceaccount:ci:deployer"},
		{"refused before verification", store.AuditEvent{Event: "join"}, ""},
		{"resource change", store.AuditEvent{Event: "resource.apply", Message: "role/deploy bot/deployer", Remote: "local admin root"},
			"role/deploy bot/deployer by local admin root"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := auditDetails(tc.ev); got != tc.want {
				t.Errorf("auditDetails = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestWriteAuditTable(t *testing.T) {
	var b strings.Builder
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	err := writeAuditTable(&b, []store.AuditEvent{
		{Time: at, Event: "join", Allowed: false, Code: "rule_mismatch", Bot: "deployer", JoinToken: "gh", Method: "github",
			Claims: map[string]string{"repository": "evil/app", "ref": "refs/heads/main"}},
		{Time: at, Event: "join", Allowed: true, Bot: "deployer", JoinToken: "gh", Method: "github",
			Claims: map[string]string{"repository": "acme/app"}, Serials: []string{"ssh:1", "tls:ab"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("want a header and 2 rows:\n%s", b.String())
	}
	for i, want := range [][]string{
		{"TIME", "EVENT", "OUTCOME", "BOT", "JOIN TOKEN", "METHOD", "DETAILS", "SERIALS"},
		{"2026-01-02T03:04:05Z", "denied rule_mismatch", "deployer", "gh", "github", "repository=evil/app ref=refs/heads/main"},
		{"allowed", "repository=acme/app", "ssh:1 tls:ab"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("line %d lacks %q: %s", i, w, lines[i])
			}
		}
	}
}

func TestAllowRules(t *testing.T) {
	set := parseTestSet(t, `kind: join_token
version: v1
metadata: {name: gh}
spec:
  bot: b
  method: github
  github:
    allow:
      - repository: acme/app
        ref: refs/heads/main
      - repository: [acme/x, acme/y]
`)
	got := allowRules(set.JoinTokens["gh"].Spec.Section())
	if want := "repository=acme/app ref=refs/heads/main | repository=acme/x,acme/y"; got != want {
		t.Errorf("allowRules = %q, want %q", got, want)
	}
	if got := allowRules(nil); got != "" {
		t.Errorf("allowRules(nil) = %q", got)
	}
}

func TestFormatLogins(t *testing.T) {
	cases := []struct {
		rl         admin.RoleLogins
		want       string
		wantMarked bool
	}{
		{admin.RoleLogins{Role: "r", Defined: true, Logins: []admin.Login{{Name: "deploy"}, {Name: "ubuntu", Template: "{{internal.logins}}", TraitOnly: true}}},
			"deploy, ubuntu*", true},
		{admin.RoleLogins{Role: "r", Defined: true, Logins: []admin.Login{}, Empty: []string{"{{internal.db}}"}},
			"{{internal.db}} (expands to nothing)", false},
		{admin.RoleLogins{Role: "r", Defined: true}, "(none)", false},
		{admin.RoleLogins{Role: "r"}, "(role not defined)", false},
	}
	for _, tc := range cases {
		got, marked := formatLogins(tc.rl)
		if got != tc.want || marked != tc.wantMarked {
			t.Errorf("formatLogins(%+v) = %q, %v; want %q, %v", tc.rl, got, marked, tc.want, tc.wantMarked)
		}
	}
}

func parseTestSet(t *testing.T, docs string) *resources.Set {
	t.Helper()
	parsed, err := resources.Parse("test.yaml", []byte(docs))
	if err != nil {
		t.Fatal(err)
	}
	return resources.NewSet(parsed)
}
