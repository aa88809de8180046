package resources_test

import (
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/authority/resources"
)

// removalSet reads YAML documents into a set, failing the test on errors.
func removalSet(t *testing.T, docs string) *resources.Set {
	t.Helper()
	parsed, err := resources.Parse("test.yaml", []byte(docs))
	if err != nil {
		t.Fatal(err)
	}
	return resources.NewSet(parsed)
}

func roleDoc(name, spec string) string {
	return "kind: role\nversion: v1\nmetadata: {name: " + name + "}\nspec: " + spec + "\n---\n"
}

func botDoc(name, spec string) string {
	return "kind: bot\nversion: v1\nmetadata: {name: " + name + "}\nspec: " + spec + "\n---\n"
}

func TestCheckRemovable(t *testing.T) {
	set := removalSet(t, roleDoc("deploy", `{logins: [deploy]}`)+roleDoc("unused", `{logins: [x]}`)+
		botDoc("b1", `{roles: [deploy]}`)+botDoc("b2", `{roles: [unused, deploy]}`)+botDoc("lonely", `{roles: [unused]}`)+
		`kind: join_token
version: v1
metadata: {name: gh}
spec: {bot: b1, method: github, github: {allow: [{repository: acme/app}]}}
`)
	cases := []struct {
		kind, name string
		wantErr    []string // empty: removable
	}{
		{"role", "deploy", []string{`role "deploy"`, "b1, b2", "spec.roles"}},
		{"role", "unused", []string{"b2, lonely"}},
		{"role", "nope", []string{`no role named "nope"`, "existing: deploy, unused"}},
		{"bot", "b1", []string{"join_token/gh", `bot "b1"`, "mbot rm join_token/gh"}},
		{"bot", "b2", nil},
		{"bot", "nope", []string{`no bot named "nope"`, "b1, b2, lonely"}},
		{"join_token", "gh", nil},
		{"join_token", "nope", []string{`no join_token named "nope"`, "existing: gh"}},
	}
	for _, tc := range cases {
		t.Run(tc.kind+"/"+tc.name, func(t *testing.T) {
			err := set.CheckRemovable(tc.kind, tc.name)
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Errorf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("allowed, want a refusal")
			}
			for _, s := range tc.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error does not say %q: %v", s, err)
				}
			}
		})
	}
}
