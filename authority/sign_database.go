package authority

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"
	"unicode"

	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/identity"
)

// Files of a database server's credentials (mbot sign --format postgres|mysql).
const (
	FileDBServerKey  = "server.key"
	FileDBServerCert = "server.crt"
	// FileDBClientCA is the CA the server checks clients by: the database-client CA.
	FileDBClientCA = "client-ca.crt"
)

func init() { identity.RegisterFiles(FileDBServerKey, FileDBServerCert, FileDBClientCA) }

// DatabaseServerFormats are the formats of mbot sign --format.
var DatabaseServerFormats = []string{resources.ProtocolPostgres, resources.ProtocolMySQL}

// DatabaseServerCredentials is what mbot sign --format writes.
type DatabaseServerCredentials struct {
	Files    []identity.File
	NotAfter time.Time
}

// SignDatabaseServer issues a database server's key and certificate for
// names (signed by the database-server CA, which database outputs of
// resources with ca_issued_by_authority check servers by) and hands out
// the database-client CA, which the server must check clients by; the
// signing is recorded in the audit log.
func SignDatabaseServer(ctx context.Context, st store.Store, cas *CAs, format string, names []string, ttl time.Duration) (*DatabaseServerCredentials, error) {
	if format != resources.ProtocolPostgres && format != resources.ProtocolMySQL {
		return nil, fmt.Errorf("--format %s is not one of %s", identity.Quote(identity.Truncate(format, 40)), strings.Join(DatabaseServerFormats, ", "))
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("--host needs at least one host name")
	}
	for _, n := range names {
		if err := CheckHostName("--host", n); err != nil {
			return nil, err
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: names[0]},
		NotAfter:    time.Now().Add(ttl).Truncate(time.Second),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	cert, err := cas.DatabaseServer.Sign(tmpl, key.Public())
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	ev := &store.AuditEvent{Event: "sign.database", Allowed: true, Message: format + " server certificate for " + strings.Join(names, ","),
		Serials: []string{"tls:" + serialString(cert.Serial)}, NotAfter: cert.NotAfter,
		Certificates: []store.IssuedCertificate{{CA: "database-server-ca", Serial: serialString(cert.Serial), NotAfter: cert.NotAfter}}}
	if err := st.Audit(ctx, ev); err != nil {
		return nil, fmt.Errorf("recording the signing in the audit log: %w", err)
	}
	return &DatabaseServerCredentials{NotAfter: cert.NotAfter, Files: []identity.File{
		{Name: FileDBServerKey, Data: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), Mode: 0o600},
		{Name: FileDBServerCert, Data: []byte(cert.PEM()), Mode: 0o644},
		{Name: FileDBClientCA, Data: cas.DatabaseClient.CertPEM, Mode: 0o644},
	}}, nil
}

// DatabaseServerConfig is the server configuration that uses the files
// SignDatabaseServer wrote to dir (an absolute path): the lines to add and
// what to do, for the format.
func DatabaseServerConfig(format, dir string) (string, error) {
	if strings.ContainsFunc(dir, unicode.IsControl) {
		return "", fmt.Errorf("%s holds a control character; choose another --out", identity.Quote(dir))
	}
	path := func(name string) string { return filepath.Join(dir, name) }
	switch format {
	case resources.ProtocolPostgres:
		q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
		return fmt.Sprintf(`# postgresql.conf
ssl = on
ssl_cert_file = %s
ssl_key_file = %s
ssl_ca_file = %s

# pg_hba.conf (first matching line wins: put these above any host or password
# line): TLS only, a client certificate of this authority's database-client
# CA whose CN is the database user
hostssl all all 0.0.0.0/0 cert
hostssl all all ::/0 cert

# PostgreSQL refuses a key file others can read: the server's user must own
# %s with mode 0600, and the directory (0700) with it: sign with
# --owner postgres, or
#   chown -R postgres: %s
# Then reload (SELECT pg_reload_conf(); or pg_ctl reload). Database outputs
# check this server with the database-server CA: set ca_issued_by_authority:
# true on its kind: database resource.
`, q(path(FileDBServerCert)), q(path(FileDBServerKey)), q(path(FileDBClientCA)),
			path(FileDBServerKey), shellQuote(dir)), nil
	case resources.ProtocolMySQL:
		q := func(s string) string { return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"` }
		return fmt.Sprintf(`# my.cnf (MySQL, MariaDB)
[mysqld]
ssl-ca=%s
ssl-cert=%s
ssl-key=%s
require_secure_transport=ON

# Each database user that bots connect as must present a certificate of the
# database-client CA with its name as the subject, for example:
#   CREATE USER 'ci_migrate'@'%%' REQUIRE SUBJECT '/CN=ci_migrate';
# The server's user must be able to read %s (mode 0600) and its directory
# (0700): sign with --owner mysql, or chown -R mysql: the directory.
# Database outputs check this server with the database-server CA: set
# ca_issued_by_authority: true on its kind: database resource.
`, q(path(FileDBClientCA)), q(path(FileDBServerCert)), q(path(FileDBServerKey)), path(FileDBServerKey)), nil
	}
	return "", fmt.Errorf("--format %s is not one of %s", identity.Quote(identity.Truncate(format, 40)), strings.Join(DatabaseServerFormats, ", "))
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
