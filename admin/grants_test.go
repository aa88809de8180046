package admin_test

import (
	"reflect"
	"testing"

	"github.com/mbot-dev/mbot/admin"
)

// TestBotLoginsGrants: per role, the values of other outputs' role fields
// as the bot gets them, templates expanded; a role setting none has none.
func TestBotLoginsGrants(t *testing.T) {
	set := parseSet(t, role("db", `{db_users: ["{{internal.db_user}}", ci_migrate], db_names: [app], kubernetes_groups: ["team-{{internal.team}}"]}`)+
		role("ssh", `{logins: [deploy]}`)+
		bot("ci", `{roles: [db, ssh], traits: {db_user: [ci_payments], team: [a, b]}}`))
	got := admin.BotLogins(set, set.Bots["ci"], "acme")
	want := map[string][]string{"db_users": {"ci_payments", "ci_migrate"}, "db_names": {"app"}, "kubernetes_groups": {"team-a", "team-b"}}
	if !reflect.DeepEqual(got[0].Grants, want) {
		t.Errorf("role db grants %q, want %q", got[0].Grants, want)
	}
	if got[1].Grants != nil {
		t.Errorf("role ssh grants %q, want nothing", got[1].Grants)
	}
}
