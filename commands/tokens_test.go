package commands

import (
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/identity"
)

// TestTokenName checks that mbot tokens add's default name stays a valid
// join token name for every valid bot name, and that the loader accepts the
// document it writes.
func TestTokenName(t *testing.T) {
	for _, bot := range []string{"deployer", strings.Repeat("b", 48), strings.Repeat("b", 49), "a" + strings.Repeat("-", 50) + "z", strings.Repeat("b", 63)} {
		name := tokenName(bot, randomHex(4))
		if err := identity.CheckName("name", name); err != nil {
			t.Errorf("tokenName(%q) = %q: %v", bot, name, err)
			continue
		}
		doc, err := tokenDocument(name, bot, strings.Repeat("0", 64), time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := resources.Parse("mbot tokens add", doc); err != nil {
			t.Errorf("the document for bot %q does not load: %v", bot, err)
		}
	}
	if got := tokenName("deployer", "3f9c0a1b"); got != "deployer-token-3f9c0a1b" {
		t.Errorf("tokenName = %q", got)
	}
}
