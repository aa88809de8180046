package resources_test

import (
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/authority/resources"
)

// TestUnknownFieldMessages checks that a mistyped key is reported in the
// words of the YAML, with the nearest known field, and never by Go type name.
func TestUnknownFieldMessages(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"bot spec typo", "kind: bot\nversion: v1\nmetadata: {name: deployer}\nspec:\n  rolez: [deploy]\n",
			"f.yaml:5: bot spec has no field rolez (did you mean roles?)"},
		{"role spec typo", "kind: role\nversion: v1\nmetadata: {name: deploy}\nspec:\n  logins: [deploy]\n  db_user: [app]\n",
			"f.yaml:6: role spec has no field db_user (did you mean db_users?)"},
		{"role spec in capitals", "kind: role\nversion: v1\nmetadata: {name: deploy}\nspec:\n  Logins: [deploy]\n",
			"f.yaml:5: role spec has no field Logins (did you mean logins?)"},
		{"metadata typo", "kind: bot\nversion: v1\nmetadata: {nmae: deployer}\nspec: {roles: [deploy]}\n",
			"f.yaml:3: metadata has no field nmae (did you mean name?)"},
		{"top-level typo", "kind: bot\nversion: v1\nmetadata: {name: deployer}\nspce: {roles: [deploy]}\n",
			"a resource has no field spce (did you mean spec?)"},
		{"kubernetes cluster typo", "kind: kubernetes_cluster\nversion: v1\nmetadata: {name: k}\nspec:\n  apiserver: https://k:6443\n",
			"f.yaml:5: kubernetes_cluster spec has no field apiserver (did you mean api_server?)"},
		{"nothing near", "kind: bot\nversion: v1\nmetadata: {name: deployer}\nspec:\n  roles: [deploy]\n  colour: red\n",
			"f.yaml:6: bot spec has no field colour (fields: roles, traits)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := resources.Parse("f.yaml", []byte(tc.doc))
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			for _, goName := range []string{"BotSpec", "RoleSpec", "Metadata", "envelope", "resources."} {
				if strings.Contains(err.Error(), goName) {
					t.Errorf("error %q names the Go type %s", err, goName)
				}
			}
		})
	}
}
