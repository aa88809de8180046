package ci

import (
	"os"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/internal/skipreport"
	"github.com/mbot-dev/mbot/internal/testtimeout"
)

// TestMain gives the slow checks (building actionlint, vetting every package
// for darwin and windows) more than go test's default 10 minutes: with an
// empty build cache on 2 shared cores they can take longer.
func TestMain(m *testing.M) {
	testtimeout.Raise(30 * time.Minute)
	os.Exit(skipreport.Main(m))
}
