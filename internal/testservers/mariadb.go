//go:build linux

package testservers

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// MariaDBConfig is what a test starts MariaDB with.
type MariaDBConfig struct {
	// ServerCert, ServerKey and ClientCA are PEM: ssl_cert, ssl_key and
	// ssl_ca (the CA that client certificates must chain to). For
	// ssl-verify-server-cert the server certificate must name the host the
	// client connects to (127.0.0.1 or localhost).
	ServerCert, ServerKey, ClientCA []byte
	// OptionFile, when set, is an option file (such as a database_server
	// output's mariadb.cnf.snippet, where mbot left it) that the server
	// reads with !include for its ssl_* settings, instead of copies of
	// ServerCert, ServerKey and ClientCA.
	OptionFile string
}

// MariaDB is a running MariaDB server on 127.0.0.1:Port with TLS.
type MariaDB struct {
	Host   string // 127.0.0.1
	Port   int
	Socket string // the unix socket, where root logs in without a password
	// Dir holds ssl/ (the files written from the config) and data/.
	Dir    string
	client string // the mariadb (mysql) client
}

// StartMariaDB initialises a data directory (mariadb-install-db) as an
// unprivileged user and starts mariadbd on a free loopback port with the
// caller's certificates. Accounts are made with Exec, e.g.
// CREATE USER 'ci_migrate'@'%' REQUIRE SUBJECT '/CN=ci_migrate'. It stops
// the server and removes the directory when the test ends.
func StartMariaDB(t testing.TB, cfg MariaDBConfig) *MariaDB {
	t.Helper()
	mariadbd := require(t, "mariadbd", "mariadb-server", "/usr/sbin/mariadbd", "/usr/sbin/mysqld")
	installDB := require(t, "mariadb-install-db", "mariadb-server", "/usr/bin/mariadb-install-db", "/usr/bin/mysql_install_db")
	admin := require(t, "mariadb-admin", "mariadb-client", "/usr/bin/mariadb-admin", "/usr/bin/mysqladmin")
	client := require(t, "mariadb", "mariadb-client", "/usr/bin/mariadb", "/usr/bin/mysql")
	a := serverAccount(t, "mysql", "mariadb-server")
	dir := a.dir(t, "mbot-mariadb-")
	m := &MariaDB{Host: "127.0.0.1", Port: freePort(t), Socket: filepath.Join(dir, "mysqld.sock"), Dir: dir, client: client}

	data, ssl := filepath.Join(dir, "data"), filepath.Join(dir, "ssl")
	a.mkdir(t, ssl)
	defaults := "--no-defaults"
	sslArgs := []string{"--ssl-cert=" + filepath.Join(ssl, "server.crt"), "--ssl-key=" + filepath.Join(ssl, "server.key"),
		"--ssl-ca=" + filepath.Join(ssl, "client_ca.crt")}
	if cfg.OptionFile != "" {
		cnf := filepath.Join(dir, "my.cnf")
		a.writeFile(t, cnf, []byte("!include "+cfg.OptionFile+"\n"), 0o644)
		defaults, sslArgs = "--defaults-file="+cnf, nil
	} else {
		a.writeFile(t, filepath.Join(ssl, "server.crt"), cfg.ServerCert, 0o644)
		a.writeFile(t, filepath.Join(ssl, "server.key"), cfg.ServerKey, 0o600)
		a.writeFile(t, filepath.Join(ssl, "client_ca.crt"), cfg.ClientCA, 0o644)
	}

	// Small and unsafe on a crash: a test's server lives for seconds.
	tuning := []string{"--innodb-buffer-pool-size=16M", "--innodb-log-file-size=4M",
		"--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0", "--skip-name-resolve"}
	mustRun(t, "mariadb-install-db", a.command(dir, installDB, append([]string{"--no-defaults", "--datadir=" + data,
		"--auth-root-authentication-method=normal", "--skip-test-db"}, tuning...)...))

	args := append([]string{defaults, "--datadir=" + data, "--socket=" + m.Socket,
		"--port=" + strconv.Itoa(m.Port), "--bind-address=127.0.0.1", "--pid-file=" + filepath.Join(dir, "mysqld.pid"),
		"--log-warnings=3"}, append(sslArgs, tuning...)...)
	proc := startProcess(t, "mariadbd", a.command(dir, mariadbd, args...), syscall.SIGTERM)
	proc.waitUntil(t, func(ctx context.Context) error {
		out, err := exec.CommandContext(ctx, admin, "--no-defaults", "--protocol=socket", "--socket="+m.Socket,
			"--user=root", "--connect-timeout=5", "ping").CombinedOutput()
		if err != nil {
			return fmt.Errorf("mariadb-admin ping: %v %s", err, out)
		}
		return nil
	})
	return m
}

// Exec runs SQL as root over the unix socket and returns the client's
// batch output without column names (one row a line, tab-separated),
// failing the test when the client fails.
func (m *MariaDB) Exec(t testing.TB, sql string) string {
	t.Helper()
	out, err := runClient(t, nil, sql, m.client, "--no-defaults", "--protocol=socket", "--socket="+m.Socket,
		"--user=root", "--batch", "--skip-column-names")
	if err != nil {
		t.Fatalf("mariadb as root: %v", err)
	}
	return strings.TrimSpace(out)
}

// Client runs the mariadb (mysql) client as a test's user would, with only
// args, PATH and an empty HOME, e.g. --defaults-extra-file=db/my.cnf (an
// option file must come first) -N -e 'SELECT current_user()'. The client
// takes host=localhost for the unix socket (its default one, not this
// server's): an option file names 127.0.0.1, or adds protocol=tcp. It returns
// the standard output, and an error with the client's message when it exits
// non-zero (a refused connection).
//
// MariaDB's client (Debian has no MySQL client) takes neither MySQL's
// ssl-mode (an option file that sets it is refused as an unknown variable)
// nor, from MySQL 8 on, is ssl-verify-server-cert MySQL's: an option file
// for both writes loose-ssl-mode=VERIFY_IDENTITY and
// loose-ssl-verify-server-cert (each ignored, with a warning on stderr, by
// the client that does not know it); TestMariaDB uses such a file.
func (m *MariaDB) Client(t testing.TB, args ...string) (string, error) {
	t.Helper()
	return runClient(t, nil, "", m.client, args...)
}

// ClientPath is the mariadb client that Client runs.
func (m *MariaDB) ClientPath() string { return m.client }
