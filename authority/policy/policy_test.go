package policy_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/identity"
	"gopkg.in/yaml.v3"
)

func TestExpandTemplate(t *testing.T) {
	traits := map[string][]string{
		"logins":  {"ubuntu", "ci"},
		"team":    {"payments"},
		"blank":   {""},
		"windows": {"Administrator"},
	}
	cases := []struct {
		in   string
		want []string
	}{
		{"deploy", []string{"deploy"}},
		{"{{internal.logins}}", []string{"ubuntu", "ci"}},
		{"{{ internal.logins }}", []string{"ubuntu", "ci"}},
		{"{{external.team}}", []string{"payments"}},
		{"svc-{{internal.team}}", []string{"svc-payments"}},
		{"{{internal.logins}}-ro", []string{"ubuntu-ro", "ci-ro"}},
		{"x-{{internal.logins}}-y", []string{"x-ubuntu-y", "x-ci-y"}},
		// A missing trait grants nothing, never the template's literal text.
		{"{{internal.missing}}", nil},
		{"svc-{{internal.missing}}", nil},
		{"{{internal.blank}}", nil},
		// Malformed templates grant nothing either.
		{"{{internal.logins", nil},
		{"{{internal}}", nil},
		{"{{internal.logins}}{{internal.team}}", nil},
		{"{{other.logins}}", nil},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got := policy.ExpandTemplate(tc.in, traits)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ExpandTemplate(%q) = %q, want %q", tc.in, got, tc.want)
			}
			for _, g := range got {
				if strings.Contains(g, "{{") || strings.Contains(g, "}}") {
					t.Errorf("expansion %q keeps template text", g)
				}
			}
		})
	}
}

const rolesYAML = `kind: role
version: v1
metadata: {name: deploy}
spec:
  logins: ["{{internal.logins}}", deploy, "{{internal.missing}}"]
---
kind: role
version: v1
metadata: {name: read}
spec:
  logins: [reader, deploy]
  max_ttl: 8h
---
kind: role
version: v1
metadata: {name: brief}
spec:
  logins: ["svc-{{internal.team}}"]
  max_ttl: 30m
---
kind: role
version: v1
metadata: {name: admin}
spec:
  logins: [root]
  require_session_mfa: true
---
kind: role
version: v1
metadata: {name: laptop-only}
spec:
  logins: [dev]
  device_trust_mode: required
---
kind: role
version: v1
metadata: {name: humans-need-devices}
spec:
  logins: [ops]
  device_trust_mode: required-for-humans
---
kind: bot
version: v1
metadata: {name: deployer}
spec:
  roles: [deploy, read, brief, admin, laptop-only, humans-need-devices, ghost]
  traits: {logins: [ubuntu, ci], team: [payments]}
`

func TestResolveGrant(t *testing.T) {
	parsed, err := resources.Parse("roles.yaml", []byte(rolesYAML))
	if err != nil {
		t.Fatal(err)
	}
	set := resources.NewSet(parsed)
	bot := set.Bots["deployer"]
	const botCap = 24 * time.Hour
	cases := []struct {
		name       string
		roles      []string
		ttl        time.Duration
		wantRoles  []string
		wantLogins []string
		wantTTL    time.Duration
		wantCapBy  string // fragment of CapNote; empty: not capped
		wantCode   identity.ErrorCode
		wantInMsg  []string
	}{
		{
			name: "default TTL is one hour", roles: []string{"deploy"},
			wantRoles: []string{"deploy"}, wantLogins: []string{"ubuntu", "ci", "deploy"}, wantTTL: time.Hour,
		},
		{
			name: "TTL under every cap is kept", roles: []string{"deploy"}, ttl: 20 * time.Hour,
			wantRoles: []string{"deploy"}, wantLogins: []string{"ubuntu", "ci", "deploy"}, wantTTL: 20 * time.Hour,
		},
		{
			name: "bot cap", roles: []string{"deploy"}, ttl: 48 * time.Hour,
			wantRoles: []string{"deploy"}, wantLogins: []string{"ubuntu", "ci", "deploy"}, wantTTL: 24 * time.Hour,
			wantCapBy: "the authority's bot cap",
		},
		{
			name: "role max_ttl below the bot cap", roles: []string{"deploy", "read"}, ttl: 48 * time.Hour,
			wantRoles: []string{"deploy", "read"}, wantLogins: []string{"ubuntu", "ci", "deploy", "reader"}, wantTTL: 8 * time.Hour,
			wantCapBy: `role "read" max_ttl`,
		},
		{
			name: "most restrictive max_ttl wins", roles: []string{"read", "brief", "deploy"}, ttl: 2 * time.Hour,
			wantRoles: []string{"read", "brief", "deploy"}, wantLogins: []string{"reader", "deploy", "svc-payments", "ubuntu", "ci"},
			wantTTL: 30 * time.Minute, wantCapBy: `role "brief" max_ttl`,
		},
		{
			name: "default TTL is capped by max_ttl too", roles: []string{"brief"},
			wantRoles: []string{"brief"}, wantLogins: []string{"svc-payments"}, wantTTL: 30 * time.Minute, wantCapBy: "max_ttl",
		},
		{
			name: "device trust for humans only is fine for a bot", roles: []string{"humans-need-devices"},
			wantRoles: []string{"humans-need-devices"}, wantLogins: []string{"ops"}, wantTTL: time.Hour,
		},
		{
			name: "role the bot does not hold", roles: []string{"deploy", "payroll"}, wantCode: identity.CodeRoleDenied,
			wantInMsg: []string{`"payroll"`, "deploy, read, brief, admin"},
		},
		{
			name: "require_session_mfa", roles: []string{"admin"}, wantCode: identity.CodeRoleDenied,
			wantInMsg: []string{`role "admin"`, "require_session_mfa"},
		},
		{
			name: "device_trust_mode required", roles: []string{"laptop-only"}, wantCode: identity.CodeRoleDenied,
			wantInMsg: []string{`role "laptop-only"`, "device_trust_mode"},
		},
		{
			name: "held role that is not defined", roles: []string{"ghost"}, wantCode: identity.CodeRoleDenied,
			wantInMsg: []string{`"ghost"`, "not defined"},
		},
		{
			// No roles asked means all of the bot's, and this bot holds one a bot cannot use.
			name: "all roles include a refused one", wantCode: identity.CodeRoleDenied,
			wantInMsg: []string{`role "admin"`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g, err := policy.ResolveGrant(set, bot, tc.roles, tc.ttl, botCap)
			if tc.wantCode != "" {
				var ie *identity.Error
				if !errors.As(err, &ie) || ie.Code != tc.wantCode {
					t.Fatalf("err = %v, want %s", err, tc.wantCode)
				}
				for _, f := range tc.wantInMsg {
					if !strings.Contains(ie.Message, f) {
						t.Errorf("message does not mention %q: %s", f, ie.Message)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(g.Roles, tc.wantRoles) {
				t.Errorf("roles %q, want %q", g.Roles, tc.wantRoles)
			}
			if !reflect.DeepEqual(g.Logins, tc.wantLogins) {
				t.Errorf("logins %q, want %q", g.Logins, tc.wantLogins)
			}
			if g.TTL != tc.wantTTL {
				t.Errorf("TTL %s, want %s", g.TTL, tc.wantTTL)
			}
			switch {
			case tc.wantCapBy == "" && g.CapNote != "":
				t.Errorf("capped although under every limit: %s", g.CapNote)
			case tc.wantCapBy != "" && !strings.Contains(g.CapNote, tc.wantCapBy):
				t.Errorf("cap note %q does not name %q", g.CapNote, tc.wantCapBy)
			}
		})
	}
}

func TestParseAllowRules(t *testing.T) {
	known := []string{"repository", "ref", "ref_protected"}
	cases := []struct {
		name, yaml string
		want       string // error fragment; empty: parses
		patterns   map[string][]string
	}{
		{name: "string, boolean and list", yaml: "- repository: acme/app\n  ref_protected: true\n  ref: [refs/heads/main, 'refs/tags/v*']\n",
			patterns: map[string][]string{"repository": {"acme/app"}, "ref_protected": {"true"}, "ref": {"refs/heads/main", "refs/tags/v*"}}},
		{name: "not a list", yaml: "repository: acme/app\n", want: "line 1: allow must be a list of rules"},
		{name: "rule is a string", yaml: "- acme/app\n", want: "line 1: allow[0] must be a mapping"},
		{name: "empty rule", yaml: "- repository: acme/app\n- {}\n", want: "line 2: allow[1] must be a mapping"},
		{name: "unknown field", yaml: "- repository: acme/app\n  branch: main\n", want: `line 2: allow[0]: unknown field "branch"; fields for this method are: repository, ref, ref_protected`},
		{name: "empty value", yaml: "- repository: ''\n", want: "line 1: allow[0].repository: empty value"},
		{name: "null value", yaml: "- repository:\n", want: "allow[0].repository: empty value"},
		{name: "empty list", yaml: "- ref: []\n", want: "allow[0].ref: empty list"},
		{name: "list of mappings", yaml: "- ref:\n    - {name: main}\n", want: "list items must be non-empty strings"},
		{name: "mapping value", yaml: "- ref: {branch: main}\n", want: "line 1: allow[0].ref: must be a string, boolean or list of strings"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var doc yaml.Node
			if err := yaml.Unmarshal([]byte(tc.yaml), &doc); err != nil {
				t.Fatal(err)
			}
			rules, err := policy.ParseAllowRules(doc.Content[0], known)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[string][]string{}
			for _, f := range rules[0].Fields {
				got[f.Name] = f.Patterns
			}
			if !reflect.DeepEqual(got, tc.patterns) {
				t.Errorf("patterns %v, want %v", got, tc.patterns)
			}
		})
	}
}

func TestMatchRules(t *testing.T) {
	var doc yaml.Node
	src := "- repository: acme/*\n  ref: refs/heads/release-?\n- repository: acme/app\n  ref: [refs/heads/main, refs/tags/v*]\n"
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	rules, err := policy.ParseAllowRules(doc.Content[0], []string{"repository", "ref", "context_id"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		claims policy.Claims
		want   bool
		reason []string
	}{
		{"first rule by glob", policy.Claims{"repository": {"acme/infra"}, "ref": {"refs/heads/release-3"}}, true, nil},
		{"second rule by list", policy.Claims{"repository": {"acme/app"}, "ref": {"refs/tags/v1.2.0"}}, true, nil},
		{"* spans slashes", policy.Claims{"repository": {"acme/team/app"}, "ref": {"refs/heads/release-3"}}, true, nil},
		{"? is one character", policy.Claims{"repository": {"acme/infra"}, "ref": {"refs/heads/release-30"}}, false,
			[]string{"rule 1 (line 1): ref wants refs/heads/release-?, token has refs/heads/release-30",
				"rule 2 (line 3): repository wants acme/app, token has acme/infra; ref wants refs/heads/main or refs/tags/v*, token has refs/heads/release-30"}},
		{"glob is anchored", policy.Claims{"repository": {"evil/acme/app"}, "ref": {"refs/heads/main"}}, false,
			[]string{"repository wants acme/*, token has evil/acme/app"}},
		{"absent claim", policy.Claims{"repository": {"acme/app"}}, false, []string{"ref wants refs/heads/main or refs/tags/v*, token has (absent)"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ok, why := policy.MatchRules(rules, tc.claims)
			if ok != tc.want {
				t.Fatalf("MatchRules = %t (%s), want %t", ok, why, tc.want)
			}
			for _, f := range tc.reason {
				if !strings.Contains(why.String(), f) {
					t.Errorf("reason does not mention %q: %s", f, why)
				}
			}
		})
	}
	t.Run("no rules admit nothing", func(t *testing.T) {
		if ok, why := policy.MatchRules(nil, policy.Claims{"repository": {"acme/app"}}); ok || !strings.Contains(why.String(), "no allow rules") {
			t.Errorf("MatchRules(nil) = %t, %q", ok, why)
		}
	})
}

func TestClaimsFormatting(t *testing.T) {
	c := policy.Claims{"ref": {"main"}, "context_id": {"a", "b"}, "actor": {"octocat"}}
	if got, want := c.String(), "actor=octocat context_id=a,b ref=main"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got, want := c.Flatten(), map[string]string{"ref": "main", "context_id": "a,b", "actor": "octocat"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Flatten() = %v, want %v", got, want)
	}
}
