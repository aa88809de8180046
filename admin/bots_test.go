package admin_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/admin"
	"github.com/mbot-dev/mbot/authority/resources"
)

func TestBotDocument(t *testing.T) {
	base := role("deploy", `{logins: ["{{internal.logins}}"]}`) + role("ops", `{logins: [ops]}`) +
		"kind: bot\nversion: v1\nmetadata: {name: old, description: kept, labels: {team: a}}\n" +
		"spec: {roles: [ops], traits: {logins: [root], db_users: [reader]}}\n"
	cases := []struct {
		name        string
		bot         string
		roles       []string
		logins      []string
		wantRoles   []string
		wantTraits  map[string][]string
		wantMeta    resources.Metadata
		wantErrWith []string
	}{
		{
			name: "new bot", bot: "deployer", roles: []string{"deploy", "ops", "deploy"}, logins: []string{"ubuntu", "ci"},
			wantRoles: []string{"deploy", "ops"}, wantTraits: map[string][]string{"logins": {"ubuntu", "ci"}},
			wantMeta: resources.Metadata{Name: "deployer"},
		},
		{
			name: "new bot without logins", bot: "deployer", roles: []string{"ops"},
			wantRoles: []string{"ops"}, wantMeta: resources.Metadata{Name: "deployer"},
		},
		{
			name: "replacing keeps other traits and metadata", bot: "old", roles: []string{"deploy"}, logins: []string{"ci"},
			wantRoles: []string{"deploy"}, wantTraits: map[string][]string{"logins": {"ci"}, "db_users": {"reader"}},
			wantMeta: resources.Metadata{Name: "old", Description: "kept", Labels: map[string]string{"team": "a"}},
		},
		{
			name: "replacing without logins drops the logins trait", bot: "old", roles: []string{"ops"},
			wantRoles: []string{"ops"}, wantTraits: map[string][]string{"db_users": {"reader"}},
			wantMeta: resources.Metadata{Name: "old", Description: "kept", Labels: map[string]string{"team": "a"}},
		},
		{
			name: "unknown roles", bot: "deployer", roles: []string{"deploy", "admin", "prod"},
			wantErrWith: []string{`"admin", "prod" are not defined`, "existing roles: deploy, ops"},
		},
		{
			name: "no roles", bot: "deployer", wantErrWith: []string{"at least one role"},
		},
		{
			name: "login with a newline", bot: "deployer", roles: []string{"deploy"}, logins: []string{"ubuntu\n    ProxyCommand x"},
			wantErrWith: []string{"--logins", `"ubuntu\n    ProxyCommand x"`, "not a valid user name"},
		},
		{
			name: "login list in one value", bot: "deployer", roles: []string{"deploy"}, logins: []string{"ubuntu ci"},
			wantErrWith: []string{"--logins", `"ubuntu ci"`},
		},
		{
			name: "bot name in upper case", bot: "Deployer", roles: []string{"deploy"},
			wantErrWith: []string{"bot name", `"Deployer"`, "not a valid name"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set := parseSet(t, base)
			doc, err := admin.BotDocument(set, tc.bot, tc.roles, tc.logins)
			if tc.wantErrWith != nil {
				if err == nil {
					t.Fatalf("BotDocument succeeded:\n%s", doc)
				}
				for _, s := range tc.wantErrWith {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error does not say %q: %v", s, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := resources.Parse("mbot bots add", doc)
			if err != nil {
				t.Fatalf("%v\n%s", err, doc)
			}
			if len(parsed) != 1 || parsed[0].Bot == nil {
				t.Fatalf("document is not one bot:\n%s", doc)
			}
			b := parsed[0].Bot
			if !reflect.DeepEqual(b.Metadata, tc.wantMeta) || !reflect.DeepEqual(b.Spec.Roles, tc.wantRoles) ||
				!reflect.DeepEqual(b.Spec.Traits, tc.wantTraits) {
				t.Errorf("got metadata %+v roles %v traits %v\nwant metadata %+v roles %v traits %v",
					b.Metadata, b.Spec.Roles, b.Spec.Traits, tc.wantMeta, tc.wantRoles, tc.wantTraits)
			}
		})
	}
}

func TestBotDocumentWithNoRolesDefined(t *testing.T) {
	_, err := admin.BotDocument(resources.NewSet(nil), "deployer", []string{"deploy"}, nil)
	if err == nil || !strings.Contains(err.Error(), "there are no roles yet") {
		t.Errorf("error = %v, want one saying there are no roles yet", err)
	}
}
