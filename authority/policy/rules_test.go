package policy_test

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/mbot-dev/mbot/authority/policy"
	"gopkg.in/yaml.v3"
)

// parseRules reads an allow: list with any field names.
func parseRules(t testing.TB, src string, fields ...string) ([]policy.AllowRule, error) {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		return nil, err
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	return policy.ParseAllowRules(doc.Content[0], fields)
}

func TestOwnerLiteral(t *testing.T) {
	cases := []struct {
		pattern, prefix, sep string
		segments             int
		want                 bool
	}{
		{"acme/app", "", "/", 1, true},
		{"acme/*", "", "/", 1, true},
		{"acme/app-?", "", "/", 1, true},
		{"acme", "", "/", 1, true}, // literal: matches acme only
		{"*", "", "/", 1, false},
		{"*/app", "", "/", 1, false},
		{"acme*", "", "/", 1, false},
		{"ac?e/app", "", "/", 1, false},
		{"/*", "", "/", 1, false}, // an empty owner is no owner
		{"gitlab.com/acme/*", "", "/", 2, true},
		{"gitlab.com/*", "", "/", 2, false},
		{"gitlab.com/ac*/app", "", "/", 2, false},
		{"repo:acme/app:ref:refs/heads/main", "repo:", "/", 1, true},
		{"repo:acme/*", "repo:", "/", 1, true},
		{"repo:*", "repo:", "/", 1, false},
		{"repo:acme*", "repo:", "/", 1, false},
		{"environment:prod", "repo:", "/", 1, false}, // no owner prefix at all
		{"repo:", "repo:", "/", 1, false},
		{"repository_owner_id:65:*", "repository_owner_id:", ":", 1, true},
	}
	for _, tc := range cases {
		if got := policy.OwnerLiteral(tc.pattern, tc.prefix, tc.sep, tc.segments); got != tc.want {
			t.Errorf("OwnerLiteral(%q, %q, %q, %d) = %t, want %t", tc.pattern, tc.prefix, tc.sep, tc.segments, got, tc.want)
		}
	}
}

// TestOwnerPatternsAreAnchored proves that an owner a rule pins never
// matches another owner whose name contains it.
func TestOwnerPatternsAreAnchored(t *testing.T) {
	cases := []struct {
		field, pattern, value string
		want                  bool
	}{
		{"repository_owner", "acme", "acme", true},
		{"repository_owner", "acme", "acme-evil", false},
		{"repository_owner", "acme", "evil-acme", false},
		{"repository_owner", "acme", "evil/acme", false},
		{"repository", "acme/app", "acme/app-evil", false},
		{"repository", "acme/app", "evil/acme/app", false},
		{"repository", "acme/*", "acme/x", true},
		{"repository", "acme/*", "acme-evil/x", false},
		{"repository", "acme/*", "evil/acme/x", false},
		{"repository", "acme/*", "acme", false},
		{"namespace_path", "acme/*", "acme-evil/sub", false},
		{"sub", "repo:acme/*", "repo:acme-evil/app:ref:refs/heads/main", false},
		{"sub", "repo:acme/*", "repo:evil/acme/app:ref:refs/heads/main", false},
		{"sub", "repo:acme/*", "repo:acme/app:ref:refs/heads/main", true},
		{"ci_config_ref_uri", "gitlab.com/acme/*", "gitlab.com/acme-evil/app//.gitlab-ci.yml@refs/heads/main", false},
		{"ci_config_ref_uri", "gitlab.com/acme/*", "evil.example/gitlab.com/acme/app", false},
		{"aws_arn", "arn:aws:sts::123456789012:*", "arn:aws:sts::1234567890123:assumed-role/x/y", false},
	}
	for _, tc := range cases {
		rules, err := parseRules(t, "- "+tc.field+": \""+tc.pattern+"\"\n", tc.field)
		if err != nil {
			t.Fatal(err)
		}
		ok, why := policy.MatchRules(rules, policy.Claims{tc.field: {tc.value}})
		if ok != tc.want {
			t.Errorf("%s: %q matches %q = %t, want %t (%s)", tc.field, tc.pattern, tc.value, ok, tc.want, why)
		}
	}
}

// TestMismatchPublic checks what the caller learns of a refusal: the rule
// and field names and its own claims, never the patterns.
func TestMismatchPublic(t *testing.T) {
	rules, err := parseRules(t, "- repository: acme/app\n  ref: refs/heads/release-*-secret\n- repository: [acme/other, acme/hidden-*]\n",
		"repository", "ref")
	if err != nil {
		t.Fatal(err)
	}
	ok, why := policy.MatchRules(rules, policy.Claims{"repository": {"acme/app"}, "ref": {"refs/heads/main"}})
	if ok {
		t.Fatal("admitted")
	}
	public := why.Public()
	if want := "rule 1 (line 1) does not match ref (token has refs/heads/main); rule 2 (line 3) does not match repository (token has acme/app)"; public != want {
		t.Errorf("Public() = %q\nwant      %q", public, want)
	}
	for _, secret := range []string{"release-", "secret", "acme/other", "hidden"} {
		if strings.Contains(public, secret) {
			t.Errorf("Public() tells the caller %q: %s", secret, public)
		}
	}
	for _, detail := range []string{"ref wants refs/heads/release-*-secret, token has refs/heads/main", "repository wants acme/other or acme/hidden-*, token has acme/app"} {
		if !strings.Contains(why.String(), detail) {
			t.Errorf("String() does not hold %q: %s", detail, why)
		}
	}
}

// FuzzMatchRules builds a rule from a fuzzed pattern and matches fuzzed
// values: matching never panics, a literal pattern matches itself only,
// and a pattern that pins an owner never matches a value of another owner.
func FuzzMatchRules(f *testing.F) {
	for _, seed := range [][3]string{
		{"acme/app", "acme/app", "acme-evil/app"},
		{"acme/*", "acme/infra", "acme-evil/x"},
		{"acme/*", "evil/acme/x", "acme"},
		{"*", "anything", ""},
		{"*/app", "evil/app", "acme/app"},
		{"acme*", "acme-evil", "acme"},
		{"ac?e/app", "acme/app", "acxe/app"},
		{"refs/heads/release-?", "refs/heads/release-3", "refs/heads/release-30"},
		{"refs/heads/ma.n", "refs/heads/main", "refs/heads/ma.n"},
		{"repo:acme/app:ref:refs/heads/*", "repo:acme/app:ref:refs/heads/main", "repo:acme-evil/app:ref:refs/heads/main"},
		{"a(b)[c]{1}\\d+$^|", "a(b)[c]{1}\\d+$^|", "ab"},
		{"**/??", "x/yz", "ü/日本"},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	f.Fuzz(func(t *testing.T, pattern, value, other string) {
		if !utf8.ValidString(pattern) {
			return // YAML text is UTF-8
		}
		// The pattern goes through YAML as a double-quoted scalar, the way
		// a resource file would carry it.
		rules, err := parseRules(t, "- repository: "+yamlQuote(pattern)+"\n", "repository")
		if err != nil {
			return // empty, or a value the parser refuses: refusing is fine
		}
		if got := rules[0].Fields[0].Patterns; len(got) != 1 || got[0] != pattern {
			t.Fatalf("pattern %q read back as %q", pattern, got)
		}
		matches := func(v string) bool {
			ok, why := policy.MatchRules(rules, policy.Claims{"repository": {v}})
			if ok != (why == nil) {
				t.Fatalf("MatchRules(%q, %q) = %t with reason %v", pattern, v, ok, why)
			}
			// The caller learns the field and its own value, nothing of the pattern.
			if want := "rule 1 (line 1) does not match repository (token has " + v + ")"; !ok && v != "" && why.Public() != want {
				t.Fatalf("Public() = %q, want %q", why.Public(), want)
			}
			return ok
		}
		if policy.IsLiteral(pattern) {
			if !matches(pattern) {
				t.Fatalf("literal %q does not match itself", pattern)
			}
			for _, v := range []string{value, other} {
				if v != pattern && matches(v) {
					t.Fatalf("literal %q matches %q", pattern, v)
				}
			}
		}
		if !policy.OwnerLiteral(pattern, "", "/", 1) {
			return
		}
		owner := func(v string) string { o, _, _ := strings.Cut(v, "/"); return o }
		o := owner(pattern)
		for _, v := range []string{value, other, value + "/" + other, o + "/" + other} {
			if matches(v) && owner(v) != o {
				t.Fatalf("%q pins the owner %q but matches %q, of owner %q", pattern, o, v, owner(v))
			}
		}
		// The pattern with its globs filled in matches; the same under an
		// owner that contains this one does not.
		filled := strings.NewReplacer("*", value, "?", "x").Replace(pattern)
		if !strings.ContainsAny(value, "*?") && !matches(filled) {
			t.Fatalf("%q does not match %q", pattern, filled)
		}
		rest := filled[len(o):]
		for _, evil := range []string{o + "-evil", "evil" + o, "evil/" + o, o + other} {
			if owner(evil+rest) != o && matches(evil+rest) {
				t.Fatalf("%q pins the owner %q but matches %q", pattern, o, evil+rest)
			}
		}
	})
}

// yamlQuote writes s as a double-quoted YAML scalar, escaping all but
// printable ASCII.
func yamlQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r >= 0x7f:
			fmt.Fprintf(&b, "\\U%08X", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
