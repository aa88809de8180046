//go:build linux

package testservers

import (
	"strings"
	"testing"
)

// TestPostgres proves the harness serves mutual TLS as the outputs need it:
// psql with sslmode=verify-full and a client certificate whose CN is a role
// logs in as that role (hostssl ... cert), and PostgreSQL itself refuses a
// certificate for a role that does not exist, a certificate from another
// CA, and a connection without a certificate.
func TestPostgres(t *testing.T) {
	t.Parallel()
	serverCA := NewCA(t, "test postgres server CA")
	clientCA := NewCA(t, "test database client CA")
	otherCA := NewCA(t, "test other CA")
	cert, key := serverCA.Issue(t, localhostServer("127.0.0.1"))
	pg := StartPostgres(t, PostgresConfig{ServerCert: cert, ServerKey: key, ClientCA: clientCA.CertPEM,
		HBA: []string{"hostssl all all 127.0.0.1/32 cert"}})
	pg.Exec(t, "CREATE ROLE ci_migrate LOGIN")
	if got := pg.Exec(t, "SELECT rolname FROM pg_roles WHERE rolname = 'ci_migrate'"); got != "ci_migrate" {
		t.Fatalf("superuser Exec: got %q, want ci_migrate", got)
	}

	dir := t.TempDir()
	root := writeTemp(t, dir, "server_ca.crt", serverCA.CertPEM, 0o644)
	client := func(name string, ca *CA, cn string) (certPath, keyPath string) {
		c, k := ca.Issue(t, Leaf{CommonName: cn})
		return writeTemp(t, dir, name+".crt", c, 0o644), writeTemp(t, dir, name+".key", k, 0o600)
	}
	goodCert, goodKey := client("ci_migrate", clientCA, "ci_migrate")
	otherUserCert, otherUserKey := client("intruder", clientCA, "intruder")
	otherCACert, otherCAKey := client("other_ca", otherCA, "ci_migrate")

	tests := []struct {
		name       string
		host, user string
		cert, key  string
		wantOut    string // on success
		wantErr    string // in psql's output on refusal
	}{
		{name: "granted role", host: "127.0.0.1", user: "ci_migrate", cert: goodCert, key: goodKey, wantOut: "ci_migrate"},
		{name: "granted role by host name", host: "localhost", user: "ci_migrate", cert: goodCert, key: goodKey, wantOut: "ci_migrate"},
		{name: "certificate for another role", host: "127.0.0.1", user: "ci_migrate", cert: otherUserCert, key: otherUserKey,
			wantErr: `certificate authentication failed for user "ci_migrate"`},
		{name: "certificate names a role that does not exist", host: "127.0.0.1", user: "intruder", cert: otherUserCert, key: otherUserKey,
			wantErr: `role "intruder" does not exist`},
		{name: "certificate from another CA", host: "127.0.0.1", user: "ci_migrate", cert: otherCACert, key: otherCAKey,
			wantErr: "unknown ca"},
		{name: "no certificate", host: "127.0.0.1", user: "ci_migrate",
			wantErr: "connection requires a valid client certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := []string{"PGHOST=" + tc.host, "PGPORT=" + itoa(pg.Port), "PGUSER=" + tc.user, "PGDATABASE=postgres",
				"PGSSLMODE=verify-full", "PGSSLROOTCERT=" + root, "PGCONNECT_TIMEOUT=10"}
			if tc.cert != "" {
				env = append(env, "PGSSLCERT="+tc.cert, "PGSSLKEY="+tc.key)
			}
			out, err := pg.Psql(t, env, "-X", "-A", "-t", "-c", "SELECT current_user")
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("psql connected, want a refusal containing %q; output %q", tc.wantErr, out)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("psql refused with %q, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(out); got != tc.wantOut {
				t.Fatalf("SELECT current_user = %q, want %q", got, tc.wantOut)
			}
		})
	}

	// verify-full checks the server's name: a certificate for another host
	// is refused by psql.
	t.Run("server certificate for another host", func(t *testing.T) {
		env := []string{"PGHOST=127.0.0.2", "PGHOSTADDR=127.0.0.1", "PGPORT=" + itoa(pg.Port), "PGUSER=ci_migrate",
			"PGDATABASE=postgres", "PGSSLMODE=verify-full", "PGSSLROOTCERT=" + root, "PGSSLCERT=" + goodCert, "PGSSLKEY=" + goodKey}
		out, err := pg.Psql(t, env, "-X", "-A", "-t", "-c", "SELECT current_user")
		if err == nil || !strings.Contains(err.Error(), "does not match host name") {
			t.Fatalf("psql = %q, %v; want a host name mismatch", out, err)
		}
	})
}
