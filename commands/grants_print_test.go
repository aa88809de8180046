package commands

import (
	"bytes"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/admin"
	"github.com/mbot-dev/mbot/authority/resources"
)

// TestPrintGrants: mbot get bots and mbot lint show, below each role's
// logins, what the role grants other outputs once templates expand, and
// mbot get databases lists the database resources.
func TestPrintGrants(t *testing.T) {
	set := parseTestSet(t, `kind: role
version: v1
metadata: {name: db}
spec:
  logins: [deploy]
  db_users: ["{{internal.db_user}}"]
  kubernetes_groups: [deployers]
---
kind: bot
version: v1
metadata: {name: ci}
spec:
  roles: [db]
  traits: {db_user: [ci_migrate]}
---
kind: database
version: v1
metadata: {name: prod-pg}
spec: {protocol: postgres, uri: "db.acme.internal:5432", ca_issued_by_authority: true}
`)
	var out bytes.Buffer
	if err := writeTable(&out, set, resources.KindBot, set.Documents(resources.KindBot)); err != nil {
		t.Fatal(err)
	}
	want := "NAME  ROLE  LOGINS (templates expanded)\nci    db    deploy\n            db_users: ci_migrate\n            kubernetes_groups: deployers\n"
	if out.String() != want {
		t.Errorf("mbot get bots:\n%s\nwant:\n%s", out.String(), want)
	}
	out.Reset()
	writeLintReport(&out, admin.Lint(set, nil))
	if !strings.Contains(out.String(), "bot ci\n  role db: deploy\n    db_users: ci_migrate\n    kubernetes_groups: deployers\n") {
		t.Errorf("mbot lint:\n%s", out.String())
	}
	out.Reset()
	if err := writeTable(&out, set, resources.KindDatabase, set.Documents(resources.KindDatabase)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "prod-pg  postgres  db.acme.internal:5432  issued by this authority (database-server-ca)") {
		t.Errorf("mbot get databases:\n%s", out.String())
	}
}
