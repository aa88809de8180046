//go:build linux

package testservers

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// TestMariaDB proves the harness serves mutual TLS as the database output
// needs it: the stock client with an option file (server CA, client
// certificate, server name verified) logs in as a user that REQUIRE SUBJECT
// names, and the server itself refuses a certificate with another subject,
// one from another CA, and a connection without a certificate.
func TestMariaDB(t *testing.T) {
	t.Parallel()
	serverCA := NewCA(t, "test mariadb server CA")
	clientCA := NewCA(t, "test database client CA")
	otherCA := NewCA(t, "test other CA")
	cert, key := serverCA.Issue(t, localhostServer("127.0.0.1"))
	db := StartMariaDB(t, MariaDBConfig{ServerCert: cert, ServerKey: key, ClientCA: clientCA.CertPEM})
	db.Exec(t, "CREATE USER 'ci_migrate'@'%' REQUIRE SUBJECT '/CN=ci_migrate'")
	if got := db.Exec(t, "SELECT user FROM mysql.user WHERE user = 'ci_migrate'"); got != "ci_migrate" {
		t.Fatalf("root Exec: got %q, want ci_migrate", got)
	}

	dir := t.TempDir()
	root := writeTemp(t, dir, "server_ca.crt", serverCA.CertPEM, 0o644)
	// myCnf writes an option file as the database output would: MySQL's
	// ssl-mode is unknown to MariaDB's client and MariaDB's
	// ssl-verify-server-cert to MySQL 8's, so both are loose- (ignored
	// where unknown).
	otherRoot := writeTemp(t, dir, "other_ca.crt", otherCA.CertPEM, 0o644)
	myCnf := func(name string, ca *CA, cn, host, trust string) string {
		body := fmt.Sprintf("[client]\nhost=%s\nport=%d\nprotocol=tcp\nuser=ci_migrate\nssl-ca=%s\nloose-ssl-mode=VERIFY_IDENTITY\nloose-ssl-verify-server-cert\n",
			host, db.Port, trust)
		if ca != nil {
			c, k := ca.Issue(t, Leaf{CommonName: cn})
			body += fmt.Sprintf("ssl-cert=%s\nssl-key=%s\n",
				writeTemp(t, dir, name+".crt", c, 0o644), writeTemp(t, dir, name+".key", k, 0o600))
		}
		return writeTemp(t, dir, name+".cnf", []byte(body), 0o600)
	}

	tests := []struct {
		name    string
		cnf     string
		wantErr string // matches the client's message on refusal
	}{
		{name: "granted subject", cnf: myCnf("good", clientCA, "ci_migrate", "127.0.0.1", root)},
		{name: "granted subject by host name", cnf: myCnf("good_localhost", clientCA, "ci_migrate", "localhost", root)},
		{name: "certificate with another subject", cnf: myCnf("intruder", clientCA, "intruder", "127.0.0.1", root),
			wantErr: "Access denied for user 'ci_migrate'"},
		{name: "certificate from another CA", cnf: myCnf("other_ca", otherCA, "ci_migrate", "127.0.0.1", root),
			// TLS 1.3: the client sees the server's alert, or a closed connection.
			wantErr: `ERROR (2026 .*unknown ca|2013 .*Lost connection)`},
		{name: "no certificate", cnf: myCnf("none", nil, "", "127.0.0.1", root),
			wantErr: "Access denied for user 'ci_migrate'"},
		{name: "server certificate not trusted", cnf: myCnf("untrusted", clientCA, "ci_migrate", "127.0.0.1", otherRoot),
			wantErr: "ERROR 2026"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := db.Client(t, "--defaults-extra-file="+tc.cnf, "--batch", "--skip-column-names",
				"-e", "SELECT current_user()")
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("client connected, want a refusal containing %q; output %q", tc.wantErr, out)
				}
				if !regexp.MustCompile(tc.wantErr).MatchString(err.Error()) {
					t.Fatalf("client refused with %q, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(out); got != "ci_migrate@%" {
				t.Fatalf("current_user() = %q, want ci_migrate@%%", got)
			}
		})
	}
}
