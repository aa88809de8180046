package authority_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/authority"
)

// TestHighAvailabilityDocConfig loads every authority.yaml example of
// docs/high-availability.md with the real loader.
func TestHighAvailabilityDocConfig(t *testing.T) {
	t.Setenv(authority.StorageDSNEnv, "")
	doc, err := os.ReadFile(filepath.Join("..", "docs", "high-availability.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := 0
	for _, part := range strings.Split(string(doc), "```yaml\n")[1:] {
		block, _, _ := strings.Cut(part, "```")
		if !strings.Contains(block, "cluster_name:") {
			continue
		}
		blocks++
		cfg, err := authority.ParseConfig("authority.yaml", []byte(block))
		if err != nil {
			t.Errorf("example does not load: %v\n%s", err, block)
			continue
		}
		if cfg.Storage.Type != "postgres" || cfg.Storage.DSN == "" {
			t.Errorf("example storage = %+v, want postgres with a dsn", cfg.Storage)
		}
	}
	if blocks == 0 {
		t.Fatal("no authority.yaml example found")
	}
}
