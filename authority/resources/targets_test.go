package resources_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/resources"
)

// testCA returns a PEM CA certificate, or a leaf when isCA is false.
func testCA(t *testing.T, isCA bool) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "db CA"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		BasicConstraintsValid: true, IsCA: isCA, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n    ")
}

func TestParseTargets(t *testing.T) {
	ca := testCA(t, true)
	doc := `kind: database
version: v1
metadata: {name: prod-pg}
spec:
  protocol: postgres
  uri: db.acme.internal:5432
  ca: |
` + indent(ca) + `
---
kind: database
version: v1
metadata: {name: prod-my}
spec:
  protocol: mysql
  uri: 10.0.0.5:3306
  ca_issued_by_authority: true
---
kind: kubernetes_cluster
version: v1
metadata: {name: prod-k8s}
spec:
  api_server: https://k8s.acme.internal:6443
  ca: |
` + indent(ca) + `
`
	res, err := resources.Parse("targets.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	set := resources.NewSet(res)
	pg := set.Databases["prod-pg"]
	if pg == nil || pg.Spec.Protocol != "postgres" || pg.Spec.CA != strings.TrimSpace(ca) || pg.Spec.CAIssuedByAuthority {
		t.Fatalf("prod-pg %+v", pg)
	}
	if h, p := pg.Spec.HostPort(); h != "db.acme.internal" || p != 5432 {
		t.Errorf("host port %q %d", h, p)
	}
	if my := set.Databases["prod-my"]; my == nil || !my.Spec.CAIssuedByAuthority || my.Spec.CA != "" {
		t.Errorf("prod-my %+v", my)
	}
	if k := set.KubernetesClusters["prod-k8s"]; k == nil || k.Spec.APIServer != "https://k8s.acme.internal:6443" {
		t.Errorf("prod-k8s %+v", k)
	}
	if err := set.CheckRemovable(resources.KindDatabase, "prod-pg"); err != nil {
		t.Errorf("nothing refers to a database, yet: %v", err)
	}
	if err := set.CheckRemovable(resources.KindDatabase, "nope"); err == nil || !strings.Contains(err.Error(), "prod-my, prod-pg") {
		t.Errorf("removing an unknown database: %v", err)
	}

	// Documents round-trip through Parse (mbot get -o yaml | mbot apply).
	out, err := resources.MarshalYAMLDocuments(set.Documents(""))
	if err != nil {
		t.Fatal(err)
	}
	again, err := resources.Parse("again.yaml", out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if set2 := resources.NewSet(again); !reflect.DeepEqual(set2.Databases["prod-pg"].Spec, pg.Spec) ||
		!reflect.DeepEqual(set2.KubernetesClusters["prod-k8s"].Spec, set.KubernetesClusters["prod-k8s"].Spec) {
		t.Errorf("round trip changed the specs:\n%s", out)
	}
}

func TestTargetsRefused(t *testing.T) {
	ca, leaf := testCA(t, true), testCA(t, false)
	db := func(spec string) string {
		return "kind: database\nversion: v1\nmetadata: {name: db}\nspec:\n" + spec
	}
	k8s := func(spec string) string {
		return "kind: kubernetes_cluster\nversion: v1\nmetadata: {name: k}\nspec:\n" + spec
	}
	caField := "  ca: |\n" + indent(ca) + "\n"
	for _, tc := range []struct{ name, doc, want string }{
		{"no protocol", db("  uri: db:5432\n  ca_issued_by_authority: true\n"), "t.yaml:5: spec.protocol is required"},
		{"bad protocol", db("  protocol: oracle\n  uri: db:5432\n  ca_issued_by_authority: true\n"), "t.yaml:5: spec.protocol \"oracle\" is not postgres or mysql"},
		{"no port", db("  protocol: postgres\n  uri: db.acme.internal\n  ca_issued_by_authority: true\n"), "t.yaml:6: spec.uri \"db.acme.internal\" is not host:port"},
		{"port out of range", db("  protocol: postgres\n  uri: db:70000\n  ca_issued_by_authority: true\n"), "port must be a number from 1 to 65535"},
		{"bad host", db("  protocol: postgres\n  uri: \"db\\nx:5432\"\n  ca_issued_by_authority: true\n"), "the host must be a DNS name"},
		{"no CA", db("  protocol: postgres\n  uri: db:5432\n"), "spec.ca is required"},
		{"both CAs", db("  protocol: postgres\n  uri: db:5432\n  ca_issued_by_authority: true\n" + caField), "are both set"},
		{"CA not PEM", db("  protocol: postgres\n  uri: db:5432\n  ca: hello\n"), "spec.ca must be PEM CERTIFICATE blocks"},
		{"CA is a leaf", db("  protocol: postgres\n  uri: db:5432\n  ca: |\n" + indent(leaf) + "\n"), "is not a CA certificate"},
		{"a key in the CA", db("  protocol: postgres\n  uri: db:5432\n  ca: |\n    -----BEGIN PRIVATE KEY-----\n    AAAA\n    -----END PRIVATE KEY-----\n"), "holds a \"PRIVATE KEY\" block"},
		{"unknown field", db("  protocol: postgres\n  uri: db:5432\n  ca_issued_by_authority: true\n  password: x\n"), "t.yaml:8: database spec has no field password (fields: protocol, uri, ca, ca_issued_by_authority)"},
		{"http API server", k8s("  api_server: http://k8s:6443\n" + caField), "is not an https:// URL"},
		{"API server with credentials", k8s("  api_server: https://u:p@k8s:6443\n" + caField), "is not an https:// URL"},
		{"API server without CA", k8s("  api_server: https://k8s:6443\n"), "spec.ca is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := resources.Parse("t.yaml", []byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestGrantFields: every role field that grants output values is checked
// at load with its own rule, templates included, and each bot's traits
// are checked once expanded.
func TestGrantFields(t *testing.T) {
	role := func(field, value string) string {
		return "kind: role\nversion: v1\nmetadata: {name: r}\nspec:\n  " + field + ": [" + value + "]\n"
	}
	for _, tc := range []struct {
		field, value string
		ok           bool
	}{
		{"db_users", "ci_migrate", true},
		{"db_users", `"{{internal.db_user}}"`, true},
		{"db_users", `"-U"`, false},
		{"db_users", `"ci migrate"`, false},
		{"db_names", "app", true},
		{"db_names", `"app;drop"`, false},
		{"db_names", `"{{internal.team}}_app"`, true},
		{"kubernetes_users", `"system:serviceaccount:ci:deployer"`, true},
		{"kubernetes_groups", "deployers", true},
		{"kubernetes_groups", `"a,b"`, false},
		{"kubernetes_groups", `"a\tb"`, false},
		{"spiffe_ids", `"/ci/{{internal.team}}/*"`, true},
		{"spiffe_ids", `"/ci/deploy"`, true},
		{"spiffe_ids", `"ci/deploy"`, false},
		{"spiffe_ids", `"/ci/*/deploy"`, false},
		{"spiffe_ids", `"/ci/de*"`, false},
		{"spiffe_ids", `"/ci/../x"`, false},
		{"spiffe_ids", `"/*"`, false},
		{"dns_sans", `"*.svc.acme.internal"`, true},
		{"dns_sans", `"api.acme.internal"`, true},
		{"dns_sans", `"*"`, false},
		{"dns_sans", `"a.*.acme"`, false},
		{"jwt_audiences", `"https://vault.acme.internal"`, true},
		{"jwt_audiences", `"sts.amazonaws.com"`, true},
		{"jwt_audiences", `"a b"`, false},
		{"host_names", `"*.ci.acme.internal"`, true},
		{"host_names", `"{{internal.vm}}.ci.acme.internal"`, true},
		{"host_names", `"ci.acme.internal/x"`, false},
	} {
		t.Run(tc.field+" "+tc.value, func(t *testing.T) {
			res, err := resources.Parse("roles.yaml", []byte(role(tc.field, tc.value)))
			if tc.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.ok {
				if err == nil || !strings.Contains(err.Error(), "roles.yaml:5: spec."+tc.field+"[0]") {
					t.Fatalf("err = %v, want a refusal at roles.yaml:5 naming spec.%s[0]", err, tc.field)
				}
				return
			}
			for _, f := range resources.GrantFields {
				got := f.Get(&res[0].Role.Spec)
				if (f.Name == tc.field) != (len(got) == 1) {
					t.Errorf("field %s holds %q", f.Name, got)
				}
			}
		})
	}

	// A trait that expands a template to a bad value is refused when the
	// references are checked, naming bot, trait and role field.
	res, err := resources.Parse("bots.yaml", []byte(`kind: role
version: v1
metadata: {name: db}
spec:
  db_users: ["{{internal.db_user}}"]
---
kind: bot
version: v1
metadata: {name: ci}
spec:
  roles: [db]
  traits: {db_user: ["ok", "-c shell"]}
`))
	if err != nil {
		t.Fatal(err)
	}
	err = resources.NewSet(res).CheckReferences()
	if err == nil || !strings.Contains(err.Error(), `bot "ci": spec.traits.db_user[1] expands db_users`) {
		t.Errorf("err = %v", err)
	}
}
