package kubesecret_test

import (
	"os"
	"testing"

	"github.com/mbot-dev/mbot/internal/skipreport"
)

// TestMain reports the tests skipped for want of a server or tool in one
// line (internal/skipreport).
func TestMain(m *testing.M) { os.Exit(skipreport.Main(m)) }
