package verify_test

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/authority/verify"
)

// publishedExample is one file of testdata/claims/published: the claims of
// a token a platform published (its docs, or a verifier's fixtures taken
// from real tokens), with comment lines naming the source, the join token
// section a user would write from mbot's docs, and the audience.
type publishedExample struct {
	file, method, source, section, aud string
	claims                             map[string]any
}

func readPublishedExamples(t *testing.T) []publishedExample {
	t.Helper()
	dir := filepath.Join("..", "..", "testdata", "claims", "published")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []publishedExample
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		ex := publishedExample{file: e.Name(), method: strings.SplitN(strings.TrimSuffix(e.Name(), ".json"), "-", 2)[0]}
		var body, section []string
		for _, line := range strings.Split(string(data), "\n") {
			rest, ok := strings.CutPrefix(line, "//")
			if !ok {
				body = append(body, line)
				continue
			}
			key, value, _ := strings.Cut(strings.TrimPrefix(rest, " "), ":")
			value = strings.TrimPrefix(value, " ")
			switch key {
			case "source":
				ex.source = value
			case "section":
				section = append(section, value)
			case "aud":
				ex.aud = value
			default:
				t.Fatalf("%s: unknown comment %q (want source:, section: or aud:)", e.Name(), line)
			}
		}
		ex.section = strings.Join(section, "\n") + "\n"
		if err := json.Unmarshal([]byte(strings.Join(body, "\n")), &ex.claims); err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		if ex.source == "" || len(section) == 0 || ex.aud == "" {
			t.Fatalf("%s: needs // source:, // section: and // aud: lines", e.Name())
		}
		out = append(out, ex)
	}
	return out
}

// TestPublishedExamples signs each platform's published example token with
// a loopback issuer and feeds it through its method's verifier, compiled
// from the join token section mbot's docs tell a user to write: the token
// must be admitted and its rule must match.
func TestPublishedExamples(t *testing.T) {
	examples := readPublishedExamples(t)
	if len(examples) < 5 {
		t.Fatalf("only %d published examples; is the reader broken?", len(examples))
	}
	iss := startIssuer(t, jose.RS256)
	for _, ex := range examples {
		t.Run(ex.file, func(t *testing.T) {
			if _, ok := verify.Methods[ex.method]; !ok {
				t.Fatalf("%s names method %q, which is not one of %v", ex.file, ex.method, verify.MethodNames())
			}
			v := mustCompile(t, ex.method, "issuer: "+iss.URL+"\n"+ex.section, newEnv(iss.Client))
			claims := maps.Clone(ex.claims)
			for k, val := range tokenClaims(t, "github", iss.URL, ex.aud) {
				if k == "iss" || k == "aud" || k == "iat" || k == "nbf" || k == "exp" || k == "jti" {
					claims[k] = val
				}
			}
			adm, err := v.Verify(t.Context(), iss.Sign(t, claims))
			if err != nil {
				t.Fatalf("the published example (%s) was refused: %v", ex.source, err)
			}
			if ok, why := policy.MatchRules(v.Rules(), adm.Claims); !ok {
				t.Fatalf("the published example (%s) does not match the documented rule:\n%s\n%s", ex.source, ex.section, why)
			}
		})
	}
}
