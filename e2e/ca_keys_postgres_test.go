//go:build linux

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/internal/testservers"
)

// TestPostgresRequiresKEK: the built binary refuses to start an authority
// on PostgreSQL without a CA key-encryption key, with a message that names
// ca_key_encryption, MBOT_CA_KEK and the command that makes a key, and
// writes no CA into the database. The key gen-kek makes is one the
// authority then starts with, and every CA row it writes is sealed;
// migrate-keys --unseal is refused on PostgreSQL.
func TestPostgresRequiresKEK(t *testing.T) {
	pg := testservers.StartPostgresForStore(t)
	dsn := pg.CreateDatabase(t, "nokek")
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	config := filepath.Join(dir, "authority.yaml")
	base := fmt.Sprintf("cluster_name: %s\nlisten: %s\ndata_dir: %s\nstorage: {type: postgres}\n", clusterName, addr, filepath.Join(dir, "data"))
	writeFile(t, config, base, 0o600)
	env := append(baseEnv(t.TempDir()), "MBOT_STORAGE_DSN="+dsn)

	res := mbot(t, env, "authority", "start", "--config", config)
	for _, want := range []string{"ca_key_encryption", "MBOT_CA_KEK", "mbot authority gen-kek", "pg_dump"} {
		if res.code == 0 || !strings.Contains(res.stderr, want) {
			t.Errorf("start on PostgreSQL without a key-encryption key: want a refusal naming %q:\n%s", want, res)
		}
	}
	if n := len(pgCAs(t, dsn)); n != 0 {
		t.Errorf("the refused start wrote %d CA rows into the database", n)
	}
	if res := mbot(t, env, "authority", "export", "--type", "ca-pin", "--config", config); res.code == 0 || !strings.Contains(res.stderr, "ca_key_encryption") {
		t.Errorf("export on PostgreSQL without a key-encryption key: want the same refusal:\n%s", res)
	}

	kek := filepath.Join(dir, "kek")
	mustMbot(t, env, "authority", "gen-kek", "--out", kek)
	info, err := os.Stat(kek)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("gen-kek wrote %s with mode %04o, want 0600", kek, info.Mode().Perm())
	}
	made, _ := os.ReadFile(kek)
	if key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(made))); err != nil || len(key) != 32 {
		t.Errorf("gen-kek wrote %d bytes that are not 32 bytes of base64 (%v)", len(made), err)
	}
	if res := mbot(t, env, "authority", "gen-kek", "--out", kek); res.code == 0 || !strings.Contains(res.stderr, "already exists") {
		t.Errorf("gen-kek over an existing key: want a refusal:\n%s", res)
	}
	if again, _ := os.ReadFile(kek); string(again) != string(made) {
		t.Error("a refused gen-kek changed the existing key")
	}

	writeFile(t, config, base+"ca_key_encryption: {key_file: kek}\n", 0o600)
	auth := startBackground(t, env, true, mbotBin, "authority", "start", "--config", config)
	waitForPort(t, addr, auth.exited, auth.logs)
	if strings.Contains(auth.logs.String(), "not sealed") {
		t.Errorf("the start log says the keys are not sealed, with ca_key_encryption set:\n%s", auth.logs)
	}
	rows := pgCAs(t, dsn)
	if len(rows) < 8 {
		t.Fatalf("the authority on PostgreSQL stored %d CAs, want 8", len(rows))
	}
	for name, material := range rows {
		if !strings.Contains(string(material), "BEGIN MBOT SEALED PRIVATE KEY") || strings.Contains(string(material), "BEGIN PRIVATE KEY") {
			t.Errorf("the %s CA's key is stored in the clear in PostgreSQL", name)
		}
	}
	if res := mbot(t, env, "authority", "migrate-keys", "--config", config, "--unseal"); res.code == 0 || !strings.Contains(res.stderr, "--new-key-file") {
		t.Errorf("migrate-keys --unseal on PostgreSQL: want a refusal:\n%s", res)
	}
}

// pgCAs reads the CA rows of the authority's PostgreSQL database.
func pgCAs(t *testing.T, dsn string) map[string][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	st, err := store.OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rows, err := st.ListCAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// TestSQLiteSaysKeysNotSealed: on SQLite without ca_key_encryption the
// authority starts (sealing stays opt-in there), but its start log and
// mbot lint, locally and over the admin API, say that the CA keys are not
// sealed and how to seal them; with a key neither says so.
func TestSQLiteSaysKeysNotSealed(t *testing.T) {
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	config := filepath.Join(dir, "authority.yaml")
	writeFile(t, config, fmt.Sprintf("cluster_name: %s\nlisten: %s\ndata_dir: %s\n", clusterName, addr, filepath.Join(dir, "data")), 0o600)
	env := baseEnv(t.TempDir())
	auth := startProc(t, env, mbotBin, "authority", "start", "--config", config)
	waitForPort(t, addr, auth.exited, auth.logs)
	if logs := auth.logs.String(); !strings.Contains(logs, "CA private keys are not sealed") || !strings.Contains(logs, "mbot authority gen-kek") {
		t.Errorf("the start log on SQLite without ca_key_encryption does not say the keys are not sealed:\n%s", logs)
	}
	local := mustMbot(t, env, "lint", "--config", config)
	remote := mustMbot(t, env, "lint", "--auth", filepath.Join(dir, "data", "admin"))
	for _, res := range []result{local, remote} {
		if !strings.Contains(res.stdout, "warning: the CA private keys are not sealed") || !strings.Contains(res.stdout, "ca_key_encryption") {
			t.Errorf("mbot lint on SQLite without ca_key_encryption does not warn that the keys are not sealed:\n%s", res)
		}
	}
	auth.stop(t, syscall.SIGTERM)

	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	withKEK := append(append([]string{}, env...), "MBOT_CA_KEK="+hex.EncodeToString(key))
	mustMbot(t, withKEK, "authority", "migrate-keys", "--config", config)
	if res := mustMbot(t, withKEK, "lint", "--config", config); strings.Contains(res.stdout, "not sealed") {
		t.Errorf("mbot lint with sealed keys still warns:\n%s", res)
	}
}
