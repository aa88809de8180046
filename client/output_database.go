package client

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/identity"
)

// OutputTypeDatabase writes a database client certificate and the files
// psql and mysql connect with.
const OutputTypeDatabase = "database"

// Files of a database output.
const (
	FileDBClientKey  = "client.key"
	FileDBClientCert = "client.crt"
	// FileDBServerCA is the CA the server's certificate is checked by.
	FileDBServerCA = "ca.crt"
	// FilePGService is a PostgreSQL connection service file (PGSERVICEFILE)
	// with one service named after the database resource.
	FilePGService = "pg_service.conf"
	// FileDBEnv sets PGHOST, PGPORT, PGUSER... for `. ./db/env`.
	FileDBEnv = "env"
	// FileMyCnf is a MySQL/MariaDB option file (--defaults-extra-file).
	FileMyCnf        = "my.cnf"
	FileDatabaseJSON = "database.json"
)

func init() {
	outputKinds[OutputTypeDatabase] = databaseOutput{}
	identity.RegisterFiles(FileDBClientKey, FileDBClientCert, FileDBServerCA, FilePGService, FileDBEnv, FileMyCnf)
	identity.RegisterSummaryFile(FileDatabaseJSON)
}

// DatabaseOutput is what a database output asks for in mbot.yaml:
//
//   - type: database
//     destination: ./db
//     database: prod-pg     # a kind: database resource
//     username: ci_migrate  # granted by a role's db_users
//     db_name: app          # optional; granted by a role's db_names
type DatabaseOutput struct {
	Database string `yaml:"database"`
	Username string `yaml:"username"`
	DBName   string `yaml:"db_name"`
}

// CheckAndSetDefaults checks a database output's fields; the authority
// checks them again, and whether the bot's roles grant them.
func (d *DatabaseOutput) CheckAndSetDefaults() error {
	switch {
	case d.Database == "":
		return badField("database", "is required: the name of the kind: database resource to connect to (mbot get databases lists them)")
	case d.Username == "":
		return badField("username", "is required: the database user to connect as, which a role of the bot grants in db_users")
	}
	if err := identity.CheckName("database", d.Database); err != nil {
		return badField("database", "%v", err)
	}
	if err := identity.CheckLogin("username", d.Username); err != nil {
		return badField("username", "%v", err)
	}
	if d.DBName != "" {
		if err := identity.CheckDBName("db_name", d.DBName); err != nil {
			return badField("db_name", "%v", err)
		}
	}
	return nil
}

type databaseOutput struct{}

func (databaseOutput) keys() (sshKey, tlsKey bool) { return false, true }

func (databaseOutput) setFields(o *Output) []string {
	var set []string
	for _, f := range []struct{ name, v string }{{"database", o.Database}, {"username", o.Username}, {"db_name", o.DBName}} {
		if f.v != "" {
			set = append(set, f.name)
		}
	}
	return set
}

func (databaseOutput) checkAndSetDefaults(o *Output) error {
	return o.DatabaseOutput.CheckAndSetDefaults()
}

func (databaseOutput) request(o *Output, req *identity.OutputRequest) {
	req.Database = &identity.DatabaseRequest{Database: o.Database, Username: o.Username, DBName: o.DBName}
}

func (databaseOutput) summary(dir string, grant *identity.OutputResponse) string {
	g := grant.Database
	use := "mysql --defaults-extra-file=" + shellQuote(filepath.Join(dir, FileMyCnf))
	if g.Protocol == "postgres" {
		use = ". " + shellQuote(filepath.Join(dir, FileDBEnv)) + " && psql"
	}
	return fmt.Sprintf("database %s as user %s, valid until %s (use: %s)", g.Database, g.Username, grant.NotAfter.UTC().Format(time.RFC3339), use)
}

// DatabaseSummary is database.json: what a database output holds.
type DatabaseSummary struct {
	Cluster   string    `json:"cluster"`
	Bot       string    `json:"bot"`
	Output    string    `json:"output"`
	Type      string    `json:"type"`
	Database  string    `json:"database"`
	Protocol  string    `json:"protocol"`
	Host      string    `json:"host"`
	Port      int       `json:"port"`
	Username  string    `json:"username"`
	DBName    string    `json:"db_name,omitempty"`
	Roles     []string  `json:"roles"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Serial    string    `json:"serial"`
	// Files names each file written, by purpose.
	Files map[string]string `json:"files"`
}

func (databaseOutput) render(dir string, keys *identity.Keys, resp *identity.JoinResponse, grant *identity.OutputResponse) ([]identity.File, error) {
	g := grant.Database
	if g == nil {
		return nil, errors.New("the authority's answer holds no database grant")
	}
	if err := checkDatabaseGrant(g); err != nil {
		return nil, fmt.Errorf("the authority's answer: %w", err)
	}
	if err := checkCertificate(grant.TLSCertificate, keys.TLS); err != nil {
		return nil, err
	}
	if err := checkPEMCertificates("server CA", g.ServerCA); err != nil {
		return nil, err
	}
	keyPEM, err := keys.TLSPrivateKeyPEM()
	if err != nil {
		return nil, err
	}
	if err := checkDestinationInFile(dir, "connection files"); err != nil {
		return nil, err
	}
	path := func(name string) string { return filepath.Join(dir, name) }
	header := fmt.Sprintf("# mbot database output %s: bot %s, database %s (%s), user %s; valid until %s\n",
		identity.Quote(grant.Name), identity.Quote(resp.Bot), g.Database, g.Protocol, g.Username, grant.NotAfter.UTC().Format(time.RFC3339))
	files := []identity.File{
		{Name: FileDBClientKey, Data: keyPEM, Mode: 0o600},
		{Name: FileDBClientCert, Data: []byte(grant.TLSCertificate), Mode: 0o644},
		{Name: FileDBServerCA, Data: []byte(ensureNewline(g.ServerCA)), Mode: 0o644},
	}
	sum := DatabaseSummary{Cluster: resp.ClusterName, Bot: resp.Bot, Output: grant.Name, Type: OutputTypeDatabase, Database: g.Database,
		Protocol: g.Protocol, Host: g.Host, Port: g.Port, Username: g.Username, DBName: g.DBName, Roles: grant.Roles,
		NotBefore: grant.NotBefore, NotAfter: grant.NotAfter, Serial: grant.TLSSerial,
		Files: map[string]string{"key": FileDBClientKey, "certificate": FileDBClientCert, "server_ca": FileDBServerCA}}
	switch g.Protocol {
	case "postgres":
		var svc, env bytes.Buffer
		svc.WriteString(header)
		fmt.Fprintf(&svc, "# use: PGSERVICEFILE=%s PGSERVICE=%s psql\n[%s]\n", shellQuote(path(FilePGService)), g.Database, g.Database)
		env.WriteString(header)
		fmt.Fprintf(&env, "# use: . %s && psql\n", shellQuote(path(FileDBEnv)))
		for _, kv := range [][2]string{
			{"host", g.Host}, {"port", strconv.Itoa(g.Port)}, {"user", g.Username}, {"dbname", g.DBName},
			{"sslmode", "verify-full"}, {"sslcert", path(FileDBClientCert)}, {"sslkey", path(FileDBClientKey)}, {"sslrootcert", path(FileDBServerCA)},
		} {
			if kv[1] == "" {
				continue
			}
			// libpq reads a service file's values as written, to the end of the line.
			fmt.Fprintf(&svc, "%s=%s\n", kv[0], kv[1])
			fmt.Fprintf(&env, "export PG%s=%s\n", pgEnvName(kv[0]), shellQuote(kv[1]))
		}
		files = append(files, identity.File{Name: FilePGService, Data: svc.Bytes(), Mode: 0o644}, identity.File{Name: FileDBEnv, Data: env.Bytes(), Mode: 0o644})
		sum.Files["pg_service"], sum.Files["env"] = FilePGService, FileDBEnv
	case "mysql":
		var cnf bytes.Buffer
		cnf.WriteString(header)
		// protocol=TCP: both clients take host=localhost for their default
		// unix socket otherwise, and would ignore port and the certificates.
		fmt.Fprintf(&cnf, "# use: mysql --defaults-extra-file=%s\n[client]\nprotocol=TCP\n", shellQuote(path(FileMyCnf)))
		for _, kv := range [][2]string{
			{"host", g.Host}, {"port", strconv.Itoa(g.Port)}, {"user", g.Username},
			{"ssl-ca", path(FileDBServerCA)}, {"ssl-cert", path(FileDBClientCert)}, {"ssl-key", path(FileDBClientKey)},
		} {
			fmt.Fprintf(&cnf, "%s=%s\n", kv[0], myCnfQuote(kv[1]))
		}
		// MySQL checks the server's name with ssl-mode, which MariaDB's
		// clients do not know: loose- makes them skip it (with a warning)
		// rather than refuse the file. MariaDB's ssl-verify-server-cert
		// goes in [client-mariadb], which only MariaDB's clients read
		// (MySQL 8 does not know the option).
		cnf.WriteString("loose-ssl-mode=VERIFY_IDENTITY\n[client-mariadb]\nssl-verify-server-cert\n")
		if g.DBName != "" {
			// [mysql] only: mysqldump and mysqladmin refuse database= in [client].
			fmt.Fprintf(&cnf, "[mysql]\ndatabase=%s\n", myCnfQuote(g.DBName))
		}
		files = append(files, identity.File{Name: FileMyCnf, Data: cnf.Bytes(), Mode: 0o600})
		sum.Files["my_cnf"] = FileMyCnf
	}
	sumJSON, err := json.MarshalIndent(sum, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(files, identity.File{Name: FileDatabaseJSON, Data: append(sumJSON, '\n'), Mode: 0o600}), nil
}

// checkDatabaseGrant checks every value of the authority's answer that
// reaches a file, as the authority checked them.
func checkDatabaseGrant(g *identity.DatabaseGrant) error {
	if g.Protocol != "postgres" && g.Protocol != "mysql" {
		return fmt.Errorf("protocol %s is not postgres or mysql", identity.Quote(identity.Truncate(g.Protocol, 40)))
	}
	if err := identity.CheckName("database", g.Database); err != nil {
		return err
	}
	if net.ParseIP(g.Host) == nil {
		if err := identity.CheckDNSPattern("host", g.Host); err != nil || strings.HasPrefix(g.Host, "*.") {
			return fmt.Errorf("host %s is not a host name or IP address", identity.Quote(identity.Truncate(g.Host, 64)))
		}
	}
	if g.Port < 1 || g.Port > 65535 {
		return fmt.Errorf("port %d is not 1 to 65535", g.Port)
	}
	if err := identity.CheckLogin("username", g.Username); err != nil {
		return err
	}
	if g.DBName != "" {
		if err := identity.CheckDBName("db_name", g.DBName); err != nil {
			return err
		}
	}
	return nil
}

// checkCertificate checks that certPEM is one certificate on key.
func checkCertificate(certPEM string, key *ecdsa.PrivateKey) error {
	block, rest := pem.Decode([]byte(certPEM))
	if block == nil || block.Type != "CERTIFICATE" || strings.TrimSpace(string(rest)) != "" {
		return errors.New("the authority's answer holds no certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fmt.Errorf("the authority's certificate does not parse: %w", err)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(key.Public()) {
		return errors.New("the authority's certificate is not for the key this output asked for")
	}
	return nil
}

// checkPEMCertificates checks that s is one or more PEM certificates and nothing else.
func checkPEMCertificates(what, s string) error {
	rest, n := []byte(s), 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if _, err := x509.ParseCertificate(block.Bytes); block.Type != "CERTIFICATE" || err != nil {
			return fmt.Errorf("the authority's %s holds something other than certificates", what)
		}
		n++
	}
	if n == 0 || strings.TrimSpace(string(rest)) != "" {
		return fmt.Errorf("the authority's %s is not PEM certificates", what)
	}
	return nil
}

// checkDestinationInFile checks that dir, which files of kind files name,
// holds no control character and no surrounding space: those files end a
// value at a newline and trim it.
func checkDestinationInFile(dir, files string) error {
	if strings.ContainsFunc(dir, func(r rune) bool { return r < ' ' || r == 0x7f }) || strings.TrimSpace(dir) != dir {
		return fmt.Errorf("the destination %s has a control character or surrounding space, which %s cannot hold", identity.Quote(dir), files)
	}
	return nil
}

func pgEnvName(key string) string {
	if key == "dbname" {
		return "DATABASE"
	}
	return strings.ToUpper(key)
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// myCnfQuote quotes an option file value as MySQL and MariaDB read it.
func myCnfQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func ensureNewline(s string) string {
	if s != "" && !strings.HasSuffix(s, "\n") {
		return s + "\n"
	}
	return s
}

// config is the type's own mbot.yaml fields.
func (databaseOutput) config() any { return DatabaseOutput{} }
