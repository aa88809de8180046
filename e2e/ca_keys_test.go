package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestMigrateKeysCLI seals the CA keys of an existing data directory with
// the binary, the key-encryption key in MBOT_CA_KEK: twice (the second run
// changes nothing); the authority then starts only with the key, and its
// CAs are the same.
func TestMigrateKeysCLI(t *testing.T) {
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	config := filepath.Join(dir, "authority.yaml")
	writeFile(t, config, fmt.Sprintf("cluster_name: %s\nlisten: %s\ndata_dir: %s\n", clusterName, addr, filepath.Join(dir, "data")), 0o600)
	env := baseEnv(t.TempDir())
	pin := mustMbot(t, env, "authority", "export", "--type", "ca-pin", "--config", config).stdout // creates the CAs, in the clear

	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	withKEK := append(append([]string{}, env...), "MBOT_CA_KEK="+hex.EncodeToString(key))
	res := mbot(t, withKEK, "authority", "export", "--type", "ca-pin", "--config", config)
	if res.code == 0 || !strings.Contains(res.stderr, "mbot authority migrate-keys --config authority.yaml") {
		t.Fatalf("export with a key on a store in the clear: %s", res)
	}
	// 8 CA keys, and the bound_keypair challenge key once an authority
	// has started on the store (export alone does not make it).
	if res := mustMbot(t, withKEK, "authority", "migrate-keys", "--config", config); !regexp.MustCompile(`^(8|9) CA keys sealed with the key from \$MBOT_CA_KEK`).MatchString(res.stdout) {
		t.Errorf("migrate-keys: %s", res)
	}
	if res := mustMbot(t, withKEK, "authority", "migrate-keys", "--config", config); !strings.Contains(res.stdout, "nothing to do") {
		t.Errorf("migrate-keys again: %s", res)
	}
	res = mbot(t, env, "authority", "export", "--type", "ca-pin", "--config", config)
	if res.code == 0 || !strings.Contains(res.stderr, "encrypted at rest") || strings.Contains(res.stderr, hex.EncodeToString(key)) {
		t.Errorf("export without the key after migrate-keys: %s", res)
	}
	if got := mustMbot(t, withKEK, "authority", "export", "--type", "ca-pin", "--config", config).stdout; got != pin {
		t.Errorf("the CA pin changed: %s, was %s", got, pin)
	}
	auth := startBackground(t, withKEK, true, mbotBin, "authority", "start", "--config", config)
	waitForPort(t, addr, auth.exited, auth.logs)
	if strings.Contains(auth.logs.String(), hex.EncodeToString(key)) {
		t.Error("the authority logged the key-encryption key")
	}
}
