package authority_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/simci"
)

// databaseYAML: bot migrator gets db_users through a trait and db_names
// from role db-app; role db-admin (not the bot's) grants postgres.
const databaseYAML = `kind: role
version: v1
metadata: {name: db-app}
spec:
  db_users: ["{{internal.db_user}}", reporter]
  db_names: [app]
---
kind: role
version: v1
metadata: {name: ssh}
spec:
  logins: [deploy]
---
kind: role
version: v1
metadata: {name: db-admin}
spec:
  db_users: [postgres]
---
kind: bot
version: v1
metadata: {name: migrator}
spec:
  roles: [db-app, ssh]
  traits: {db_user: [ci_migrate]}
---
kind: bot
version: v1
metadata: {name: postgres}
spec:
  roles: [ssh]
---
kind: database
version: v1
metadata: {name: prod-pg}
spec:
  protocol: postgres
  uri: db.acme.internal:5432
  ca_issued_by_authority: true
---
kind: join_token
version: v1
metadata: {name: github-migrate}
spec:
  bot: migrator
  method: github
  github:
    issuer: ISSUER
    allow:
      - repository: acme/app
---
kind: join_token
version: v1
metadata: {name: github-postgres}
spec:
  bot: postgres
  method: github
  github:
    issuer: ISSUER
    allow:
      - repository: acme/app
`

func openDatabaseAuthority(t *testing.T) (*authority.Authority, *simci.Issuer) {
	t.Helper()
	return openAuthorityFrom(t, databaseYAML)
}

func databaseOutput(t *testing.T, name, db, user, dbName string, roles ...string) output {
	t.Helper()
	return tlsOutput(t, identity.OutputRequest{Name: name, Type: identity.OutputDatabase, Roles: roles,
		Database: &identity.DatabaseRequest{Database: db, Username: user, DBName: dbName}})
}

// checkClientCert checks that cert is a client certificate for the 2h
// asked, no CA, on key, that of cas's X.509 CAs only wantCA verifies.
func checkClientCert(t *testing.T, cert *x509.Certificate, cas *authority.CAs, key crypto.PublicKey, wantCA string) {
	t.Helper()
	if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || cert.IsCA {
		t.Errorf("key usages %v, CA %t", cert.ExtKeyUsage, cert.IsCA)
	}
	if d := time.Until(cert.NotAfter); d > 2*time.Hour || d < 2*time.Hour-time.Minute {
		t.Errorf("valid for %s, want the 2h asked", d)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(key) {
		t.Error("certificate is not on the output's key")
	}
	for name, ca := range map[string]*authority.X509CA{"tls": cas.TLS, "database-client": cas.DatabaseClient, "kubernetes-client": cas.KubernetesClient, "spiffe": cas.SPIFFE} {
		roots := x509.NewCertPool()
		roots.AddCert(ca.Cert)
		_, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if (name == wantCA) != (err == nil) {
			t.Errorf("verify under the %s CA: %v", name, err)
		}
	}
}

// TestDatabaseOutput: a database output gets a client certificate with CN
// = the user alone, under the database-client CA only, for client
// authentication only, and the server's address and CA; the audit record
// says what was granted.
func TestDatabaseOutput(t *testing.T) {
	a, ci := openDatabaseAuthority(t)
	cas := a.CAs()
	db := databaseOutput(t, "db", "prod-pg", "ci_migrate", "app")
	resp, err := a.Join(t.Context(), joinRequest("github-migrate", "github", githubToken(t, ci, nil), 2*time.Hour, newOutput(t, "id"), db), "test")
	if err != nil {
		t.Fatal(err)
	}
	got := resp.Outputs[1]
	g := got.Database
	if got.Type != identity.OutputDatabase || g == nil || g.Protocol != "postgres" || g.Host != "db.acme.internal" || g.Port != 5432 ||
		g.Username != "ci_migrate" || g.DBName != "app" || g.Database != "prod-pg" || g.ServerCA != string(cas.DatabaseServer.CertPEM) {
		t.Fatalf("database output %+v %+v", got, g)
	}
	if got.SSHCertificate != "" || len(got.Logins) != 0 {
		t.Errorf("a database output carries SSH material: %+v", got)
	}
	cert := parseCertPEM(t, got.TLSCertificate)
	if cert.Subject.String() != "CN=ci_migrate" || len(cert.URIs)+len(cert.DNSNames)+len(cert.IPAddresses)+len(cert.EmailAddresses) != 0 {
		t.Errorf("subject %q, SANs %v %v: want CN=ci_migrate alone", cert.Subject, cert.URIs, cert.DNSNames)
	}
	checkClientCert(t, cert, cas, db.keys.TLS.Public(), "database-client")
	ev := lastAudit(t, a)
	if !ev.Allowed || len(ev.Outputs) != 2 || ev.Outputs[1] != "db type=database database=prod-pg user=ci_migrate db_name=app" {
		t.Errorf("audit outputs %q", ev.Outputs)
	}
	if !strings.Contains(strings.Join(ev.Serials, " "), "tls:"+got.TLSSerial) {
		t.Errorf("audit serials %q lack the database certificate's", ev.Serials)
	}
}

// TestDatabaseCertOverTLS: a server that trusts the database-client CA
// (as PostgreSQL's ssl_ca_file does) admits a database output's
// certificate and refuses an identity output's, even for a bot named
// postgres; a client that trusts the database-server CA accepts a server
// certificate from mbot sign --format and no other.
func TestDatabaseCertOverTLS(t *testing.T) {
	a, ci := openDatabaseAuthority(t)
	cas := a.CAs()
	dir := t.TempDir()
	files, err := authority.SignDatabaseServer(t.Context(), a.Store(), cas, "postgres", []string{"db.acme.internal"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string][]byte{}
	for _, f := range files.Files {
		byName[f.Name] = f.Data
		_ = os.WriteFile(filepath.Join(dir, f.Name), f.Data, f.Mode)
	}
	serverCert, err := tls.X509KeyPair(byName["server.crt"], byName["server.key"])
	if err != nil {
		t.Fatal(err)
	}
	clientCAs := x509.NewCertPool()
	if !clientCAs.AppendCertsFromPEM(byName["client-ca.crt"]) {
		t.Fatal("no client CA written")
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientCAs: clientCAs, ClientAuth: tls.RequireAndVerifyClientCert})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if tc := c.(*tls.Conn); tc.Handshake() == nil {
					_, _ = c.Write([]byte(tc.ConnectionState().PeerCertificates[0].Subject.CommonName))
				}
			}()
		}
	}()

	dbOut := databaseOutput(t, "db", "prod-pg", "ci_migrate", "")
	resp, err := a.Join(t.Context(), joinRequest("github-migrate", "github", githubToken(t, ci, nil), time.Hour, dbOut), "test")
	if err != nil {
		t.Fatal(err)
	}
	pgOut := newOutput(t, "id")
	pgResp, err := a.Join(t.Context(), joinRequest("github-postgres", "github", githubToken(t, ci, nil), time.Hour, pgOut), "test")
	if err != nil {
		t.Fatal(err)
	}
	dial := func(certPEM string, keys *identity.Keys, rootsPEM string) (string, error) {
		keyPEM, _ := keys.TLSPrivateKeyPEM()
		cert, err := tls.X509KeyPair([]byte(certPEM), keyPEM)
		if err != nil {
			return "", err
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM([]byte(rootsPEM))
		conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, ServerName: "db.acme.internal"})
		if err != nil {
			return "", err
		}
		defer conn.Close()
		buf := make([]byte, 64)
		n, err := conn.Read(buf)
		return string(buf[:n]), err
	}
	if cn, err := dial(resp.Outputs[0].TLSCertificate, dbOut.keys, resp.Outputs[0].Database.ServerCA); err != nil || cn != "ci_migrate" {
		t.Errorf("the database output's certificate: %q, %v", cn, err)
	}
	if cn, err := dial(pgResp.Outputs[0].TLSCertificate, pgOut.keys, resp.Outputs[0].Database.ServerCA); err == nil {
		t.Errorf("an identity output's certificate (bot postgres) was admitted as %q", cn)
	}
	// The client refuses a server whose certificate the tls CA signed.
	if _, err := dial(resp.Outputs[0].TLSCertificate, dbOut.keys, string(cas.TLSCertPEM)); err == nil {
		t.Error("the client accepted the database server under the authority's TLS CA")
	}
}

// TestDatabaseRefusals: an unknown database, a user or database name no
// role grants: refused with a stable code, a message naming what to
// grant, an audit record; the proof stays usable.
func TestDatabaseRefusals(t *testing.T) {
	a, ci := openDatabaseAuthority(t)
	for _, tc := range []struct {
		name string
		out  func(t *testing.T) output
		code identity.ErrorCode
		want string
	}{
		{"unknown database", func(t *testing.T) output { return databaseOutput(t, "db", "prod-mysql", "ci_migrate", "") },
			identity.CodeBadRequest, `there is no database named "prod-mysql" on this authority (existing: prod-pg)`},
		{"user no role grants", func(t *testing.T) output { return databaseOutput(t, "db", "prod-pg", "root", "") },
			identity.CodeRoleDenied, `no role of bot "migrator" grants database user "root"; add it to the db_users of one of its roles (db-app, ssh)`},
		{"user another role grants", func(t *testing.T) output { return databaseOutput(t, "db", "prod-pg", "postgres", "") },
			identity.CodeRoleDenied, `role db-admin would grant it: add it to the bot's spec.roles`},
		{"user of a role the output leaves out", func(t *testing.T) output { return databaseOutput(t, "db", "prod-pg", "reporter", "", "ssh") },
			identity.CodeRoleDenied, `database user "reporter" is granted by role db-app of bot "migrator", which this output does not use`},
		{"db_name no role grants", func(t *testing.T) output { return databaseOutput(t, "db", "prod-pg", "ci_migrate", "billing") },
			identity.CodeRoleDenied, `grants database name "billing"; add it to the db_names`},
		{"no database request", func(t *testing.T) output {
			o := databaseOutput(t, "db", "prod-pg", "ci_migrate", "")
			o.req.Database = nil
			return o
		}, identity.CodeBadRequest, "names no database"},
		{"bad user", func(t *testing.T) output { return databaseOutput(t, "db", "prod-pg", "-c x", "") },
			identity.CodeBadRequest, "username"},
		{"bad db_name", func(t *testing.T) output { return databaseOutput(t, "db", "prod-pg", "ci_migrate", "app;drop") },
			identity.CodeBadRequest, "is not a database name"},
		{"an SSH key", func(t *testing.T) output {
			o := databaseOutput(t, "db", "prod-pg", "ci_migrate", "")
			o.req.SSHPublicKey = o.keys.SSHPublicKey()
			return o
		}, identity.CodeBadRequest, "a database output certifies no SSH key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proof := githubToken(t, ci, nil)
			_, err := a.Join(t.Context(), joinRequest("github-migrate", "github", proof, time.Hour, tc.out(t)), "test")
			var ierr *identity.Error
			if !errors.As(err, &ierr) || ierr.Code != tc.code || !strings.Contains(ierr.Message, tc.want) {
				t.Fatalf("err = %v, want %s saying %q", err, tc.code, tc.want)
			}
			ev := lastAudit(t, a)
			if ev.Allowed || ev.Code != string(tc.code) || len(ev.Outputs) != 0 || len(ev.Serials) != 0 {
				t.Errorf("audit record %+v", ev)
			}
			if _, err := a.Join(t.Context(), joinRequest("github-migrate", "github", proof, time.Hour, databaseOutput(t, "db", "prod-pg", "ci_migrate", "app")), "test"); err != nil {
				t.Errorf("the refusal consumed the proof: %v", err)
			}
		})
	}
}
