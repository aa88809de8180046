//go:build linux

package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/internal/testservers"
)

// The database host's bot, granted its server names by db_server_names,
// and a second client bot beside dbBot, whose certificates must stay good
// when dbBot is locked.
const (
	dbHostBot   = "db-host"
	dbHostToken = "github-db-host"
	dbOtherBot  = "reporter"
	dbOtherTok  = "github-reporter"
)

const dbServerResourcesYAML = `kind: role
version: v1
metadata: {name: db-server}
spec:
  db_server_names: [localhost, 127.0.0.1]
---
kind: bot
version: v1
metadata: {name: ` + dbHostBot + `}
spec:
  roles: [db-server]
---
kind: join_token
version: v1
metadata: {name: ` + dbHostToken + `}
spec:
  bot: ` + dbHostBot + `
  method: github
  github:
    issuer: %[1]s
    allow:
      - repository: acme/app
---
kind: bot
version: v1
metadata: {name: ` + dbOtherBot + `}
spec:
  roles: [db-app]
  traits: {db_user: [` + dbOther + `]}
---
kind: join_token
version: v1
metadata: {name: ` + dbOtherTok + `}
spec:
  bot: ` + dbOtherBot + `
  method: github
  github:
    issuer: %[1]s
    allow:
      - repository: acme/app
`

// dbServerHostYAML is the database host's mbot.yaml: an identity output
// and the database_server output (%[4]s), given to %[5]s, with %[6]s added
// to it (reload: lines).
const dbServerHostYAML = `authority: %[1]s
ca_pin: %[2]s
token: ` + dbHostToken + `
outputs:
  - type: identity
    destination: %[3]s
  - type: database_server
    name: pg
    destination: %[4]s
    server_names: [localhost, 127.0.0.1]
    owner: %[5]s
%[6]s`

// regexpPGSnippet matches postgresql.conf.snippet's file lines.
var regexpPGSnippet = regexp.MustCompile(`(?m)^ssl_(cert|key|ca|crl)_file = '([^']+)'$`)

// serverAccountName is the user the test servers run as (testservers):
// their Debian user when the test runs as root, else the test's user.
func serverAccountName(name string) string {
	if os.Geteuid() != 0 {
		return strconv.Itoa(os.Geteuid())
	}
	return name
}

// sharedTempDir is a fresh directory that the servers' user may enter
// (t.TempDir's parent is closed to other users), removed after the test.
func sharedTempDir(t *testing.T, prefix string) string {
	t.Helper()
	base, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	return base
}

// dbServerSummary is the part of database_server.json the tests read.
type dbServerSummary struct {
	Serial         string   `json:"serial"`
	RevokedSerials []string `json:"revoked_serials"`
}

func readDBServerSummary(dir string) dbServerSummary {
	var s dbServerSummary
	data, err := os.ReadFile(filepath.Join(dir, "database_server.json"))
	if err == nil {
		_ = json.Unmarshal(data, &s)
	}
	return s
}

// pgServerCertificate is the certificate a PostgreSQL server at port
// presents to a client: the SSLRequest, then a TLS handshake.
func pgServerCertificate(t *testing.T, port int) (*x509.Certificate, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(dbHost, strconv.Itoa(port)), 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), 80877103) // SSLRequest
	if _, err := conn.Write(req); err != nil {
		return nil, err
	}
	answer := make([]byte, 1)
	if _, err := io.ReadFull(conn, answer); err != nil || answer[0] != 'S' {
		return nil, fmt.Errorf("the server answered the SSLRequest with %q, %v", answer, err)
	}
	tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true}) // the certificate is only looked at
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	return tc.ConnectionState().PeerCertificates[0], nil
}

// TestDatabaseServerOutput: a database host runs mbot start with a
// database_server output given to the postgres user, and a real
// PostgreSQL runs on nothing but its files (ssl_cert_file, ssl_key_file,
// ssl_ca_file, ssl_crl_file as postgresql.conf.snippet names them). With
// reload: running pg_reload_conf() after each write, the server's
// certificate that a client sees changes with every renewal. Two bots hold
// database certificates and log in; after mbot lock bot/migrator and the
// next renewal, PostgreSQL refuses migrator's still-valid certificate
// (revoked, by the CRL) and admits the other bot's.
func TestDatabaseServerOutput(t *testing.T) {
	dc := startDatabaseCluster(t)
	work := t.TempDir()
	resources := filepath.Join(work, "db-server.yaml")
	writeFile(t, resources, fmt.Sprintf(dbServerResourcesYAML, dc.ci.URL), 0o600)
	mustMbot(t, baseEnv(dc.home), "apply", "--config", dc.config, "-f", resources)

	hostDir := filepath.Join(sharedTempDir(t, "mbot-db-server-"), "mbot")
	hostConfig := filepath.Join(work, "host.yaml")
	owner := serverAccountName("postgres")
	writeFile(t, hostConfig, fmt.Sprintf(dbServerHostYAML, dc.url, dc.pin, filepath.Join(work, "host-id"), hostDir, owner, ""), 0o644)
	d := startProc(t, dc.jobEnv(dc.ci.GitHubEnv()), mbotBin, "start", "--config", hostConfig, "--ttl", daemonTTL, "--renewal-interval", daemonInterval)
	waitFor(t, "the first database_server output", d, func() bool { return readDBServerSummary(hostDir).Serial != "" })

	// The files, as a server accepts them.
	for name, mode := range map[string]os.FileMode{"server.key": 0o600, "server.crt": 0o644, "client-ca.crt": 0o644, "client-ca.crl": 0o644,
		"postgresql.conf.snippet": 0o644, "mariadb.cnf.snippet": 0o644} {
		st, err := os.Stat(filepath.Join(hostDir, name))
		if err != nil || st.Mode().Perm() != mode {
			t.Fatalf("%s: %v %v, want mode %o", name, st, err, mode)
		}
		if uid := st.Sys().(*syscall.Stat_t).Uid; os.Geteuid() == 0 && uid == 0 {
			t.Errorf("%s belongs to root, not to owner: %s", name, owner)
		}
	}
	if got, want := readFile(t, filepath.Join(hostDir, "client-ca.crt")), dc.export(t, "database-client-ca"); strings.TrimSpace(got) != strings.TrimSpace(want) {
		t.Errorf("client-ca.crt is not the database-client CA:\n%s\nwant\n%s", got, want)
	}
	snippet := readFile(t, filepath.Join(hostDir, "postgresql.conf.snippet"))
	files := map[string]string{}
	for _, m := range regexpPGSnippet.FindAllStringSubmatch(snippet, -1) {
		files[m[1]] = m[2]
	}
	for _, k := range []string{"cert", "key", "ca", "crl"} {
		if filepath.Dir(files[k]) != hostDir {
			t.Fatalf("postgresql.conf.snippet has no ssl_%s_file in %s:\n%s", k, hostDir, snippet)
		}
	}
	pg := testservers.StartPostgres(t, testservers.PostgresConfig{
		SSLFiles: &[3]string{files["cert"], files["key"], files["ca"]},
		Settings: map[string]string{"ssl_crl_file": files["crl"]},
		HBA:      []string{"hostssl all all 127.0.0.1/32 cert"},
	})
	pg.Exec(t, "CREATE ROLE "+dbUser+" LOGIN; CREATE ROLE "+dbOther+" LOGIN; CREATE DATABASE "+dbName)
	const real = "pg-db-server"
	dc.applyDatabase(t, real, "postgres", pg.Port, "")

	// The daemon learns to reload PostgreSQL (SIGHUP reloads mbot.yaml and renews).
	reload := fmt.Sprintf("    reload: [%s, -X, -q, -h, %s, -p, %q, -U, postgres, -d, postgres, -c, \"SELECT pg_reload_conf()\"]\n    reload_timeout: 20s\n",
		pg.PsqlPath(), pg.SocketDir, strconv.Itoa(pg.Port))
	writeFile(t, hostConfig, fmt.Sprintf(dbServerHostYAML, dc.url, dc.pin, filepath.Join(work, "host-id"), hostDir, owner, reload), 0o644)
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reload command to run", d, func() bool { return strings.Contains(d.logs.String(), "ran the output's reload command") })

	// A renewal with the reload changes the certificate clients see.
	seen := func() string {
		cert, err := pgServerCertificate(t, pg.Port)
		if err != nil {
			t.Fatalf("TLS to PostgreSQL: %v", err)
		}
		return fmt.Sprintf("%X", cert.SerialNumber)
	}
	first := seen()
	var next string
	waitFor(t, "PostgreSQL to present a renewed certificate", d, func() bool { next = seen(); return next != first })
	if written := readDBServerSummary(hostDir).Serial; next != written {
		// The daemon may have renewed again since; the serial seen must be one it wrote.
		time.Sleep(100 * time.Millisecond)
		if next = seen(); next != readDBServerSummary(hostDir).Serial && next != written {
			t.Errorf("PostgreSQL presents serial %s; the output holds %s", next, written)
		}
	}

	// Two bots' database certificates, both admitted.
	issueAs := func(token, user, name string) string {
		return issueDatabaseClient(t, dc, work, real, token, user, name)
	}
	lockedDir, otherDir := issueAs(dbToken, dbUser, "locked"), issueAs(dbOtherTok, dbOther, "other")
	psql := func(dir string) result {
		return run(t, clientEnv(t), "sh", "-c", ". "+shellQuote(filepath.Join(dir, "env"))+" && psql -X -At -c 'SELECT current_user'")
	}
	for dir, user := range map[string]string{lockedDir: dbUser, otherDir: dbOther} {
		if res := psql(dir); res.code != 0 || strings.TrimSpace(res.stdout) != user {
			t.Fatalf("psql with %s before the lock: %s", dir, res)
		}
	}
	lockedSerial := clientSerial(t, lockedDir)

	mustMbot(t, baseEnv(dc.home), "lock", "bot/"+dbBot, "--reason", "CI secret leaked", "--config", dc.config)
	waitFor(t, "a renewal with "+dbBot+"'s certificate in the CRL", d, func() bool {
		return slices.Contains(readDBServerSummary(hostDir).RevokedSerials, lockedSerial)
	})
	var res result
	waitFor(t, "PostgreSQL to refuse "+dbBot+"'s certificate", d, func() bool { res = psql(lockedDir); return res.code != 0 })
	if !strings.Contains(res.stderr, "certificate revoked") {
		t.Errorf("psql with %s's revoked certificate: %s; want a refusal saying certificate revoked", dbBot, res)
	}
	if res := psql(otherDir); res.code != 0 || strings.TrimSpace(res.stdout) != dbOther {
		t.Fatalf("psql as %s after %s's lock: %s", dbOtherBot, dbBot, res)
	}
	// openssl agrees with the CRL the output holds.
	if openssl := requireTool(t, "openssl"); openssl != "" {
		crl := filepath.Join(hostDir, "client-ca.crl")
		res := run(t, baseEnv(dc.home), openssl, "verify", "-crl_check", "-CAfile", filepath.Join(hostDir, "client-ca.crt"), "-CRLfile", crl, filepath.Join(lockedDir, "client.crt"))
		if res.code == 0 || !strings.Contains(res.stdout+res.stderr, "certificate revoked") {
			t.Errorf("openssl verify -crl_check of the locked certificate: %s", res)
		}
	}
	d.running(t)
}

// issueDatabaseClient runs mbot issue with join token into work/name: an
// identity output and a database output for database user of the
// database resource db.
func issueDatabaseClient(t *testing.T, dc *databaseCluster, work, db, token, user, name string) string {
	t.Helper()
	dir := filepath.Join(work, name)
	cfg := filepath.Join(work, name+".yaml")
	writeFile(t, cfg, fmt.Sprintf("authority: %s\nca_pin: %s\ntoken: %s\noutputs:\n  - destination: %s\n  - type: database\n    destination: %s\n    database: %s\n    username: %s\n    db_name: %s\n",
		dc.url, dc.pin, token, filepath.Join(work, name+"-id"), dir, db, user, dbName), 0o644)
	if res := mbot(t, dc.jobEnv(gitHubJob(t, dc.cluster)), "issue", "--config", cfg); res.code != 0 {
		t.Fatalf("mbot issue as %s: %s", token, res)
	}
	return dir
}

// clientSerial is the serial of the database output in dir.
func clientSerial(t *testing.T, dir string) string {
	t.Helper()
	var sum struct{ Serial string }
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(dir, "database.json"))), &sum); err != nil || sum.Serial == "" {
		t.Fatalf("%s/database.json: no serial (%v)", dir, err)
	}
	return sum.Serial
}

// TestDatabaseServerMariaDB: a real MariaDB reads nothing but the
// database_server output's mariadb.cnf.snippet (!include) for its TLS
// files, CRL included; mbot start reloads it with FLUSH SSL. After mbot
// lock bot/migrator and the next renewal, MariaDB refuses migrator's
// still-valid certificate and admits the other bot's.
func TestDatabaseServerMariaDB(t *testing.T) {
	dc := startDatabaseCluster(t)
	work := t.TempDir()
	resources := filepath.Join(work, "db-server.yaml")
	writeFile(t, resources, fmt.Sprintf(dbServerResourcesYAML, dc.ci.URL), 0o600)
	mustMbot(t, baseEnv(dc.home), "apply", "--config", dc.config, "-f", resources)

	hostDir := filepath.Join(sharedTempDir(t, "mbot-db-server-"), "mbot")
	hostConfig := filepath.Join(work, "host.yaml")
	owner := serverAccountName("mysql")
	writeFile(t, hostConfig, fmt.Sprintf(dbServerHostYAML, dc.url, dc.pin, filepath.Join(work, "host-id"), hostDir, owner, ""), 0o644)
	d := startProc(t, dc.jobEnv(dc.ci.GitHubEnv()), mbotBin, "start", "--config", hostConfig, "--ttl", daemonTTL, "--renewal-interval", daemonInterval)
	waitFor(t, "the first database_server output", d, func() bool { return readDBServerSummary(hostDir).Serial != "" })

	my := testservers.StartMariaDB(t, testservers.MariaDBConfig{OptionFile: filepath.Join(hostDir, "mariadb.cnf.snippet")})
	if got := my.Exec(t, "SELECT @@ssl_crl, @@require_secure_transport"); got != filepath.Join(hostDir, "client-ca.crl")+"\t1" {
		t.Fatalf("MariaDB does not read the snippet's ssl_crl and require_secure_transport: %q", got)
	}
	my.Exec(t, "CREATE DATABASE "+dbName+";"+
		"CREATE USER '"+dbUser+"'@'%' REQUIRE SUBJECT '/CN="+dbUser+"'; GRANT ALL ON "+dbName+".* TO '"+dbUser+"'@'%';"+
		"CREATE USER '"+dbOther+"'@'%' REQUIRE SUBJECT '/CN="+dbOther+"'; GRANT ALL ON "+dbName+".* TO '"+dbOther+"'@'%';")
	const real = "my-db-server"
	dc.applyDatabase(t, real, "mysql", my.Port, "")

	reload := fmt.Sprintf("    reload: [%s, --no-defaults, --protocol=socket, %q, --user=root, -e, FLUSH SSL]\n", my.ClientPath(), "--socket="+my.Socket)
	writeFile(t, hostConfig, fmt.Sprintf(dbServerHostYAML, dc.url, dc.pin, filepath.Join(work, "host-id"), hostDir, owner, reload), 0o644)
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reload command to run", d, func() bool { return strings.Contains(d.logs.String(), "ran the output's reload command") })

	lockedDir := issueDatabaseClient(t, dc, work, real, dbToken, dbUser, "locked")
	otherDir := issueDatabaseClient(t, dc, work, real, dbOtherTok, dbOther, "other")
	connect := func(dir string) result {
		return run(t, clientEnv(t), my.ClientPath(), "--defaults-extra-file="+filepath.Join(dir, "my.cnf"), "-N", "-B", "-e", "select current_user()")
	}
	for dir, user := range map[string]string{lockedDir: dbUser, otherDir: dbOther} {
		if res := connect(dir); res.code != 0 || strings.TrimSpace(res.stdout) != user+"@%" {
			t.Fatalf("mariadb with %s before the lock: %s", dir, res)
		}
	}
	lockedSerial := clientSerial(t, lockedDir)
	mustMbot(t, baseEnv(dc.home), "lock", "bot/"+dbBot, "--reason", "CI secret leaked", "--config", dc.config)
	waitFor(t, "a renewal with "+dbBot+"'s certificate in the CRL", d, func() bool {
		return slices.Contains(readDBServerSummary(hostDir).RevokedSerials, lockedSerial)
	})
	var res result
	waitFor(t, "MariaDB to refuse "+dbBot+"'s certificate", d, func() bool { res = connect(lockedDir); return res.code != 0 })
	// The client reads the server's "certificate revoked" alert, or, when
	// the server has reset the connection first, only the lost connection
	// (ERROR 2013, "Lost connection to server at 'sending authentication
	// information'"); the other bot's login below shows that it is the
	// certificate that is refused.
	if !strings.Contains(res.stderr, "certificate revoked") && !strings.Contains(res.stderr, "Lost connection to server") {
		t.Errorf("mariadb with %s's revoked certificate: %s; want a refusal saying certificate revoked", dbBot, res)
	}
	if res := connect(otherDir); res.code != 0 || strings.TrimSpace(res.stdout) != dbOther+"@%" {
		t.Fatalf("mariadb as %s after %s's lock: %s", dbOtherBot, dbBot, res)
	}
	d.running(t)
}
