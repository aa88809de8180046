package client

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/identity"
)

// OutputTypeDatabaseServer writes a PostgreSQL or MariaDB server's
// certificate and key, the CA it checks clients by, that CA's CRL and the
// server configuration naming them: the mirror of ssh_host for databases.
const OutputTypeDatabaseServer = "database_server"

// Files of a database_server output. The certificate, key and client CA
// are named as mbot sign --format names them.
const (
	FileDBServerKey  = "server.key"
	FileDBServerCert = "server.crt"
	// FileDBClientCA is the database-client CA (both CAs during a rotation).
	FileDBClientCA = "client-ca.crt"
	// FileDBClientCRL is the database-client CA's CRL (one per CA of
	// client-ca.crt): the locked bots' certificates, always written.
	FileDBClientCRL = "client-ca.crl"
	// FilePostgresSnippet holds the ssl_* lines for postgresql.conf's include.
	FilePostgresSnippet = "postgresql.conf.snippet"
	// FileMariaDBSnippet holds the ssl_* lines for my.cnf's !include.
	FileMariaDBSnippet     = "mariadb.cnf.snippet"
	FileDatabaseServerJSON = "database_server.json"
)

func init() {
	outputKinds[OutputTypeDatabaseServer] = databaseServerOutput{}
	identity.RegisterFiles(FileDBServerKey, FileDBServerCert, FileDBClientCA, FileDBClientCRL, FilePostgresSnippet, FileMariaDBSnippet)
	identity.RegisterSummaryFile(FileDatabaseServerJSON)
}

// DatabaseServerOutput is what a database_server output asks for in mbot.yaml:
//
//   - type: database_server
//     destination: /etc/postgresql/mbot
//     server_names: [db1.acme.internal, 10.0.0.7]  # each granted by a role's db_server_names
//     owner: postgres                               # the server reads the key as its own user
//     reload: [systemctl, reload, postgresql]       # mbot start runs it after each write
type DatabaseServerOutput struct {
	ServerNames []string `yaml:"server_names"`
}

// CheckAndSetDefaults checks a database_server output's names; the
// authority checks them again, and whether the bot's roles grant them.
func (d *DatabaseServerOutput) CheckAndSetDefaults() error {
	switch {
	case len(d.ServerNames) == 0:
		return badField("server_names", "is required: the DNS names and IP addresses clients dial this database server by (each granted by a role's db_server_names)")
	case len(d.ServerNames) > identity.MaxHostNames:
		return badField("server_names", "lists %d names; at most %d", len(d.ServerNames), identity.MaxHostNames)
	}
	for _, n := range d.ServerNames {
		if err := identity.CheckServerName("server name", n); err != nil {
			return badField("server_names", "%v", err)
		}
	}
	return nil
}

type databaseServerOutput struct{}

func (databaseServerOutput) keys() (sshKey, tlsKey bool) { return false, true }

func (databaseServerOutput) setFields(o *Output) []string {
	if len(o.ServerNames) > 0 {
		return []string{"server_names"}
	}
	return nil
}

func (databaseServerOutput) checkAndSetDefaults(o *Output) error {
	return o.DatabaseServerOutput.CheckAndSetDefaults()
}

func (databaseServerOutput) request(o *Output, req *identity.OutputRequest) {
	req.DatabaseServer = &identity.DatabaseServerRequest{ServerNames: o.ServerNames}
}

func (databaseServerOutput) summary(dir string, grant *identity.OutputResponse) string {
	return fmt.Sprintf("database server certificate for %s, valid until %s (use: include %s in postgresql.conf, or !include %s in my.cnf)",
		strings.Join(grant.DatabaseServer.ServerNames, ","), grant.NotAfter.UTC().Format(time.RFC3339),
		filepath.Join(dir, FilePostgresSnippet), filepath.Join(dir, FileMariaDBSnippet))
}

// DatabaseServerSummary is database_server.json: what a database_server output holds.
type DatabaseServerSummary struct {
	Cluster     string    `json:"cluster"`
	Bot         string    `json:"bot"`
	Output      string    `json:"output"`
	Type        string    `json:"type"`
	ServerNames []string  `json:"server_names"`
	Roles       []string  `json:"roles"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	Serial      string    `json:"serial"`
	// RevokedSerials are the client certificates the CRL revokes (hex, as
	// mbot audit --serial takes them).
	RevokedSerials []string `json:"revoked_serials"`
	// Files names each file written, by purpose.
	Files map[string]string `json:"files"`
}

func (databaseServerOutput) render(dir string, keys *identity.Keys, resp *identity.JoinResponse, grant *identity.OutputResponse) ([]identity.File, error) {
	g := grant.DatabaseServer
	if g == nil {
		return nil, errors.New("the authority's answer holds no database_server grant")
	}
	if err := checkCertificate(grant.TLSCertificate, keys.TLS); err != nil {
		return nil, err
	}
	if err := checkServerCertificate(grant.TLSCertificate, g.ServerNames); err != nil {
		return nil, err
	}
	if err := checkPEMCertificates("database client CA", g.ClientCA); err != nil {
		return nil, err
	}
	revoked, err := checkCRLs(g.CRL, g.ClientCA)
	if err != nil {
		return nil, err
	}
	keyPEM, err := keys.TLSPrivateKeyPEM()
	if err != nil {
		return nil, err
	}
	// Both servers' configuration files end a value at a newline; the
	// quotes below escape the rest.
	if err := checkDestinationInFile(dir, "postgresql.conf and my.cnf"); err != nil {
		return nil, err
	}
	path := func(name string) string { return filepath.Join(dir, name) }
	header := fmt.Sprintf("# mbot database_server output %s: bot %s, server names %s; valid until %s\n",
		identity.Quote(grant.Name), identity.Quote(resp.Bot), strings.Join(g.ServerNames, ","), grant.NotAfter.UTC().Format(time.RFC3339))

	var pg bytes.Buffer
	pgQuote := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	pg.WriteString(header)
	fmt.Fprintf(&pg, "# use: include %s in postgresql.conf, and in pg_hba.conf (above any host or password line):\n", pgQuote(path(FilePostgresSnippet)))
	pg.WriteString("#   hostssl all all 0.0.0.0/0 cert\n#   hostssl all all ::/0 cert\n")
	pg.WriteString("# PostgreSQL reads these files when it starts and on SIGHUP (pg_ctl reload, SELECT pg_reload_conf()):\n")
	pg.WriteString("# give this output reload: so that mbot start reloads it after each renewal, CRL included.\n")
	fmt.Fprintf(&pg, "ssl = on\nssl_cert_file = %s\nssl_key_file = %s\nssl_ca_file = %s\nssl_crl_file = %s\n",
		pgQuote(path(FileDBServerCert)), pgQuote(path(FileDBServerKey)), pgQuote(path(FileDBClientCA)), pgQuote(path(FileDBClientCRL)))

	var my bytes.Buffer
	my.WriteString(header)
	// !include takes the rest of the line as the path, unquoted.
	fmt.Fprintf(&my, "# use: !include %s in my.cnf, then for each database user bots connect as:\n", path(FileMariaDBSnippet))
	my.WriteString("#   CREATE USER 'ci_migrate'@'%' REQUIRE SUBJECT '/CN=ci_migrate';\n")
	my.WriteString("# MariaDB reads these files when it starts and on FLUSH SSL (10.4 and later):\n")
	my.WriteString("# give this output reload: so that mbot start runs it after each renewal, CRL included.\n")
	fmt.Fprintf(&my, "[mariadb]\nssl_cert = %s\nssl_key = %s\nssl_ca = %s\nssl_crl = %s\nrequire_secure_transport = ON\n",
		myCnfQuote(path(FileDBServerCert)), myCnfQuote(path(FileDBServerKey)), myCnfQuote(path(FileDBClientCA)), myCnfQuote(path(FileDBClientCRL)))

	sum := DatabaseServerSummary{Cluster: resp.ClusterName, Bot: resp.Bot, Output: grant.Name, Type: OutputTypeDatabaseServer,
		ServerNames: g.ServerNames, Roles: grant.Roles, NotBefore: grant.NotBefore, NotAfter: grant.NotAfter, Serial: grant.TLSSerial,
		RevokedSerials: revoked,
		Files: map[string]string{"key": FileDBServerKey, "certificate": FileDBServerCert, "client_ca": FileDBClientCA,
			"crl": FileDBClientCRL, "postgresql_conf": FilePostgresSnippet, "mariadb_cnf": FileMariaDBSnippet}}
	sumJSON, err := json.MarshalIndent(sum, "", "  ")
	if err != nil {
		return nil, err
	}
	return []identity.File{
		// PostgreSQL refuses a key others can read; owner: gives it to the server's user.
		{Name: FileDBServerKey, Data: keyPEM, Mode: 0o600},
		{Name: FileDBServerCert, Data: []byte(grant.TLSCertificate), Mode: 0o644},
		{Name: FileDBClientCA, Data: []byte(ensureNewline(g.ClientCA)), Mode: 0o644},
		{Name: FileDBClientCRL, Data: []byte(g.CRL), Mode: 0o644},
		{Name: FilePostgresSnippet, Data: pg.Bytes(), Mode: 0o644},
		{Name: FileMariaDBSnippet, Data: my.Bytes(), Mode: 0o644},
		{Name: FileDatabaseServerJSON, Data: append(sumJSON, '\n'), Mode: 0o644},
	}, nil
}

// checkServerCertificate checks that the authority's server certificate
// names exactly names (DNS names and IP addresses) and serves TLS.
func checkServerCertificate(certPEM string, names []string) error {
	block, _ := pem.Decode([]byte(certPEM))
	cert, err := x509.ParseCertificate(block.Bytes) // checked by checkCertificate
	if err != nil {
		return err
	}
	var got []string
	got = append(got, cert.DNSNames...)
	for _, ip := range cert.IPAddresses {
		got = append(got, ip.String())
	}
	var want []string
	for _, n := range names {
		if err := identity.CheckServerName("server name", n); err != nil {
			return fmt.Errorf("the authority's answer: %w", err)
		}
		if ip := net.ParseIP(n); ip != nil {
			n = ip.String()
		}
		want = append(want, n)
	}
	slices.Sort(got)
	slices.Sort(want)
	if len(want) == 0 || !slices.Equal(got, want) {
		return fmt.Errorf("the authority's server certificate names %s, its answer %s", identity.Quote(identity.Truncate(strings.Join(got, ","), 200)),
			identity.Quote(identity.Truncate(strings.Join(names, ","), 200)))
	}
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		return errors.New("the authority's server certificate is not for TLS servers")
	}
	return nil
}

// checkCRLs checks that crlPEM holds only CRLs, one signed by each CA of
// caPEM (a server that checks CRLs refuses every client of a CA without
// one), and returns the serials they revoke.
func checkCRLs(crlPEM, caPEM string) ([]string, error) {
	var cas []*x509.Certificate
	for rest := []byte(caPEM); ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			cas = append(cas, c)
		}
	}
	covered := make([]bool, len(cas))
	revoked := []string{}
	rest := []byte(crlPEM)
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		crl, err := x509.ParseRevocationList(b.Bytes)
		if b.Type != "X509 CRL" || err != nil {
			return nil, errors.New("the authority's CRL holds something other than CRLs")
		}
		signed := false
		for i, ca := range cas {
			if crl.CheckSignatureFrom(ca) == nil {
				covered[i], signed = true, true
			}
		}
		if !signed {
			return nil, errors.New("the authority's CRL is not signed by the database client CA")
		}
		for _, e := range crl.RevokedCertificateEntries {
			if s := fmt.Sprintf("%X", e.SerialNumber); !slices.Contains(revoked, s) {
				revoked = append(revoked, s)
			}
		}
	}
	if strings.TrimSpace(string(rest)) != "" {
		return nil, errors.New("the authority's CRL is not PEM")
	}
	if i := slices.Index(covered, false); i >= 0 {
		return nil, fmt.Errorf("the authority's answer holds no CRL of the database client CA %s", identity.Quote(cas[i].Subject.CommonName))
	}
	return revoked, nil
}

// config is the type's own mbot.yaml fields.
func (databaseServerOutput) config() any { return DatabaseServerOutput{} }
