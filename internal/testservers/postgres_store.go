//go:build linux

package testservers

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// StartPostgresForStore starts PostgreSQL as the authority's store uses it
// in tests: TCP clients on 127.0.0.1 log in as the superuser without a
// password (trust) and over TLS when they ask for it, with room for a few
// replicas' connection pools.
func StartPostgresForStore(t testing.TB) *Postgres {
	t.Helper()
	ca := NewCA(t, "test postgres server CA")
	cert, key := ca.Issue(t, localhostServer("127.0.0.1"))
	return StartPostgres(t, PostgresConfig{ServerCert: cert, ServerKey: key, ClientCA: ca.CertPEM,
		HBA: []string{"host all all 127.0.0.1/32 trust"}, Settings: map[string]string{"max_connections": "100"}})
}

// CreateDatabase creates an empty database named name (letters, digits and
// underscores) and returns a DSN that connects to it as the superuser.
func (p *Postgres) CreateDatabase(t testing.TB, name string) string {
	t.Helper()
	if strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
		t.Fatalf("database name %q: use lower-case letters, digits and underscores", name)
	}
	p.Exec(t, "CREATE DATABASE "+name)
	return p.DSN(name)
}

// DSN connects to database over TCP as the superuser.
func (p *Postgres) DSN(database string) string {
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", p.Superuser, p.Host, p.Port, database)
}

// Restart runs pg_ctl restart -m fast, as an operator restarting the
// database would: connected clients are disconnected, the server shuts
// down and starts again on the same port and data. The new server runs
// detached from the test (pg_ctl starts it); it is stopped with an
// immediate shutdown when the test ends.
func (p *Postgres) Restart(t testing.TB) {
	t.Helper()
	p.pgCtl(t, "restart", "-m", "fast", "-w", "-t", "60", "-D", p.data, "-l", filepath.Join(p.Dir, "restart.log"))
}

// Stop runs pg_ctl stop -m fast: the database is down until Start.
func (p *Postgres) Stop(t testing.TB) {
	t.Helper()
	p.pgCtl(t, "stop", "-m", "fast", "-w", "-t", "60", "-D", p.data)
}

// Start runs pg_ctl start after Stop, on the same port and data.
func (p *Postgres) Start(t testing.TB) {
	t.Helper()
	p.pgCtl(t, "start", "-w", "-t", "60", "-D", p.data, "-l", filepath.Join(p.Dir, "restart.log"))
}

func (p *Postgres) pgCtl(t testing.TB, args ...string) {
	t.Helper()
	cmd := p.account.command(p.Dir, filepath.Join(p.bin, "pg_ctl"), args...)
	cmd.SysProcAttr.Pdeathsig = 0 // pg_ctl's postmaster must outlive pg_ctl
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pg_ctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if args[0] == "stop" {
		return
	}
	t.Cleanup(func() {
		stop := p.account.command(p.Dir, filepath.Join(p.bin, "pg_ctl"), "stop", "-m", "immediate", "-w", "-D", p.data)
		_ = stop.Run()
	})
}

// NewKEK returns a fresh CA key-encryption key as 64 hex digits, the form
// $MBOT_CA_KEK takes. PostgreSQL storage refuses to start without one.
func NewKEK(t testing.TB) string {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(key)
}

// KEKFile writes a fresh key-encryption key into a file readable by its
// owner only and returns its path, for ca_key_encryption.key_file.
func KEKFile(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kek")
	if err := os.WriteFile(path, []byte(NewKEK(t)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// PostgresStorageYAML is the authority.yaml lines of PostgreSQL storage at
// dsn with a key-encryption key in a new file: what a test authority on
// PostgreSQL needs.
func PostgresStorageYAML(t testing.TB, dsn string) string {
	t.Helper()
	return fmt.Sprintf("storage: {type: postgres, dsn: %q}\nca_key_encryption: {key_file: %q}\n", dsn, KEKFile(t))
}
