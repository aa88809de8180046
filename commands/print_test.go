package commands

import (
	"bytes"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/authority/resources"
)

// TestPrintHostileValues checks that mbot get prints allow-rule values (which
// the loader does not restrict) and the names of resources stored by an
// earlier version (which no longer load) without a control character
// reaching the terminal.
func TestPrintHostileValues(t *testing.T) {
	set := parseTestSet(t, "kind: join_token\nversion: v1\nmetadata: {name: gh}\nspec:\n  bot: b\n  method: github\n  github:\n    allow:\n      - repository: \"acme/app\\e]0;owned\\a\"\n        ref: [\"refs/heads/main\\r\\nx\"]\n")
	// As the authority lists a stored role that no longer loads.
	stale := "Deploy\x1b[2J"
	set.Roles[stale] = &resources.Role{Metadata: resources.Metadata{Name: stale}}
	var out bytes.Buffer
	if err := writeTable(&out, set, resources.KindJoinToken, set.Documents(resources.KindJoinToken)); err != nil {
		t.Fatal(err)
	}
	if err := writeTable(&out, set, resources.KindRole, set.Documents(resources.KindRole)); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if strings.ContainsAny(got, "\x1b\x07\r") {
		t.Errorf("mbot get prints a control character:\n%q", got)
	}
	for _, want := range []string{`repository="acme/app\x1b]0;owned\a"`, `ref="refs/heads/main\r\nx"`, `"Deploy\x1b[2J"`} {
		if !strings.Contains(got, want) {
			t.Errorf("mbot get does not show %s:\n%s", want, got)
		}
	}
}
