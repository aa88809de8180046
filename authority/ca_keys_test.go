package authority_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/store"
)

// writeKEK writes a fresh 32-byte key-encryption key, base64, mode 0600.
func writeKEK(t *testing.T, dir, name string) string {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// kekConfig is an authority config in dir, sealing CA keys with keyFile
// (none when empty).
func kekConfig(t *testing.T, dir, keyFile string) *authority.Config {
	t.Helper()
	y := "cluster_name: acme\ndata_dir: data\n"
	if keyFile != "" {
		y += "ca_key_encryption:\n  key_file: " + keyFile + "\n"
	}
	cfg, err := authority.ParseConfig(filepath.Join(dir, "authority.yaml"), []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func openKEK(t *testing.T, cfg *authority.Config) (*authority.Authority, error) {
	t.Helper()
	return authority.Open(t.Context(), cfg, authority.Options{HTTPClient: &http.Client{Timeout: 5 * time.Second},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

// mustOpenKEK is openKEK for a start that must succeed.
func mustOpenKEK(t *testing.T, cfg *authority.Config) *authority.Authority {
	t.Helper()
	a, err := openKEK(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// secretForms are the byte strings that would betray a private key on
// disk: its PKCS #8 DER, the first line of its PEM body, and its raw
// secret (Ed25519 seed, ECDSA scalar).
func secretForms(t *testing.T, key crypto.Signer) map[string][]byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pemBody := strings.Split(string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), "\n")[1]
	forms := map[string][]byte{"PKCS #8 DER": der, "PEM": []byte(pemBody)}
	switch k := key.(type) {
	case ed25519.PrivateKey:
		forms["seed"] = k.Seed()
	case *ecdsa.PrivateKey:
		forms["scalar"] = k.D.FillBytes(make([]byte, 32))
	}
	return forms
}

// checkNoKeysOnDisk fails if any key's secret form is in the database
// file or its journal files.
func checkNoKeysOnDisk(t *testing.T, dataDir string, keys map[string]crypto.Signer) {
	t.Helper()
	for _, hit := range keysOnDisk(t, dataDir, keys) {
		t.Error(hit)
	}
}

// keysOnDisk says which keys' secret forms are in the database files.
func keysOnDisk(t *testing.T, dataDir string, keys map[string]crypto.Signer) []string {
	t.Helper()
	if len(keys) < 8 {
		t.Fatalf("only %d CA keys to look for", len(keys))
	}
	var hits []string
	found := 0
	for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
		data, err := os.ReadFile(filepath.Join(dataDir, store.FileName+suffix))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		found++
		for name, key := range keys {
			for form, secret := range secretForms(t, key) {
				if bytes.Contains(data, secret) {
					hits = append(hits, fmt.Sprintf("the %s CA key's %s is in %s%s", name, form, store.FileName, suffix))
				}
			}
		}
	}
	if found == 0 {
		t.Fatal("no database file to look into")
	}
	return hits
}

// TestCAKeysSealedAtRest: with ca_key_encryption set, no CA private key
// (rotated ones included) is in the SQLite file or its write-ahead log,
// while the authority runs and after it stops; the keys load again.
func TestCAKeysSealedAtRest(t *testing.T) {
	dir := t.TempDir()
	cfg := kekConfig(t, dir, writeKEK(t, dir, "kek"))
	a := mustOpenKEK(t, cfg)
	if _, err := authority.RotateCA(t.Context(), a.Store(), a.CAs(), authority.RotateRequest{Type: "ssh-user", Grace: time.Hour, Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	cas, err := authority.LoadCAs(t.Context(), a.Store(), "acme", mustKEK(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	keys := cas.PrivateKeys()
	if _, ok := keys["ssh-user.next"]; !ok {
		t.Fatal("the rotation's new ssh-user CA is not loaded")
	}
	checkNoKeysOnDisk(t, cfg.DataDir, keys) // open: recent writes are in the -wal
	pin := a.CAs().Pin()
	a.Close()
	checkNoKeysOnDisk(t, cfg.DataDir, keys)

	again := mustOpenKEK(t, cfg)
	defer again.Close()
	if again.CAs().Pin() != pin {
		t.Error("the TLS CA changed between starts")
	}
}

func mustKEK(t *testing.T, cfg *authority.Config) *authority.KEK {
	t.Helper()
	kek, err := authority.LoadKEK(cfg)
	if err != nil || kek == nil {
		t.Fatalf("LoadKEK: %v, %v", kek, err)
	}
	return kek
}

// TestCAKeysRefusedStarts: a store whose keys are sealed does not start
// without the key or with another one, and a store whose keys are in the
// clear does not start with a key until migrate-keys has sealed them; each
// refusal names the CA and what to set or run.
func TestCAKeysRefusedStarts(t *testing.T) {
	dir := t.TempDir()
	sealed := kekConfig(t, dir, writeKEK(t, dir, "kek"))
	a := mustOpenKEK(t, sealed)
	a.Close()
	plainDir := t.TempDir()
	a = mustOpenKEK(t, kekConfig(t, plainDir, ""))
	a.Close()

	cases := []struct {
		name string
		cfg  *authority.Config
		want []string
	}{
		{"missing key", kekConfig(t, dir, ""), []string{"ssh-user CA key is encrypted at rest", "ca_key_encryption.key_file", "MBOT_CA_KEK"}},
		{"wrong key", kekConfig(t, dir, writeKEK(t, dir, "other")), []string{"ssh-user CA key does not open", "other", "not the key it was sealed with"}},
		{"key on a store in the clear", kekConfig(t, plainDir, writeKEK(t, plainDir, "kek")), []string{"ssh-user CA key is stored in the clear", "mbot authority migrate-keys --config authority.yaml"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := openKEK(t, tc.cfg)
			if err == nil {
				a.Close()
				t.Fatal("started")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			// Admin commands open the CAs the same way.
			if st, _, err := authority.OpenAdmin(t.Context(), tc.cfg); err == nil {
				st.Close()
				t.Error("OpenAdmin opened the CAs")
			}
		})
	}
}

// TestCAKeysNotSwappable: a sealed key moved to another CA's row does not
// open: the CA name is the sealing's additional data.
func TestCAKeysNotSwappable(t *testing.T) {
	dir := t.TempDir()
	cfg := kekConfig(t, dir, writeKEK(t, dir, "kek"))
	a := mustOpenKEK(t, cfg)
	rows, err := a.Store().ListCAs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	tlsKey := rows["tls"][bytes.Index(rows["tls"], []byte("-----BEGIN MBOT SEALED PRIVATE KEY")):]
	spiffeCert := rows["spiffe"][:bytes.Index(rows["spiffe"], []byte("-----BEGIN MBOT SEALED PRIVATE KEY"))]
	swapped := append(append([]byte{}, spiffeCert...), tlsKey...)
	if err := a.Store().ReplaceCAs(t.Context(), []store.CAChange{{Name: "spiffe", Old: rows["spiffe"], New: swapped}}); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if a, err = openKEK(t, cfg); err == nil {
		a.Close()
		t.Fatal("started with the tls CA's key in the spiffe row")
	}
	if !strings.Contains(err.Error(), "spiffe CA key does not open") {
		t.Errorf("error %q does not name the spiffe CA", err)
	}
}

// TestMigrateKeys: migrate-keys seals a store's keys in place (nothing of
// them stays in the file), a second run changes nothing, the authority then
// starts with the key and has the same CAs; --new-key-file re-keys and
// --unseal returns to the clear.
func TestMigrateKeys(t *testing.T) {
	dir := t.TempDir()
	plain := kekConfig(t, dir, "")
	a := mustOpenKEK(t, plain)
	keys := a.CAs().PrivateKeys()
	pin := a.CAs().Pin()
	a.Close()
	if len(keysOnDisk(t, plain.DataDir, keys)) == 0 {
		t.Fatal("the keys of a store in the clear are not found on disk: the search finds nothing")
	}

	sealed := kekConfig(t, dir, writeKEK(t, dir, "kek"))
	out, err := authority.MigrateKeys(t.Context(), sealed, authority.MigrateKeysRequest{Actor: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "9 CA keys sealed with the key from "+filepath.Join(dir, "kek")) {
		t.Errorf("migrate-keys said %q", out)
	}
	checkNoKeysOnDisk(t, sealed.DataDir, keys)
	if out, err = authority.MigrateKeys(t.Context(), sealed, authority.MigrateKeysRequest{}); err != nil || !strings.Contains(out, "already sealed") || !strings.Contains(out, "nothing to do") {
		t.Errorf("second migrate-keys: %q, %v", out, err)
	}
	started := func(cfg *authority.Config) {
		t.Helper()
		a := mustOpenKEK(t, cfg)
		defer a.Close()
		if a.CAs().Pin() != pin {
			t.Error("the TLS CA changed")
		}
	}
	started(sealed)
	if a, err := openKEK(t, plain); err == nil {
		a.Close()
		t.Error("started without the key after migrate-keys")
	}

	newKey := writeKEK(t, dir, "kek.new")
	if out, err = authority.MigrateKeys(t.Context(), sealed, authority.MigrateKeysRequest{NewKeyFile: newKey}); err != nil || !strings.Contains(out, "point ca_key_encryption.key_file") {
		t.Fatalf("re-key: %q, %v", out, err)
	}
	rekeyed := kekConfig(t, dir, newKey)
	started(rekeyed)
	if a, err := openKEK(t, sealed); err == nil {
		a.Close()
		t.Error("started with the old key after re-keying")
	}
	if out, err = authority.MigrateKeys(t.Context(), rekeyed, authority.MigrateKeysRequest{Unseal: true}); err != nil || !strings.Contains(out, "9 CA keys stored in the clear") {
		t.Fatalf("unseal: %q, %v", out, err)
	}
	started(plain)

	st, err := store.OpenSQLite(t.Context(), plain.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	evs, err := st.ListAudit(t.Context(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ev := range evs {
		if ev.Event == "ca.keys" {
			n++
		}
	}
	if n != 3 {
		t.Errorf("%d ca.keys audit records, want 3 (seal, re-key, unseal)", n)
	}
}

// TestKEKSources: the key comes from key_file or $MBOT_CA_KEK, as hex or
// base64; a file others can read, a key of the wrong length, and both
// sources at once are refused with what to do.
func TestKEKSources(t *testing.T) {
	dir := t.TempDir()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name, file, env string
		refuse          string
	}{
		{"hex file", write("hex", hex.EncodeToString(key)+"\n", 0o600), "", ""},
		{"base64 file", write("b64", base64.StdEncoding.EncodeToString(key), 0o400), "", ""},
		{"environment", "", hex.EncodeToString(key), ""},
		{"group-readable file", write("open", hex.EncodeToString(key), 0o640), "", "open to its group or others (mode 0640); chmod 600"},
		{"short key", write("short", base64.StdEncoding.EncodeToString(key[:16]), 0o600), "", "not 32 bytes written as 64 hex digits or base64"},
		{"malformed key", write("bad", "correct horse battery staple", 0o600), "", "openssl rand -base64 32"},
		{"short key in the environment", "", "abcd", "$MBOT_CA_KEK is not 32 bytes"},
		{"both", write("both", hex.EncodeToString(key), 0o600), hex.EncodeToString(key), "keep one"},
		{"missing file", filepath.Join(dir, "absent"), "", "no such file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv(authority.EnvCAKEK, tc.env)
			}
			kek, err := authority.LoadKEK(kekConfig(t, dir, tc.file))
			switch {
			case tc.refuse == "" && (err != nil || kek == nil):
				t.Errorf("refused: %v", err)
			case tc.refuse != "" && (err == nil || !strings.Contains(err.Error(), tc.refuse)):
				t.Errorf("error %v, want one saying %q", err, tc.refuse)
			}
			if err != nil && strings.Contains(err.Error(), hex.EncodeToString(key)) {
				t.Error("the refusal shows the key")
			}
		})
	}
	if _, err := authority.ParseConfig(filepath.Join(dir, "authority.yaml"), []byte("cluster_name: acme\nca_key_encryption: {}\n")); err == nil ||
		!strings.Contains(err.Error(), "ca_key_encryption: key_file is required") {
		t.Errorf("ca_key_encryption without key_file: %v", err)
	}
}

// TestCAKeysDocYAML: every authority.yaml example of
// docs/ca-keys-and-rotation.md loads, with its ca_key_encryption.
func TestCAKeysDocYAML(t *testing.T) {
	doc, err := os.ReadFile("../docs/ca-keys-and-rotation.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(doc), "```yaml\n")[1:]
	if len(blocks) < 2 {
		t.Fatalf("%d YAML examples in the doc", len(blocks))
	}
	for i, b := range blocks {
		body, _, _ := strings.Cut(b, "```")
		cfg, err := authority.ParseConfig(fmt.Sprintf("docs example %d", i+1), []byte(body))
		if err != nil {
			t.Errorf("example %d: %v", i+1, err)
		} else if cfg.CAKeyEncryption.KeyFile != "/etc/mbot/kek" {
			t.Errorf("example %d: key_file %q", i+1, cfg.CAKeyEncryption.KeyFile)
		}
	}
}

// TestCAKeysUnknownEnvelope: a sealed key in an envelope version this
// mbot does not know is refused, not misread.
func TestCAKeysUnknownEnvelope(t *testing.T) {
	dir := t.TempDir()
	cfg := kekConfig(t, dir, writeKEK(t, dir, "kek"))
	a := mustOpenKEK(t, cfg)
	rows, err := a.Store().ListCAs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	later := bytes.Replace(rows["jwt"], []byte("Version: 1"), []byte("Version: 2"), 1)
	if bytes.Equal(later, rows["jwt"]) {
		t.Fatalf("the sealed jwt key has no Version header:\n%s", rows["jwt"])
	}
	if err := a.Store().ReplaceCAs(t.Context(), []store.CAChange{{Name: "jwt", Old: rows["jwt"], New: later}}); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if a, err = openKEK(t, cfg); err == nil {
		a.Close()
		t.Fatal("started with a key sealed in an unknown format")
	}
	if !strings.Contains(err.Error(), `the jwt CA key is sealed in format version "2", which this mbot does not know`) {
		t.Errorf("error %q", err)
	}
}
