package ci

import (
	"os"
	"testing"

	"github.com/mbot-dev/mbot/internal/skipreport"
)

// TestMain reports skipped tests (internal/skipreport). The slow checks
// (building actionlint, vetting every package for darwin and windows) can
// pass go test's default 10 minute limit with an empty build cache on 2
// shared cores: the README's test command gives -timeout 40m.
func TestMain(m *testing.M) {
	os.Exit(skipreport.Main(m))
}
