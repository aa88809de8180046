package admin_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/admin"
	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/internal/authoritytest"
)

// parseSet reads YAML documents into a set, failing the test on errors.
func parseSet(t *testing.T, docs string) *resources.Set {
	t.Helper()
	parsed, err := resources.Parse("test.yaml", []byte(docs))
	if err != nil {
		t.Fatal(err)
	}
	set := resources.NewSet(parsed)
	if err := set.CheckReferences(); err != nil {
		t.Fatal(err)
	}
	return set
}

func role(name, spec string) string {
	return "kind: role\nversion: v1\nmetadata: {name: " + name + "}\nspec: " + spec + "\n---\n"
}

func bot(name, spec string) string {
	return "kind: bot\nversion: v1\nmetadata: {name: " + name + "}\nspec: " + spec + "\n---\n"
}

func TestBotLogins(t *testing.T) {
	cases := []struct {
		name string
		docs string
		want []admin.RoleLogins
	}{
		{
			name: "literal and template",
			docs: role("deploy", `{logins: ["{{internal.logins}}", deploy]}`) +
				bot("deployer", `{roles: [deploy], traits: {logins: [ubuntu, deploy]}}`),
			want: []admin.RoleLogins{{Role: "deploy", Defined: true, Logins: []admin.Login{
				// deploy is listed literally by the role, so it is no pitfall.
				{Name: "ubuntu", Template: "{{internal.logins}}", TraitOnly: true},
				{Name: "deploy", Template: "{{internal.logins}}"},
			}}},
		},
		{
			name: "login listed literally by another role",
			docs: role("ops", `{logins: [root]}`) + role("deploy", `{logins: ["{{internal.logins}}"]}`) +
				bot("deployer", `{roles: [deploy], traits: {logins: [root, ci]}}`),
			want: []admin.RoleLogins{{Role: "deploy", Defined: true, Logins: []admin.Login{
				{Name: "root", Template: "{{internal.logins}}"},
				{Name: "ci", Template: "{{internal.logins}}", TraitOnly: true},
			}}},
		},
		{
			name: "missing trait expands to nothing",
			docs: role("db", `{logins: ["{{internal.db_users}}", "svc-{{internal.team}}", reader]}`) +
				bot("deployer", `{roles: [db], traits: {logins: [ubuntu]}}`),
			want: []admin.RoleLogins{{Role: "db", Defined: true,
				Logins: []admin.Login{{Name: "reader"}},
				Empty:  []string{"{{internal.db_users}}", "svc-{{internal.team}}"}}},
		},
		{
			name: "mbot variables: the cluster's own bot",
			docs: role("ci", `{logins: ["ci-{{mbot.cluster}}", "{{mbot.bot}}", "from-{{mbot.root_cluster}}"]}`) +
				bot("deployer", `{roles: [ci]}`),
			// {{mbot.root_cluster}} is for exchanged identities: nothing for
			// an own bot, and not reported as empty.
			want: []admin.RoleLogins{{Role: "ci", Defined: true, Logins: []admin.Login{
				{Name: "ci-acme", Template: "ci-{{mbot.cluster}}"},
				{Name: "deployer", Template: "{{mbot.bot}}"},
			}}},
		},
		{
			name: "one row per role, in the bot's order",
			docs: role("a", `{logins: [x]}`) + role("b", `{logins: ["{{internal.logins}}"]}`) +
				bot("deployer", `{roles: [b, a]}`),
			want: []admin.RoleLogins{
				{Role: "b", Defined: true, Logins: []admin.Login{}, Empty: []string{"{{internal.logins}}"}},
				{Role: "a", Defined: true, Logins: []admin.Login{{Name: "x"}}},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set := parseSet(t, tc.docs)
			got := admin.BotLogins(set, set.Bots["deployer"], "acme")
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("BotLogins:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestBotLoginsUndefinedRole(t *testing.T) {
	set := resources.NewSet(nil)
	b := &resources.Bot{Metadata: resources.Metadata{Name: "orphan"}, Spec: resources.BotSpec{Roles: []string{"gone"}}}
	set.Bots["orphan"] = b
	got := admin.BotLogins(set, b, "acme")
	if len(got) != 1 || got[0].Defined || got[0].Role != "gone" {
		t.Errorf("BotLogins of a bot with an undefined role = %+v", got)
	}
	report := admin.Lint(set, &admin.Settings{})
	if report.Blocking() != 1 || !strings.Contains(report.Findings[0].Message, `role "gone", which is not defined`) {
		t.Errorf("Lint: %+v", report.Findings)
	}
}

func TestLint(t *testing.T) {
	okRole := role("deploy", `{logins: ["{{internal.logins}}"]}`)
	okBot := bot("deployer", `{roles: [deploy], traits: {logins: [ubuntu]}}`)
	type want struct {
		severity admin.Severity
		bot      string
		role     string
		says     []string // the message names these
	}
	cases := []struct {
		name     string
		docs     string
		settings admin.Settings
		want     []want
	}{
		{
			name: "clean",
			docs: okRole + okBot,
		},
		{
			name: "role with per-session MFA",
			docs: okRole + role("prod", `{logins: [root], require_session_mfa: true}`) +
				bot("deployer", `{roles: [deploy, prod], traits: {logins: [ubuntu]}}`),
			want: []want{{admin.Blocking, "deployer", "prod",
				[]string{`role "prod"`, "require_session_mfa: true", "issue time", "roles people use"}}},
		},
		{
			name: "role requiring device trust",
			docs: role("prod", `{logins: [root], device_trust_mode: required}`) + bot("deployer", `{roles: [prod]}`),
			want: []want{{admin.Blocking, "deployer", "prod",
				[]string{`role "prod"`, "device_trust_mode: required", "required-for-humans"}}},
		},
		{
			name: "spiffe_ids covering every bot's default ID",
			docs: okRole + role("svid", `{spiffe_ids: ["/bot/*", /bot/deployer, "/ci/{{internal.team}}/*"]}`) +
				bot("deployer", `{roles: [deploy, svid], traits: {logins: [ubuntu], team: [a]}}`),
			want: []want{{admin.Warning, "", "svid", []string{`role "svid"`, `"/bot/*"`, "pass for any other bot", "/bot/<name>"}}},
		},
		{
			name: "device trust only for humans is fine",
			docs: role("prod", `{logins: [root], device_trust_mode: required-for-humans}`) + bot("deployer", `{roles: [prod]}`),
		},
		{
			name:     "cluster-wide per-session MFA",
			docs:     okRole + okBot + bot("other", `{roles: [deploy], traits: {logins: [ci]}}`),
			settings: admin.Settings{RequireSessionMFA: true},
			want: []want{
				{admin.Blocking, "deployer", "", []string{"authority.yaml", "require_session_mfa: true", `bot "deployer"`, "roles people use"}},
				{admin.Blocking, "other", "", []string{"authority.yaml", `bot "other"`}},
			},
		},
		{
			name:     "cluster-wide device trust",
			docs:     okRole + okBot,
			settings: admin.Settings{DeviceTrustMode: "required"},
			want: []want{{admin.Blocking, "deployer", "",
				[]string{"authority.yaml", "device_trust_mode: required", "required-for-humans", "deploy"}}},
		},
		{
			name: "cluster-wide device trust with a role opting out",
			docs: role("deploy", `{logins: ["{{internal.logins}}"], device_trust_mode: required-for-humans}`) +
				role("ops", `{logins: [ops]}`) + bot("deployer", `{roles: [deploy, ops], traits: {logins: [ubuntu]}}`),
			settings: admin.Settings{DeviceTrustMode: "required"},
		},
		{
			name:     "cluster-wide device trust for humans only",
			docs:     okRole + okBot,
			settings: admin.Settings{DeviceTrustMode: "required-for-humans"},
		},
		{
			name: "template whose trait is missing",
			docs: okRole + role("db", `{logins: ["{{internal.db_users}}"]}`) +
				bot("deployer", `{roles: [deploy, db], traits: {logins: [ubuntu]}}`),
			want: []want{{admin.Warning, "deployer", "db",
				[]string{"{{internal.db_users}}", "expands to nothing", "no trait db_users", "it has logins", "db_users: [...]"}}},
		},
		{
			name: "logins trait missing altogether",
			docs: okRole + bot("deployer", `{roles: [deploy]}`),
			want: []want{
				{admin.Warning, "deployer", "deploy", []string{"{{internal.logins}}", "no trait logins", "mbot bots add deployer --roles deploy --logins"}},
				{admin.Warning, "deployer", "", []string{"no SSH login"}},
			},
		},
		{
			name: "malformed template",
			docs: role("deploy", `{logins: ["{{internal.logins}}{{internal.team}}", ci]}`) + okBot,
			want: []want{{admin.Warning, "deployer", "deploy", []string{"malformed"}}},
		},
		{
			name: "max_ttl above the bot cap",
			docs: role("deploy", `{logins: ["{{internal.logins}}"], max_ttl: 48h}`) + okBot,
			want: []want{{admin.Warning, "", "deploy", []string{"max_ttl: 48h0m0s", "24h0m0s"}}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set := parseSet(t, tc.docs)
			report := admin.Lint(set, &tc.settings)
			if len(report.Findings) != len(tc.want) {
				t.Fatalf("%d findings, want %d: %+v", len(report.Findings), len(tc.want), report.Findings)
			}
			blocking := 0
			for i, w := range tc.want {
				f := report.Findings[i]
				if f.Severity != w.severity || f.Bot != w.bot || f.Role != w.role {
					t.Errorf("finding %d is %s for bot %q role %q, want %s for bot %q role %q: %s",
						i, f.Severity, f.Bot, f.Role, w.severity, w.bot, w.role, f.Message)
				}
				for _, s := range w.says {
					if !strings.Contains(f.Message, s) {
						t.Errorf("finding %d does not say %q: %s", i, s, f.Message)
					}
				}
				if w.severity == admin.Blocking {
					blocking++
				}
			}
			if report.Blocking() != blocking {
				t.Errorf("Blocking() = %d, want %d", report.Blocking(), blocking)
			}
			if len(report.Bots) != len(set.Bots) {
				t.Errorf("report lists %d bots, want %d", len(report.Bots), len(set.Bots))
			}
		})
	}
}

func TestLintReportsEveryBotsLogins(t *testing.T) {
	set := parseSet(t, role("deploy", `{logins: ["{{internal.logins}}", deploy]}`)+
		bot("b", `{roles: [deploy], traits: {logins: [ci]}}`)+bot("a", `{roles: [deploy], traits: {logins: [root]}}`))
	report := admin.Lint(set, nil)
	if len(report.Bots) != 2 || report.Bots[0].Bot != "a" || report.Bots[1].Bot != "b" {
		t.Fatalf("bots not listed by name: %+v", report.Bots)
	}
	var got []string
	for _, l := range report.Bots[0].Roles[0].Logins {
		got = append(got, l.Name)
	}
	if !reflect.DeepEqual(got, []string{"root", "deploy"}) {
		t.Errorf("bot a's deploy role grants %v, want [root deploy]", got)
	}
}

// unscopedTokenYAML is a join token from before allow rules had to pin an
// owner: it admits a main-branch job of any repository on GitHub.
const unscopedTokenYAML = `kind: join_token
version: v1
metadata: {name: github-any}
spec:
  bot: deployer
  method: github
  github:
    allow:
      - ref: refs/heads/main
`

// TestLintUnscopedJoinToken: a store written before allow rules had to pin
// an owner still opens for admin commands; mbot lint reports each such join
// token with the message the authority refuses it with at start and at
// mbot apply, and mbot apply of the fixed rule clears it.
func TestLintUnscopedJoinToken(t *testing.T) {
	e := authoritytest.Start(t, "admin.test", botsYAML, "")
	ctx := t.Context()
	wantMsg := "github-any.yaml:9: join_token \"github-any\": allow[0] does not pin the owner"

	applyErr := e.Authority.Apply(ctx, mustParse(t, "github-any.yaml", unscopedTokenYAML), "test")
	if applyErr == nil || !strings.HasPrefix(applyErr.Error(), wantMsg) {
		t.Fatalf("apply of an unscoped rule: %v, want %q", applyErr, wantMsg)
	}

	// The old version stored it without the check.
	if err := e.Authority.Store().PutResources(ctx, []store.StoredResource{{Kind: "join_token", Name: "github-any", Body: []byte(unscopedTokenYAML)}}); err != nil {
		t.Fatal(err)
	}
	local, err := admin.OpenLocal(ctx, e.Authority.Config())
	if err != nil {
		t.Fatalf("the admin is locked out of a store with an unscoped join token: %v", err)
	}
	defer local.Close()
	set, err := local.Resources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	report := admin.Lint(set, nil)
	if len(report.Findings) != 1 || report.Blocking() != 1 {
		t.Fatalf("findings %+v, want one blocking finding", report.Findings)
	}
	f := report.Findings[0]
	stored := strings.Replace(applyErr.Error(), "github-any.yaml:9:", "stored join_token/github-any:9:", 1)
	if f.JoinToken != "github-any" || f.Bot != "deployer" || f.Message != stored {
		t.Errorf("finding %+v\nwant the authority's message %q", f, stored)
	}
	for _, says := range []string{"- ref: refs/heads/main", "- ref: refs/heads/main\n      repository_owner: <your org or user>   # add"} {
		if !strings.Contains(f.Message, says) {
			t.Errorf("finding does not show %q: %s", says, f.Message)
		}
	}
	if _, err := authority.Open(ctx, e.Authority.Config(), authority.Options{}); err == nil || err.Error() != stored {
		t.Errorf("authority start with the stored token: %v\nwant %q", err, stored)
	}

	fixed := strings.Replace(unscopedTokenYAML, "- ref:", "- repository_owner: acme\n        ref:", 1)
	if _, err := local.Apply(ctx, "github-any.yaml", []byte(fixed)); err != nil {
		t.Fatalf("applying the fix: %v", err)
	}
	if set, err = local.Resources(ctx); err != nil {
		t.Fatal(err)
	}
	if report := admin.Lint(set, nil); len(report.Findings) != 0 {
		t.Errorf("findings after the fix: %+v", report.Findings)
	}
}

func mustParse(t *testing.T, file, docs string) []resources.Resource {
	t.Helper()
	parsed, err := resources.Parse(file, []byte(docs))
	if err != nil {
		t.Fatal(err)
	}
	return parsed
}
