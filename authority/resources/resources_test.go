package resources_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/resources"
)

// botsYAML is the SPEC's example file: a role, a bot and a join token.
const botsYAML = `kind: role
version: v1
metadata: {name: deploy}
spec:
  logins: ["{{internal.logins}}", deploy]
  max_ttl: 8h
  require_session_mfa: false
  device_trust_mode: "off"
---
kind: bot
version: v1
metadata: {name: deployer}
spec:
  roles: [deploy]
  traits: {logins: [ubuntu, ci]}
---
kind: join_token
version: v1
metadata: {name: github-deploy}
spec:
  bot: deployer
  method: github
  github:
    allow:
      - repository: acme/app
        ref: refs/heads/main
`

func TestParseMultiDocument(t *testing.T) {
	res, err := resources.Parse("bots.yaml", []byte(botsYAML))
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 {
		t.Fatalf("parsed %d resources, want 3", len(res))
	}
	kinds := []string{res[0].Kind, res[1].Kind, res[2].Kind}
	if want := []string{"role", "bot", "join_token"}; !reflect.DeepEqual(kinds, want) {
		t.Errorf("kinds %v, want %v", kinds, want)
	}

	role := res[0].Role
	if role == nil || role.Metadata.Name != "deploy" {
		t.Fatalf("first resource is not role deploy: %+v", res[0])
	}
	if want := []string{"{{internal.logins}}", "deploy"}; !reflect.DeepEqual(role.Spec.Logins, want) {
		t.Errorf("logins %q, want %q", role.Spec.Logins, want)
	}
	if time.Duration(role.Spec.MaxTTL) != 8*time.Hour {
		t.Errorf("max_ttl %s, want 8h", time.Duration(role.Spec.MaxTTL))
	}
	if role.Spec.DeviceTrustMode != "off" {
		t.Errorf("device_trust_mode %q", role.Spec.DeviceTrustMode)
	}

	bot := res[1].Bot
	if bot == nil || !reflect.DeepEqual(bot.Spec.Traits["logins"], []string{"ubuntu", "ci"}) {
		t.Fatalf("bot traits: %+v", res[1])
	}
	if got := bot.Source.String(); got != "bots.yaml:10" {
		t.Errorf("bot source %q, want bots.yaml:10", got)
	}

	tok := res[2].JoinToken
	if tok == nil || tok.Spec.Bot != "deployer" || tok.Spec.Method != "github" {
		t.Fatalf("join token: %+v", res[2])
	}
	if got := tok.Source.String(); got != "bots.yaml:17" {
		t.Errorf("join token source %q, want bots.yaml:17", got)
	}
	sec := tok.Spec.Section()
	if sec == nil {
		t.Fatal("no spec.github section")
	}
	if allow := resources.Lookup(sec, "allow"); allow == nil || allow.Line != 25 || len(allow.Content) != 1 {
		t.Errorf("spec.github.allow = %+v, want one rule on line 25", allow)
	}
	if res[2].Name() != "github-deploy" || res[2].Source().Line != 17 {
		t.Errorf("Name/Source = %q/%v", res[2].Name(), res[2].Source())
	}

	// Body round-trips: the store re-parses what it kept.
	again, err := resources.Parse("stored", res[2].Body)
	if err != nil || len(again) != 1 || again[0].JoinToken.Spec.Section() == nil {
		t.Errorf("re-parsing the stored body: %v %+v", err, again)
	}
}

func TestParseSkipsEmptyDocuments(t *testing.T) {
	data := "---\n# nothing here\n---\n" + botsYAML + "---\n"
	res, err := resources.Parse("bots.yaml", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 {
		t.Fatalf("parsed %d resources, want 3", len(res))
	}
	if got := res[1].Source().String(); got != "bots.yaml:13" {
		t.Errorf("bot source %q, want bots.yaml:13 (lines count from the top of the file)", got)
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{
			name: "unknown spec field",
			yaml: "kind: role\nversion: v1\nmetadata:\n  name: deploy\nspec: {loginz: [x]}\n",
			want: []string{"bots.yaml:5:", "role spec has no field loginz (did you mean logins?)"},
		},
		{
			name: "unknown field in a later document keeps file lines",
			yaml: botsYAML + "---\nkind: bot\nversion: v1\nmetadata: {name: b}\nspec:\n  roles: [deploy]\n  trait: {logins: [x]}\n",
			want: []string{"bots.yaml:33:", "bot spec has no field trait (did you mean traits?)"},
		},
		{
			name: "unknown top-level field",
			yaml: "kind: role\nversion: v1\nmetadata: {name: deploy}\nspecs: {logins: [x]}\n",
			want: []string{"bots.yaml:4:", "specs"},
		},
		{
			name: "unknown metadata field",
			yaml: "kind: bot\nversion: v1\nmetadata:\n  name: b\n  owner: me\nspec: {roles: [deploy]}\n",
			want: []string{"bots.yaml:5:", "owner"},
		},
		{
			name: "bad duration",
			yaml: "kind: role\nversion: v1\nmetadata: {name: deploy}\nspec:\n  logins: [x]\n  max_ttl: 8 hours\n",
			want: []string{"bots.yaml:6:", `"8 hours" is not a duration`},
		},
		{
			name: "negative duration",
			yaml: "kind: role\nversion: v1\nmetadata: {name: deploy}\nspec:\n  logins: [x]\n  max_ttl: -1h\n",
			want: []string{"bots.yaml:6:", "not a duration"},
		},
		{
			name: "max_ttl under a minute",
			yaml: "kind: role\nversion: v1\nmetadata: {name: deploy}\nspec:\n  logins: [x]\n  max_ttl: 30s\n",
			want: []string{"bots.yaml:6:", "at least 1m"},
		},
		{
			name: "bad device trust mode",
			yaml: "kind: role\nversion: v1\nmetadata: {name: deploy}\nspec:\n  logins: [x]\n  device_trust_mode: always\n",
			want: []string{"bots.yaml:6:", `"always"`},
		},
		{
			name: "unknown kind",
			yaml: botsYAML + "---\nkind: user\nversion: v1\nmetadata: {name: alice}\nspec: {}\n",
			want: []string{"bots.yaml:28:", `unknown kind "user"`},
		},
		{
			name: "missing kind",
			yaml: "version: v1\nmetadata: {name: alice}\n",
			want: []string{"bots.yaml:1:", "missing field kind"},
		},
		{
			name: "unsupported version",
			yaml: "kind: bot\nversion: v2\nmetadata: {name: b}\nspec: {roles: [deploy]}\n",
			want: []string{"bots.yaml:2:", `version "v2"`},
		},
		{
			name: "missing name",
			yaml: "kind: bot\nversion: v1\nmetadata: {}\nspec: {roles: [deploy]}\n",
			want: []string{"bots.yaml:1:", "metadata.name is required"},
		},
		{
			name: "name with a slash",
			yaml: "kind: bot\nversion: v1\nmetadata:\n  name: a/b\nspec: {roles: [deploy]}\n",
			want: []string{"bots.yaml:4:", `metadata.name "a/b" is not a valid name`},
		},
		{
			name: "bot without roles",
			yaml: "kind: bot\nversion: v1\nmetadata: {name: b}\nspec:\n  traits: {logins: [x]}\n",
			want: []string{"bots.yaml:5:", "at least one role"},
		},
		{
			name: "join token section not matching its method",
			yaml: "kind: join_token\nversion: v1\nmetadata: {name: t}\nspec:\n  bot: deployer\n  method: github\n  gitlab:\n    allow: [{project_path: acme/app}]\n",
			want: []string{"bots.yaml:8:", "spec.gitlab does not belong", `method "github"`},
		},
		{
			name: "join token without bot",
			yaml: "kind: join_token\nversion: v1\nmetadata: {name: t}\nspec:\n  method: github\n",
			want: []string{"bots.yaml:5:", "spec.bot is required"},
		},
		{
			name: "join token without method",
			yaml: "kind: join_token\nversion: v1\nmetadata: {name: t}\nspec:\n  bot: deployer\n",
			want: []string{"bots.yaml:5:", "spec.method is required"},
		},
		{
			name: "not a mapping",
			yaml: "- kind: bot\n",
			want: []string{"bots.yaml:1:", "must be a mapping"},
		},
		{
			name: "YAML syntax error",
			yaml: "kind: bot\nmetadata: {name: b\n",
			want: []string{"bots.yaml"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := resources.Parse("bots.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("parsed; want an error mentioning %q", tc.want)
			}
			for _, f := range tc.want {
				if !strings.Contains(err.Error(), f) {
					t.Errorf("error %q does not mention %q", err, f)
				}
			}
		})
	}
}

func TestCheckReferences(t *testing.T) {
	parse := func(t *testing.T, data string) *resources.Set {
		t.Helper()
		res, err := resources.Parse("bots.yaml", []byte(data))
		if err != nil {
			t.Fatal(err)
		}
		return resources.NewSet(res)
	}
	t.Run("complete", func(t *testing.T) {
		if err := parse(t, botsYAML).CheckReferences(); err != nil {
			t.Error(err)
		}
	})
	t.Run("bot with an undefined role", func(t *testing.T) {
		data := botsYAML + "---\nkind: bot\nversion: v1\nmetadata: {name: auditor}\nspec: {roles: [deploy, audit]}\n"
		err := parse(t, data).CheckReferences()
		if err == nil || !strings.Contains(err.Error(), `bots.yaml:28: bot "auditor" has role "audit", which is not defined`) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("join token for an undefined bot", func(t *testing.T) {
		data := botsYAML + "---\nkind: join_token\nversion: v1\nmetadata: {name: gl}\nspec:\n  bot: builder\n  method: gitlab\n"
		err := parse(t, data).CheckReferences()
		if err == nil || !strings.Contains(err.Error(), `bots.yaml:28: join_token "gl" names bot "builder", which is not defined`) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("later resource replaces an earlier one", func(t *testing.T) {
		data := botsYAML + "---\nkind: bot\nversion: v1\nmetadata: {name: deployer}\nspec: {roles: [missing]}\n"
		set := parse(t, data)
		if got := set.Bots["deployer"].Spec.Roles; !reflect.DeepEqual(got, []string{"missing"}) {
			t.Errorf("deployer roles %v, want the later definition", got)
		}
		if err := set.CheckReferences(); err == nil || !strings.Contains(err.Error(), `role "missing"`) {
			t.Errorf("err = %v", err)
		}
	})
}
