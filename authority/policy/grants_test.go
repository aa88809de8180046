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
)

const grantsYAML = `kind: role
version: v1
metadata: {name: db}
spec:
  db_users: ["{{internal.db_user}}", ci_migrate]
  db_names: [app, "{{internal.team}}_app"]
  kubernetes_groups: [deployers, "team-{{internal.team}}"]
  spiffe_ids: ["/ci/{{internal.team}}/*"]
---
kind: role
version: v1
metadata: {name: more}
spec:
  db_users: [ci_migrate, reporter]
  host_names: ["*.ci.acme.internal"]
  jwt_audiences: [sts.amazonaws.com]
---
kind: bot
version: v1
metadata: {name: ci}
spec:
  roles: [db, more]
  traits: {db_user: [ci_payments], team: [payments, "billing"]}
`

// TestResolveGrantValues: the role fields of other outputs expand from the
// bot's traits, merge across the roles asked for without duplicates, and
// stay within the roles the output uses.
func TestResolveGrantValues(t *testing.T) {
	parsed, err := resources.Parse("roles.yaml", []byte(grantsYAML))
	if err != nil {
		t.Fatal(err)
	}
	set := resources.NewSet(parsed)
	if err := set.CheckReferences(); err != nil {
		t.Fatal(err)
	}
	bot := set.Bots["ci"]
	g, err := policy.ResolveGrant(set, bot, nil, time.Hour, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		resources.FieldDBUsers:          {"ci_payments", "ci_migrate", "reporter"},
		resources.FieldDBNames:          {"app", "payments_app", "billing_app"},
		resources.FieldKubernetesGroups: {"deployers", "team-payments", "team-billing"},
		resources.FieldSPIFFEIDs:        {"/ci/payments/*", "/ci/billing/*"},
		resources.FieldHostNames:        {"*.ci.acme.internal"},
		resources.FieldJWTAudiences:     {"sts.amazonaws.com"},
	}
	if !reflect.DeepEqual(g.Values, want) {
		t.Errorf("values %q\nwant %q", g.Values, want)
	}
	only, err := policy.ResolveGrant(set, bot, []string{"more"}, time.Hour, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got := only.Granted(resources.FieldDBUsers); !reflect.DeepEqual(got, []string{"ci_migrate", "reporter"}) {
		t.Errorf("role more alone grants db_users %q", got)
	}
	if got := only.Granted(resources.FieldDBNames); got != nil {
		t.Errorf("role more alone grants db_names %q", got)
	}

	// A trait changed after load (a stored bot of an older version) is
	// checked again when the grant is resolved.
	bot.Spec.Traits["db_user"] = []string{"ci; rm -rf"}
	_, err = policy.ResolveGrant(set, bot, []string{"db"}, time.Hour, 24*time.Hour)
	var ierr *identity.Error
	if !errors.As(err, &ierr) || ierr.Code != identity.CodeRoleDenied || !strings.Contains(ierr.Message, `role "db" db_users entry "{{internal.db_user}}" expands to "ci; rm -rf"`) {
		t.Errorf("err = %v", err)
	}
}
