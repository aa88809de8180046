//go:build linux

package testservers

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// PostgresConfig is what a test starts PostgreSQL with.
type PostgresConfig struct {
	// ServerCert, ServerKey and ClientCA are PEM: ssl_cert_file,
	// ssl_key_file and ssl_ca_file (the CA that client certificates must
	// chain to). For sslmode=verify-full the server certificate must name
	// the host the client connects to (127.0.0.1 or localhost).
	ServerCert, ServerKey, ClientCA []byte
	// HBA are the pg_hba.conf lines for TCP clients, e.g.
	// "hostssl all all 127.0.0.1/32 cert". The harness puts
	// "local all postgres trust" first for Exec.
	HBA []string
	// SSLFiles, when set, are the ssl_cert_file, ssl_key_file and
	// ssl_ca_file to use where they are (as mbot sign --owner postgres
	// left them) instead of copies of ServerCert, ServerKey and ClientCA.
	SSLFiles *[3]string
	// Settings override postgresql.conf settings (max_connections, ...).
	Settings map[string]string
}

// Postgres is a running PostgreSQL server on 127.0.0.1:Port with TLS.
type Postgres struct {
	Host      string // 127.0.0.1
	Port      int
	SocketDir string // unix_socket_directories
	Superuser string // postgres
	// Dir holds ssl/ (the files written from the config) and data/.
	Dir     string
	Version string // major version, e.g. "15"
	psql    string
	// bin, account and data are what Restart runs pg_ctl with.
	bin     string
	account account
	data    string
}

// StartPostgres initialises a cluster in a fresh directory (initdb) as an
// unprivileged user and starts PostgreSQL on a free loopback port with
// ssl=on and the caller's certificates and pg_hba lines. It stops the
// server (immediate shutdown) and removes the directory when the test ends.
func StartPostgres(t testing.TB, cfg PostgresConfig) *Postgres {
	t.Helper()
	bin := postgresBinDir(t)
	a := serverAccount(t, "postgres", "postgresql")
	dir := a.dir(t, "mbot-pg-")
	p := &Postgres{Host: "127.0.0.1", Port: freePort(t), SocketDir: filepath.Join(dir, "sock"),
		Superuser: "postgres", Dir: dir, Version: filepath.Base(filepath.Dir(bin)), psql: filepath.Join(bin, "psql")}
	data := filepath.Join(dir, "data")
	p.bin, p.account, p.data = bin, a, data
	mustRun(t, "initdb", a.command(dir, filepath.Join(bin, "initdb"), "-D", data, "-U", p.Superuser,
		"--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"))

	ssl := filepath.Join(dir, "ssl")
	for _, d := range []string{p.SocketDir, ssl} {
		a.mkdir(t, d)
	}
	files := [3]string{filepath.Join(ssl, "server.crt"), filepath.Join(ssl, "server.key"), filepath.Join(ssl, "client_ca.crt")}
	if cfg.SSLFiles != nil {
		files = *cfg.SSLFiles
	} else {
		a.writeFile(t, files[0], cfg.ServerCert, 0o644)
		a.writeFile(t, files[1], cfg.ServerKey, 0o600) // PostgreSQL refuses a key others can read
		a.writeFile(t, files[2], cfg.ClientCA, 0o644)
	}

	hba := "local all " + p.Superuser + " trust\n" + strings.Join(cfg.HBA, "\n") + "\n"
	a.writeFile(t, filepath.Join(data, "pg_hba.conf"), []byte(hba), 0o600)
	settings := map[string]string{
		"listen_addresses":        "127.0.0.1",
		"port":                    strconv.Itoa(p.Port),
		"unix_socket_directories": p.SocketDir,
		"ssl":                     "on",
		"ssl_cert_file":           files[0],
		"ssl_key_file":            files[1],
		"ssl_ca_file":             files[2],
		"fsync":                   "off",
		"max_connections":         "20",
		"shared_buffers":          "16MB",
		"log_connections":         "on",
	}
	for k, v := range cfg.Settings {
		settings[k] = v
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var conf strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&conf, "%s = '%s'\n", k, settings[k])
	}
	a.writeFile(t, filepath.Join(data, "postgresql.auto.conf"), []byte(conf.String()), 0o600)

	// postgres in the foreground; SIGQUIT is pg_ctl stop -m immediate.
	proc := startProcess(t, "postgres", a.command(dir, filepath.Join(bin, "postgres"), "-D", data), syscall.SIGQUIT)
	isready := filepath.Join(bin, "pg_isready")
	proc.waitUntil(t, func(ctx context.Context) error {
		out, err := exec.CommandContext(ctx, isready, "-q", "-h", p.SocketDir, "-p", strconv.Itoa(p.Port), "-U", p.Superuser).CombinedOutput()
		if err != nil {
			return fmt.Errorf("pg_isready: %v %s", err, out)
		}
		return nil
	})
	return p
}

// Exec runs SQL as the superuser over the unix socket and returns psql's
// unaligned, tuples-only output (one row a line, columns separated by |),
// failing the test when psql fails.
func (p *Postgres) Exec(t testing.TB, sql string) string {
	t.Helper()
	out, err := runClient(t, nil, sql, p.psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
		"-h", p.SocketDir, "-p", strconv.Itoa(p.Port), "-U", p.Superuser, "-d", "postgres", "-f", "-")
	if err != nil {
		t.Fatalf("psql as %s: %v", p.Superuser, err)
	}
	return strings.TrimSpace(out)
}

// Psql runs the psql client as a test's user would: with only env (plus
// PATH and an empty HOME) and args, e.g. env PGSERVICEFILE=... PGSERVICE=...
// and args -X -A -t -c 'SELECT current_user'. It returns the standard
// output, and an error with psql's message when psql exits non-zero (a
// refused connection).
func (p *Postgres) Psql(t testing.TB, env []string, args ...string) (string, error) {
	t.Helper()
	return runClient(t, env, "", p.psql, args...)
}

// PsqlPath is the psql that Psql runs.
func (p *Postgres) PsqlPath() string { return p.psql }

// postgresBinDir is the newest /usr/lib/postgresql/<major>/bin with
// initdb and postgres.
func postgresBinDir(t testing.TB) string {
	t.Helper()
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	best, bestMajor := "", -1
	for _, d := range dirs {
		major, err := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		if err != nil || major <= bestMajor {
			continue
		}
		if _, err := exec.LookPath(filepath.Join(d, "initdb")); err != nil {
			continue
		}
		best, bestMajor = d, major
	}
	if best == "" {
		missing(t, "PostgreSQL is not installed: no /usr/lib/postgresql/*/bin/initdb (install the Debian package postgresql, or run .ci/run)")
	}
	return best
}
