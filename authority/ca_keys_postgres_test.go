//go:build linux

package authority_test

import (
	"bytes"
	"encoding/hex"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/internal/testservers"
)

// TestCAKeysSealedInPostgres: with ca_key_encryption set and PostgreSQL
// storage, a pg_dump of the authority's database (what a backup holds)
// carries no CA private key, rotated ones included, while the sealed rows
// are there; the authority opens again with the key and is refused with
// another.
func TestCAKeysSealedInPostgres(t *testing.T) {
	pg := testservers.StartPostgresForStore(t)
	dsn := pg.CreateDatabase(t, "mbot_kek")
	dir := t.TempDir()
	config := func(keyFile string) *authority.Config {
		t.Helper()
		y := "cluster_name: acme\ndata_dir: data\nstorage: {type: postgres, dsn: \"" + dsn + "\"}\n" +
			"ca_key_encryption:\n  key_file: " + keyFile + "\n"
		cfg, err := authority.ParseConfig(filepath.Join(dir, "authority.yaml"), []byte(y))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	cfg := config(writeKEK(t, dir, "kek"))
	a, err := openKEK(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := authority.RotateCA(t.Context(), a.Store(), a.CAs(), authority.RotateRequest{Type: "tls", Grace: time.Hour, Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	cas, err := authority.LoadCAs(t.Context(), a.Store(), "acme", mustKEK(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	pin := a.CAs().Pin()
	a.Close()
	keys := cas.PrivateKeys()
	if _, ok := keys["tls.next"]; !ok || len(keys) < 8 {
		t.Fatalf("loaded %d CA keys (tls.next among them: %t)", len(keys), ok)
	}

	dump, err := exec.Command(filepath.Join(filepath.Dir(pg.PsqlPath()), "pg_dump"), "--dbname", dsn).Output()
	if err != nil {
		t.Fatalf("pg_dump: %v", err)
	}
	sealed := []byte("MBOT SEALED PRIVATE KEY")
	if !bytes.Contains(dump, sealed) && !bytes.Contains(dump, []byte(hex.EncodeToString(sealed))) || !strings.Contains(string(dump), "tls.next") {
		t.Fatalf("the dump (%d bytes) holds no sealed CA rows: not a dump of the authority's store", len(dump))
	}
	for name, key := range keys {
		for form, secret := range secretForms(t, key) {
			// pg_dump writes bytea as hex; text as it is.
			if bytes.Contains(dump, secret) || bytes.Contains(dump, []byte(hex.EncodeToString(secret))) {
				t.Errorf("the %s CA key's %s is in the pg_dump", name, form)
			}
		}
	}

	again, err := openKEK(t, cfg)
	if err != nil {
		t.Fatalf("opening again with the key: %v", err)
	}
	if again.CAs().Pin() != pin {
		t.Error("the TLS CA changed between starts")
	}
	again.Close()
	if _, err := openKEK(t, config(writeKEK(t, dir, "other"))); err == nil || !strings.Contains(err.Error(), "not the key it was sealed with") {
		t.Errorf("opening with another key: %v, want a refusal naming the wrong key", err)
	}
}
