package authority_test

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/simci"
)

// dbServerYAML: bot db-host gets database server names below
// db.acme.internal, one exactly and two IP addresses; role db-prod (not
// the bot's) grants *.prod.acme.internal.
const dbServerYAML = `kind: role
version: v1
metadata: {name: db-servers}
spec:
  db_server_names: ["*.db.acme.internal", db.acme.internal, 10.0.0.7, "2001:db8::7"]
---
kind: role
version: v1
metadata: {name: db-prod}
spec:
  db_server_names: ["*.prod.acme.internal"]
---
kind: role
version: v1
metadata: {name: ssh-hosts}
spec:
  host_names: ["*.ssh.acme.internal"]
---
kind: bot
version: v1
metadata: {name: db-host}
spec:
  roles: [db-servers, ssh-hosts]
---
kind: join_token
version: v1
metadata: {name: github-db}
spec:
  bot: db-host
  method: github
  github:
    issuer: ISSUER
    allow:
      - repository: acme/app
`

func openDBServerAuthority(t *testing.T) (*authority.Authority, *simci.Issuer) {
	t.Helper()
	return openAuthorityFrom(t, dbServerYAML)
}

func dbServerOutput(t *testing.T, names ...string) output {
	t.Helper()
	return tlsOutput(t, identity.OutputRequest{Name: "pg", Type: identity.OutputDatabaseServer,
		DatabaseServer: &identity.DatabaseServerRequest{ServerNames: names}})
}

// TestDatabaseServerOutput: a database_server output gets a server
// certificate from the database-server CA for exactly the names asked
// (DNS names lower-cased, IP addresses as IP SANs), on its own key, the
// database-client CA bundle and that CA's CRL. The audit record names
// them.
func TestDatabaseServerOutput(t *testing.T) {
	a, ci := openDBServerAuthority(t)
	cas := a.CAs()
	out := dbServerOutput(t, "PG1.db.acme.internal", "db.acme.internal", "10.0.0.7", "2001:0db8:0::7")
	resp, err := a.Join(t.Context(), joinRequest("github-db", "github", githubToken(t, ci, nil), time.Hour, newOutput(t, "id"), out), "test")
	if err != nil {
		t.Fatal(err)
	}
	got := resp.Outputs[1]
	if got.Type != identity.OutputDatabaseServer || got.DatabaseServer == nil || got.SSHCertificate != "" {
		t.Fatalf("database_server output %+v", got)
	}
	if want := []string{"pg1.db.acme.internal", "db.acme.internal", "10.0.0.7", "2001:db8::7"}; !slices.Equal(got.DatabaseServer.ServerNames, want) {
		t.Errorf("server names %v, want %v", got.DatabaseServer.ServerNames, want)
	}
	block, _ := pem.Decode([]byte(got.TLSCertificate))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cas.DatabaseServer.Cert)
	for _, name := range []string{"pg1.db.acme.internal", "db.acme.internal", "10.0.0.7", "2001:db8::7"} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("the certificate does not verify for %s under the database-server CA: %v", name, err)
		}
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "other.db.acme.internal"}); err == nil {
		t.Error("the certificate verifies for a name not asked for")
	}
	if got.DatabaseServer.ClientCA != string(cas.DatabaseClient.CertPEM) {
		t.Errorf("client CA is not the database-client CA bundle")
	}
	cb, _ := pem.Decode([]byte(got.DatabaseServer.CRL))
	if cb == nil || cb.Type != "X509 CRL" {
		t.Fatalf("CRL %q", got.DatabaseServer.CRL)
	}
	crl, err := x509.ParseRevocationList(cb.Bytes)
	if err != nil || crl.CheckSignatureFrom(cas.DatabaseClient.Cert) != nil {
		t.Errorf("the CRL is not the database-client CA's: %v", err)
	}
	ev := lastAudit(t, a)
	if want := "pg type=database_server server_names=pg1.db.acme.internal,db.acme.internal,10.0.0.7,2001:db8::7"; !slices.Contains(ev.Outputs, want) {
		t.Errorf("audit outputs %q, want %q", ev.Outputs, want)
	}
}

// TestDatabaseServerRefusals: a name or address no role's db_server_names
// grants (host_names do not), a wildcard, none, an SSH key: refused with a
// stable code and a message naming what to grant; no certificate.
func TestDatabaseServerRefusals(t *testing.T) {
	a, ci := openDBServerAuthority(t)
	for _, tc := range []struct {
		name string
		out  func(t *testing.T) output
		code identity.ErrorCode
		want string
	}{
		{"one label too deep", func(t *testing.T) output { return dbServerOutput(t, "a.pg1.db.acme.internal") },
			identity.CodeRoleDenied, `grants database server name "a.pg1.db.acme.internal"; add it to the db_server_names of one of its roles`},
		{"another address", func(t *testing.T) output { return dbServerOutput(t, "db.acme.internal", "10.0.0.8") },
			identity.CodeRoleDenied, `database server name "10.0.0.8"`},
		{"an SSH host name", func(t *testing.T) output { return dbServerOutput(t, "web1.ssh.acme.internal") },
			identity.CodeRoleDenied, `db_server_names`},
		{"another role grants", func(t *testing.T) output { return dbServerOutput(t, "pg.prod.acme.internal") },
			identity.CodeRoleDenied, `role db-prod would grant it`},
		{"wildcard", func(t *testing.T) output { return dbServerOutput(t, "*.db.acme.internal") },
			identity.CodeBadRequest, "is a wildcard"},
		{"no names", func(t *testing.T) output { return dbServerOutput(t) },
			identity.CodeBadRequest, "names no server; set server_names:"},
		{"an SSH key", func(t *testing.T) output {
			o := dbServerOutput(t, "db.acme.internal")
			o.req.SSHPublicKey = o.keys.SSHPublicKey()
			return o
		}, identity.CodeBadRequest, "certifies no SSH key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Join(t.Context(), joinRequest("github-db", "github", githubToken(t, ci, nil), time.Hour, newOutput(t, "id"), tc.out(t)), "test")
			var ierr *identity.Error
			if !errors.As(err, &ierr) || ierr.Code != tc.code || !strings.Contains(ierr.Message, tc.want) {
				t.Fatalf("err = %v, want %s saying %q", err, tc.code, tc.want)
			}
			if ev := lastAudit(t, a); ev.Allowed || len(ev.Serials) != 0 {
				t.Errorf("audit record %+v", ev)
			}
		})
	}
}
