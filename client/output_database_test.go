package client

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/identity"
)

func TestParseDatabaseOutput(t *testing.T) {
	cfg, err := ParseConfig("mbot.yaml", []byte("outputs:\n  - destination: ./id\n  - type: database\n    destination: ./db\n    database: prod-pg\n    username: ci_migrate\n    db_name: app\n"))
	if err != nil {
		t.Fatal(err)
	}
	db := cfg.Outputs[1]
	if db.Type != OutputTypeDatabase || db.Database != "prod-pg" || db.Username != "ci_migrate" || db.DBName != "app" || db.Name != "db" {
		t.Errorf("output %+v", db)
	}
	wantConfigRefusals(t, []struct{ name, yaml, want string }{
		{"no database", "outputs:\n  - type: database\n    destination: ./db\n    username: ci\n", "mbot.yaml:2: outputs[0].database: is required"},
		{"no username", "outputs:\n  - type: database\n    destination: ./db\n    database: pg\n", "outputs[0].username: is required"},
		{"bad username", "outputs:\n  - type: database\n    destination: ./db\n    database: pg\n    username: \"-U x\"\n", "mbot.yaml:5: outputs[0].username:"},
		{"bad db_name", "outputs:\n  - type: database\n    destination: ./db\n    database: pg\n    username: ci\n    db_name: \"a b\"\n", "mbot.yaml:6: outputs[0].db_name: db_name \"a b\" is not a database name"},
		{"database field on identity", "outputs:\n  - destination: ./id\n    username: ci\n", "mbot.yaml:3: outputs[0].username: belongs to outputs of type database, not identity"},
	})
}

// wantConfigRefusals checks that ParseConfig refuses each case's mbot.yaml
// with an error that contains want.
func wantConfigRefusals(t *testing.T, cases []struct{ name, yaml, want string }) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("mbot.yaml", []byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestOutputKeys: each output gets only the keys its type certifies, and
// its request carries only those.
func TestOutputKeys(t *testing.T) {
	outs := []Output{{Type: OutputTypeIdentity, Name: "id"}, {Type: OutputTypeDatabase, Name: "db", DatabaseOutput: DatabaseOutput{Database: "pg", Username: "ci", DBName: "app"}}}
	keys, reqs, err := newOutputKeys(outs)
	if err != nil {
		t.Fatal(err)
	}
	if keys[0].SSH == nil || keys[0].TLS == nil || reqs[0].SSHPublicKey == "" || reqs[0].TLSPublicKey == "" || reqs[0].Type != "" || reqs[0].Database != nil {
		t.Errorf("identity output: keys %+v request %+v", keys[0], reqs[0])
	}
	if keys[1].SSH != nil || keys[1].TLS == nil || reqs[1].SSHPublicKey != "" || reqs[1].TLSPublicKey == "" || reqs[1].Type != "database" ||
		*reqs[1].Database != (identity.DatabaseRequest{Database: "pg", Username: "ci", DBName: "app"}) {
		t.Errorf("database output: keys %+v request %+v", keys[1], reqs[1])
	}
}

// signedFor returns a CA PEM and a certificate on key, CN = cn, signed by it.
func signedFor(t *testing.T, key *ecdsa.PrivateKey, cn string) (caPEM, certPEM string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func renderDatabase(t *testing.T, dir string, g identity.DatabaseGrant) (map[string]identity.File, error) {
	t.Helper()
	keys, err := newKeys(databaseOutput{})
	if err != nil {
		t.Fatal(err)
	}
	caPEM, certPEM := signedFor(t, keys.TLS, g.Username)
	if g.ServerCA == "" {
		g.ServerCA = caPEM
	}
	resp := &identity.JoinResponse{ClusterName: "acme", Bot: "migrator"}
	grant := &identity.OutputResponse{Name: "db", Type: "database", Roles: []string{"db-app"}, TLSCertificate: certPEM, TLSSerial: "AB",
		NotAfter: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), Database: &g}
	files, err := databaseOutput{}.render(dir, keys, resp, grant)
	byName := map[string]identity.File{}
	for _, f := range files {
		byName[f.Name] = f
	}
	return byName, err
}

func TestRenderDatabasePostgres(t *testing.T) {
	dir := "/work/ci's db"
	files, err := renderDatabase(t, dir, identity.DatabaseGrant{Database: "prod-pg", Protocol: "postgres", Host: "db.acme.internal", Port: 5432, Username: "ci_migrate", DBName: "app"})
	if err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{"client.key": 0o600, "client.crt": 0o644, "ca.crt": 0o644, "pg_service.conf": 0o644, "env": 0o644, "database.json": 0o600} {
		if f, ok := files[name]; !ok || f.Mode != mode {
			t.Errorf("%s: written %t, mode %o, want %o", name, ok, f.Mode, mode)
		}
	}
	if _, ok := files["my.cnf"]; ok {
		t.Error("a postgres output writes my.cnf")
	}
	svc := string(files["pg_service.conf"].Data)
	for _, line := range []string{"[prod-pg]\n", "\nhost=db.acme.internal\n", "\nport=5432\n", "\nuser=ci_migrate\n", "\ndbname=app\n", "\nsslmode=verify-full\n",
		"\nsslcert=/work/ci's db/client.crt\n", "\nsslkey=/work/ci's db/client.key\n", "\nsslrootcert=/work/ci's db/ca.crt\n"} {
		if !strings.Contains(svc, line) {
			t.Errorf("pg_service.conf lacks %q:\n%s", line, svc)
		}
	}
	env := string(files["env"].Data)
	for _, line := range []string{"export PGHOST='db.acme.internal'\n", "export PGPORT='5432'\n", "export PGUSER='ci_migrate'\n", "export PGDATABASE='app'\n",
		"export PGSSLMODE='verify-full'\n", `export PGSSLCERT='/work/ci'\''s db/client.crt'` + "\n", `export PGSSLKEY='/work/ci'\''s db/client.key'` + "\n",
		`export PGSSLROOTCERT='/work/ci'\''s db/ca.crt'` + "\n"} {
		if !strings.Contains(env, line) {
			t.Errorf("env lacks %q:\n%s", line, env)
		}
	}
	var sum DatabaseSummary
	if err := json.Unmarshal(files["database.json"].Data, &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Database != "prod-pg" || sum.Username != "ci_migrate" || sum.Files["env"] != "env" || sum.Bot != "migrator" || sum.Port != 5432 {
		t.Errorf("database.json %+v", sum)
	}
}

func TestRenderDatabaseMySQL(t *testing.T) {
	files, err := renderDatabase(t, "/ci/db", identity.DatabaseGrant{Database: "prod-my", Protocol: "mysql", Host: "10.0.0.5", Port: 3306, Username: "ci_migrate", DBName: "app"})
	if err != nil {
		t.Fatal(err)
	}
	cnf := string(files["my.cnf"].Data)
	want := "[client]\nprotocol=TCP\nhost=\"10.0.0.5\"\nport=\"3306\"\nuser=\"ci_migrate\"\nssl-ca=\"/ci/db/ca.crt\"\nssl-cert=\"/ci/db/client.crt\"\nssl-key=\"/ci/db/client.key\"\n" +
		"loose-ssl-mode=VERIFY_IDENTITY\n[client-mariadb]\nssl-verify-server-cert\n[mysql]\ndatabase=\"app\"\n"
	if !strings.HasSuffix(cnf, want) || files["my.cnf"].Mode != 0o600 {
		t.Errorf("my.cnf:\n%s\nwant it to end with:\n%s", cnf, want)
	}
	for _, name := range []string{"pg_service.conf", "env"} {
		if _, ok := files[name]; ok {
			t.Errorf("a mysql output writes %s", name)
		}
	}
}

// TestRenderDatabaseRefusesBadAnswers: a value of the authority's answer
// that would add a line or an option to a connection file is refused, and
// nothing is rendered.
func TestRenderDatabaseRefusesBadAnswers(t *testing.T) {
	good := identity.DatabaseGrant{Database: "prod-pg", Protocol: "postgres", Host: "db.acme.internal", Port: 5432, Username: "ci_migrate"}
	for _, tc := range []struct {
		name string
		edit func(g *identity.DatabaseGrant)
		dir  string
	}{
		{"host with a newline", func(g *identity.DatabaseGrant) { g.Host = "db\nsslmode=disable" }, "/ci/db"},
		{"user with a space", func(g *identity.DatabaseGrant) { g.Username = "ci migrate" }, "/ci/db"},
		{"db name with a quote", func(g *identity.DatabaseGrant) { g.DBName = "app'" }, "/ci/db"},
		{"port zero", func(g *identity.DatabaseGrant) { g.Port = 0 }, "/ci/db"},
		{"unknown protocol", func(g *identity.DatabaseGrant) { g.Protocol = "oracle" }, "/ci/db"},
		{"database not a name", func(g *identity.DatabaseGrant) { g.Database = "prod]\n[x" }, "/ci/db"},
		{"server CA not PEM", func(g *identity.DatabaseGrant) { g.ServerCA = "hello" }, "/ci/db"},
		{"directory with a newline", func(*identity.DatabaseGrant) {}, "/ci/db\nsslmode=disable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := good
			tc.edit(&g)
			if files, err := renderDatabase(t, tc.dir, g); err == nil {
				t.Errorf("rendered %d files", len(files))
			}
		})
	}
	// A certificate for another key is refused.
	keys, _ := newKeys(databaseOutput{})
	other, _ := newKeys(databaseOutput{})
	_, certPEM := signedFor(t, other.TLS, "ci_migrate")
	caPEM, _ := signedFor(t, keys.TLS, "x")
	g := good
	g.ServerCA = caPEM
	_, err := databaseOutput{}.render(filepath.Join(t.TempDir(), "db"), keys, &identity.JoinResponse{}, &identity.OutputResponse{TLSCertificate: certPEM, Database: &g})
	if err == nil || !strings.Contains(err.Error(), "not for the key") {
		t.Errorf("err = %v", err)
	}
}

// TestDaemonNeedsIdentityFirst: mbot start renews with its first output's
// certificate, so a configuration whose first output is a database output
// is refused before anything is fetched.
func TestDaemonNeedsIdentityFirst(t *testing.T) {
	path := writeConfig(t, "authority: https://a:1\nca_pin: sha256:0000000000000000000000000000000000000000000000000000000000000000\ntoken: t\nttl: 1h\n"+
		"outputs:\n  - type: database\n    destination: ./db\n    database: pg\n    username: ci\n  - destination: ./id\n")
	_, err := resolveSettings(DaemonOptions{IssueOptions: IssueOptions{Config: path}})
	if err == nil || !strings.Contains(err.Error(), "list an identity output first") {
		t.Errorf("err = %v", err)
	}
}
