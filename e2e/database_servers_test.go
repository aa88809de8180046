//go:build linux

package e2e

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/internal/skipreport"
	"github.com/mbot-dev/mbot/internal/testservers"
)

// dbOther is a second database user the bot is granted: a certificate for
// it must not log in as dbUser.
const dbOther = "ci_other"

// applyDatabase registers a database resource named name for a server
// listening on port (mbot apply on the running authority) and waits for
// the authority to load it. ca is the server's CA PEM, or "" for
// ca_issued_by_authority.
func (dc *databaseCluster) applyDatabase(t *testing.T, name, protocol string, port int, ca string) {
	t.Helper()
	spec := "  ca_issued_by_authority: true\n"
	if ca != "" {
		spec = "  ca: |\n    " + strings.ReplaceAll(strings.TrimSpace(ca), "\n", "\n    ") + "\n"
	}
	file := filepath.Join(t.TempDir(), name+".yaml")
	writeFile(t, file, fmt.Sprintf("kind: database\nversion: v1\nmetadata: {name: %s}\nspec:\n  protocol: %s\n  uri: %s:%d\n%s",
		name, protocol, dbHost, port, spec), 0o600)
	mustMbot(t, baseEnv(dc.home), "apply", "--config", dc.config, "-f", file)
	time.Sleep(300 * time.Millisecond) // the running authority looks for changes every 250ms
}

// signedServer is what mbot sign --format wrote for a database server at
// localhost and 127.0.0.1: the files its printed configuration names,
// after checking the key has the mode the printed instructions ask for.
type signedServer struct {
	dir, printed        string
	cert, key, clientCA []byte
}

// The printed configuration lines naming the server's files.
var (
	pgFileLine    = regexp.MustCompile(`(?m)^ssl_(cert|key|ca)_file = '([^']+)'$`)
	mysqlFileLine = regexp.MustCompile(`(?m)^ssl-(cert|key|ca)="([^"]+)"$`)
)

func (dc *databaseCluster) signServer(t *testing.T, format string) signedServer {
	t.Helper()
	dir, printed := dc.signDatabaseServer(t, format)
	s := signedServer{dir: dir, printed: printed}
	re := pgFileLine
	if format == "mysql" {
		re = mysqlFileLine
	}
	files := map[string]*[]byte{"cert": &s.cert, "key": &s.key, "ca": &s.clientCA}
	for _, m := range re.FindAllStringSubmatch(printed, -1) {
		b, err := os.ReadFile(m[2])
		if err != nil || filepath.Dir(m[2]) != dir {
			t.Fatalf("mbot sign --format %s prints %s, not a file it wrote to %s: %v", format, m[0], dir, err)
		}
		*files[m[1]] = b
		delete(files, m[1])
		if m[1] == "key" {
			// The server's user must own the key with mode 0600, as printed
			// (the harness writes it so; PostgreSQL refuses a key others
			// can read).
			if st, err := os.Stat(m[2]); err != nil || st.Mode().Perm() != 0o600 {
				t.Errorf("%s: %v %v, want mode 0600", m[2], st, err)
			}
		}
	}
	if len(files) != 0 {
		t.Fatalf("mbot sign --format %s does not print the ssl %v file lines:\n%s", format, slices.Sorted(maps.Keys(files)), printed)
	}
	if !strings.Contains(printed, "0600") {
		t.Errorf("mbot sign --format %s does not say the key must be mode 0600:\n%s", format, printed)
	}
	return s
}

// otherAuthorityOutput is a database output for dbUser from another
// authority (its own database-client CA): a server set up for this one
// must refuse its certificate.
func otherAuthorityOutput(t *testing.T) string {
	t.Helper()
	other := startDatabaseCluster(t)
	dir := filepath.Join(t.TempDir(), "pg")
	if res := other.issueDatabases(t, dbUser, map[string]string{dbPG: dir}, filepath.Join(t.TempDir(), "id")); res.code != 0 {
		t.Fatalf("mbot issue on the other authority: %s", res)
	}
	return dir
}

// clientEnv is the environment a stock client runs in: PATH, an empty
// HOME (no ~/.pg_service.conf, ~/.my.cnf) and vars.
func clientEnv(t *testing.T, vars ...string) []string {
	return append(baseEnv(t.TempDir()), append([]string{"LC_ALL=C"}, vars...)...)
}

// TestDatabasePostgres: a real PostgreSQL server set up with what mbot sign
// --format postgres wrote and the pg_hba cert method admits psql using
// only a database output's files (the service file, or the env file) with
// sslmode=verify-full as the granted user, and refuses, itself, the
// identity output's certificate (CN = the bot, which is also a role
// there), a certificate for another granted user, and a certificate from
// another authority.
func TestDatabasePostgres(t *testing.T) {
	dc := startDatabaseCluster(t)
	srv := dc.signServer(t, "postgres")
	if !strings.Contains(srv.printed, "hostssl all all ") || !strings.Contains(srv.printed, " cert\n") {
		t.Errorf("mbot sign --format postgres does not print a hostssl ... cert line:\n%s", srv.printed)
	}
	pg := testservers.StartPostgres(t, testservers.PostgresConfig{ServerCert: srv.cert, ServerKey: srv.key, ClientCA: srv.clientCA,
		HBA: []string{"hostssl all all 127.0.0.1/32 cert"}})
	// A role named like the bot: only the CA keeps the identity output out.
	pg.Exec(t, "CREATE ROLE "+dbUser+" LOGIN; CREATE ROLE "+dbOther+" LOGIN; CREATE ROLE "+dbBot+" LOGIN; CREATE DATABASE "+dbName)
	const real = "pg-real"
	dc.applyDatabase(t, real, "postgres", pg.Port, "")

	work := t.TempDir()
	idDir, dir, otherDir := filepath.Join(work, "id"), filepath.Join(work, "pg"), filepath.Join(work, "pg-other")
	if res := dc.issueDatabases(t, dbUser, map[string]string{real: dir}, idDir); res.code != 0 {
		t.Fatalf("mbot issue: %s", res)
	}
	if res := dc.issueDatabases(t, dbOther, map[string]string{real: otherDir}, filepath.Join(work, "id-other")); res.code != 0 {
		t.Fatalf("mbot issue for %s: %s", dbOther, res)
	}
	foreign := otherAuthorityOutput(t)

	query := "SELECT current_user || ' ' || current_database() || ' ' || (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())"
	want := dbUser + " " + dbName + " true"
	sh := func(script string, vars ...string) result {
		return run(t, clientEnv(t, vars...), "sh", "-c", script)
	}
	q := shellQuote
	t.Run("service file", func(t *testing.T) {
		res := run(t, clientEnv(t, "PGSERVICEFILE="+filepath.Join(dir, "pg_service.conf")), "psql", "service="+real, "-X", "-At", "-c", query)
		if res.code != 0 || strings.TrimSpace(res.stdout) != want {
			t.Fatalf("psql service=%s: %s; want %q", real, res, want)
		}
	})
	t.Run("env file", func(t *testing.T) {
		res := sh(". " + q(filepath.Join(dir, "env")) + " && psql -X -At -c " + q(query))
		if res.code != 0 || strings.TrimSpace(res.stdout) != want {
			t.Fatalf(". env && psql: %s; want %q", res, want)
		}
		// verify-full: the name dialled must be in the server's certificate.
		res = sh(". " + q(filepath.Join(dir, "env")) + " && PGHOST=127.0.0.2 PGHOSTADDR=127.0.0.1 psql -X -At -c 'SELECT 1'")
		if res.code == 0 || !strings.Contains(res.stderr, "does not match host name") {
			t.Errorf("psql to a name the server certificate lacks: %s", res)
		}
	})
	t.Run("DatabaseClientCommand", func(t *testing.T) {
		cmd, vars := DatabaseClientCommand(t, dir)
		if res := run(t, clientEnv(t, vars...), cmd[0], cmd[1:]...); res.code != 0 || strings.TrimSpace(res.stdout) != dbUser {
			t.Fatalf("%v: %s", cmd, res)
		}
	})

	// Refused by PostgreSQL itself: each case keeps the output's env (the
	// server is verified as usual) and swaps the client certificate.
	for _, tc := range []struct {
		name, user, cert, key, want string
	}{
		{"identity output as the bot's role", dbBot, filepath.Join(idDir, "tls.crt"), filepath.Join(idDir, "tls.key"), "unknown ca"},
		{"another user's certificate", dbUser, filepath.Join(otherDir, "client.crt"), filepath.Join(otherDir, "client.key"),
			`certificate authentication failed for user "` + dbUser + `"`},
		{"another authority's certificate", dbUser, filepath.Join(foreign, "client.crt"), filepath.Join(foreign, "client.key"), "unknown ca"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := sh(". " + q(filepath.Join(dir, "env")) + " && PGUSER=" + q(tc.user) + " PGSSLCERT=" + q(tc.cert) + " PGSSLKEY=" + q(tc.key) +
				" psql -X -At -c 'SELECT current_user'")
			if res.code == 0 || !strings.Contains(res.stderr, tc.want) {
				t.Fatalf("psql as %s with %s: %s; want a refusal with %q", tc.user, filepath.Base(tc.cert), res, tc.want)
			}
		})
	}
	// The other user's own output does log in, as that user.
	res := sh(". " + q(filepath.Join(otherDir, "env")) + " && psql -X -At -c 'SELECT current_user'")
	if res.code != 0 || strings.TrimSpace(res.stdout) != dbOther {
		t.Errorf("psql with the %s output: %s", dbOther, res)
	}
}

// TestDatabaseMariaDB: a real MariaDB server set up with what mbot sign
// --format mysql wrote admits the stock client using only a database
// output's my.cnf (the server's name verified) as a user made with
// REQUIRE SUBJECT '/CN=ci_migrate', and refuses the identity output's
// certificate, another granted user's and another authority's.
func TestDatabaseMariaDB(t *testing.T) {
	dc := startDatabaseCluster(t)
	srv := dc.signServer(t, "mysql")
	if !strings.Contains(srv.printed, "REQUIRE SUBJECT '/CN="+dbUser+"'") {
		t.Errorf("mbot sign --format mysql does not print the CREATE USER line:\n%s", srv.printed)
	}
	my := testservers.StartMariaDB(t, testservers.MariaDBConfig{ServerCert: srv.cert, ServerKey: srv.key, ClientCA: srv.clientCA})
	my.Exec(t, "CREATE DATABASE "+dbName+";"+
		"CREATE USER '"+dbUser+"'@'%' REQUIRE SUBJECT '/CN="+dbUser+"';"+
		"GRANT ALL ON "+dbName+".* TO '"+dbUser+"'@'%';"+
		// REQUIRE X509: any certificate of the client CA, whatever its subject.
		"CREATE USER '"+dbOther+"'@'%' REQUIRE X509;"+
		"GRANT ALL ON "+dbName+".* TO '"+dbOther+"'@'%';"+
		"CREATE USER '"+dbBot+"'@'%' REQUIRE X509;")
	const real = "my-real"
	// The server's CA given as PEM, as for a server mbot did not sign.
	dc.applyDatabase(t, real, "mysql", my.Port, dc.export(t, "database-server-ca"))

	work := t.TempDir()
	idDir, dir, otherDir := filepath.Join(work, "id"), filepath.Join(work, "my"), filepath.Join(work, "my-other")
	if res := dc.issueDatabases(t, dbUser, map[string]string{real: dir}, idDir); res.code != 0 {
		t.Fatalf("mbot issue: %s", res)
	}
	if res := dc.issueDatabases(t, dbOther, map[string]string{real: otherDir}, filepath.Join(work, "id-other")); res.code != 0 {
		t.Fatalf("mbot issue for %s: %s", dbOther, res)
	}
	foreign := otherAuthorityOutput(t)
	cnf := filepath.Join(dir, "my.cnf")
	client := my.ClientPath()

	t.Run("my.cnf", func(t *testing.T) {
		res := run(t, clientEnv(t), client, "--defaults-extra-file="+cnf, "-N", "-B", "-e",
			"select current_user(), database(), variable_value from information_schema.session_status where variable_name = 'Ssl_version'")
		fields := strings.Fields(res.stdout)
		if res.code != 0 || len(fields) != 3 || fields[0] != dbUser+"@%" || fields[1] != dbName || !strings.HasPrefix(fields[2], "TLS") {
			t.Fatalf("mysql --defaults-extra-file=my.cnf: %s", res)
		}
		// MariaDB's clients skip MySQL's loose-ssl-mode with this warning,
		// and must understand every other option.
		if warn := "Warning: " + client + ": unknown variable 'loose-ssl-mode=VERIFY_IDENTITY'"; strings.TrimSpace(strings.ReplaceAll(res.stderr, warn, "")) != "" {
			t.Errorf("the client warns about my.cnf: %s", res.stderr)
		}
	})
	t.Run("mysql in PATH", func(t *testing.T) {
		if _, err := exec.LookPath("mysql"); err != nil {
			skipreport.Skip(t, "no mysql in PATH (Debian's mariadb-client-compat has it); the mariadb client ran the same my.cnf")
		}
		res := run(t, clientEnv(t), "mysql", "--defaults-extra-file="+cnf, "-e", "select current_user()")
		if res.code != 0 || !strings.Contains(res.stdout, dbUser+"@%") {
			t.Fatalf("mysql --defaults-extra-file=my.cnf -e 'select current_user()': %s", res)
		}
	})
	t.Run("DatabaseClientCommand", func(t *testing.T) {
		cmd, vars := DatabaseClientCommand(t, dir)
		if res := run(t, clientEnv(t, vars...), cmd[0], cmd[1:]...); res.code != 0 || strings.TrimSpace(res.stdout) != dbUser+"@%" {
			t.Fatalf("%v: %s", cmd, res)
		}
	})
	t.Run("server verified", func(t *testing.T) {
		// ssl-verify-server-cert is on: a server certificate another CA
		// signed is refused by the client.
		res := run(t, clientEnv(t), client, "--defaults-extra-file="+cnf, "--ssl-ca="+filepath.Join(foreign, "ca.crt"), "-e", "select 1")
		if res.code == 0 || !strings.Contains(res.stderr, "certificate") {
			t.Errorf("the client accepted a server certificate of another CA: %s", res)
		}
		// and a name the certificate lacks (localhost and 127.0.0.1 only),
		// where the machine has another name for 127.0.0.1.
		alias := loopbackAlias(t)
		if alias == "" {
			skipreport.Skip(t, "no name other than localhost for 127.0.0.1 in /etc/hosts")
		}
		res = run(t, clientEnv(t), client, "--defaults-extra-file="+cnf, "--host="+alias, "-e", "select 1")
		if res.code == 0 || !strings.Contains(res.stderr, "certificate") {
			t.Errorf("the client accepted a server certificate without the name %s: %s", alias, res)
		}
	})
	t.Run("host localhost", func(t *testing.T) {
		// host=localhost would be the client's default unix socket without
		// protocol=TCP in my.cnf.
		dc.applyDatabase(t, "my-localhost", "mysql", my.Port, "")
		dir := filepath.Join(t.TempDir(), "my")
		if res := dc.issueDatabases(t, dbUser, map[string]string{"my-localhost": dir}, filepath.Join(t.TempDir(), "id")); res.code != 0 {
			t.Fatalf("mbot issue: %s", res)
		}
		res := run(t, clientEnv(t), client, "--defaults-extra-file="+filepath.Join(dir, "my.cnf"), "-N", "-B", "-e", "select current_user()")
		if res.code != 0 || strings.TrimSpace(res.stdout) != dbUser+"@%" {
			t.Fatalf("mysql to localhost: %s", res)
		}
	})

	// Refused by the server: the output's my.cnf with another certificate.
	// A certificate of another CA: the server ends the TLS handshake with
	// an alert, which the client reports, or (TLS 1.3 sends the client's
	// certificate after the client is done) as a lost connection.
	unknownCA := []string{"alert unknown ca", "Lost connection to server at 'sending authentication information'"}
	for _, tc := range []struct {
		name, user, cert, key string
		want                  []string
	}{
		{"identity output as the bot", dbBot, filepath.Join(idDir, "tls.crt"), filepath.Join(idDir, "tls.key"), unknownCA},
		{"another user's certificate", dbUser, filepath.Join(otherDir, "client.crt"), filepath.Join(otherDir, "client.key"),
			[]string{"Access denied for user '" + dbUser + "'"}},
		{"another authority's certificate", dbUser, filepath.Join(foreign, "client.crt"), filepath.Join(foreign, "client.key"), unknownCA},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := run(t, clientEnv(t), client, "--defaults-extra-file="+cnf, "--user="+tc.user, "--ssl-cert="+tc.cert, "--ssl-key="+tc.key,
				"-N", "-B", "-e", "select current_user()")
			if res.code == 0 || !slices.ContainsFunc(tc.want, func(w string) bool { return strings.Contains(res.stderr, w) }) {
				t.Fatalf("mysql as %s with %s: %s; want a refusal with one of %q", tc.user, filepath.Base(tc.cert), res, tc.want)
			}
		})
	}
	// The REQUIRE X509 user logs in with its own output.
	res := run(t, clientEnv(t), client, "--defaults-extra-file="+filepath.Join(otherDir, "my.cnf"), "-N", "-B", "-e", "select current_user()")
	if res.code != 0 || strings.TrimSpace(res.stdout) != dbOther+"@%" {
		t.Errorf("mysql with the %s output: %s", dbOther, res)
	}
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// loopbackAlias is a name /etc/hosts gives 127.0.0.1 other than
// localhost, or "".
func loopbackAlias(t *testing.T) string {
	b, _ := os.ReadFile("/etc/hosts")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "127.0.0.1" {
			continue
		}
		for _, name := range f[1:] {
			if name != "localhost" && !strings.HasPrefix(name, "#") {
				return name
			}
		}
	}
	return ""
}

// TestPostgresRecipe follows docs/outputs.md's PostgreSQL recipe as
// written: the documented mbot sign line (its --config, --host and --out
// pointed at this test's), then a real PostgreSQL server started as the
// postgres user with the printed ssl_*_file lines naming the files where
// mbot left them. --owner postgres is what lets that user read the 0700
// directory and the 0600 key; without it the server cannot start.
func TestPostgresRecipe(t *testing.T) {
	dc := startDatabaseCluster(t)
	var recipe []string
	for _, line := range strings.Split(readFile(t, filepath.Join(repoRoot(t), "docs", "outputs.md")), "\n") {
		if strings.HasPrefix(line, "mbot sign ") && strings.Contains(line, "--format postgres") {
			recipe = strings.Fields(line)
			break
		}
	}
	if recipe == nil {
		t.Fatal("docs/outputs.md has no `mbot sign ... --format postgres` line")
	}
	base, err := os.MkdirTemp("", "mbot-pg-recipe-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil { // as /etc/postgresql is
		t.Fatal(err)
	}
	out := filepath.Join(base, "mbot")
	owner := "postgres"
	if os.Geteuid() != 0 {
		// The test servers run as the test's user then (testservers).
		owner = strconv.Itoa(os.Geteuid())
	}
	args := slices.Clone(recipe[1:])
	sawOwner := false
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "--config":
			args[i+1] = dc.config
		case "--host":
			args[i+1] = "localhost," + dbHost
		case "--out":
			args[i+1] = out
		case "--owner":
			sawOwner = true
			if args[i+1] != "postgres" {
				t.Errorf("the recipe gives the files to %q, not to the postgres user", args[i+1])
			}
			args[i+1] = owner
		}
	}
	if !sawOwner {
		t.Fatalf("the recipe %q does not give the files to the postgres user (--owner postgres): the server, running as postgres, cannot read a root-owned 0700 directory", strings.Join(recipe, " "))
	}
	res := mustMbot(t, baseEnv(dc.home), args...)
	files := map[string]string{}
	for _, m := range pgFileLine.FindAllStringSubmatch(res.stdout, -1) {
		files[m[1]] = m[2]
	}
	if len(files) != 3 {
		t.Fatalf("mbot sign printed no ssl_cert_file, ssl_key_file and ssl_ca_file lines:\n%s", res.stdout)
	}
	pg := testservers.StartPostgres(t, testservers.PostgresConfig{
		SSLFiles: &[3]string{files["cert"], files["key"], files["ca"]},
		HBA:      []string{"hostssl all all 127.0.0.1/32 cert"},
	})
	if got := strings.TrimSpace(pg.Exec(t, "SHOW ssl")); got != "on" {
		t.Errorf("SHOW ssl = %q, want on", got)
	}
	if got := strings.TrimSpace(pg.Exec(t, "SELECT pg_read_file(current_setting('ssl_key_file')) LIKE '-----BEGIN%'")); got != "t" {
		t.Errorf("the server does not read its key where mbot wrote it: %q", got)
	}
}
