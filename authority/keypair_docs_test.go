package authority_test

import (
	"os"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/authority/verify"
)

// TestKeypairDocExamples loads every YAML example of the bound_keypair
// page with the authority's own parser and compiles its join tokens, so
// that what the page shows is what an admin can apply.
func TestKeypairDocExamples(t *testing.T) {
	const page = "../docs/platforms/self-hosted-keypair.md"
	text, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(text), "```yaml\n")[1:]
	if len(blocks) < 2 {
		t.Fatalf("%s has %d YAML examples, want the key-bound and the registration join token", page, len(blocks))
	}
	tokens := 0
	for i, b := range blocks {
		body, _, ok := strings.Cut(b, "```")
		if !ok {
			t.Fatalf("YAML example %d of %s is not closed", i+1, page)
		}
		parsed, err := resources.Parse(page, []byte(body))
		if err != nil {
			t.Errorf("YAML example %d: %v", i+1, err)
			continue
		}
		for _, r := range parsed {
			if r.JoinToken == nil {
				continue
			}
			tokens++
			if r.JoinToken.Spec.Method != verify.BoundKeypairMethod {
				t.Errorf("YAML example %d: join token %q has method %s", i+1, r.Name(), r.JoinToken.Spec.Method)
			}
			if _, err := authority.CompileJoinToken(r.Name(), r.JoinToken, &verify.Env{Audience: "acme"}); err != nil {
				t.Errorf("YAML example %d: %v", i+1, err)
			}
		}
	}
	if tokens < 2 {
		t.Errorf("%s shows %d join tokens, want at least 2", page, tokens)
	}
}
