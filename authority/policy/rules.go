// Package policy decides what a verified proof may have: whether a join
// token's allow rules admit its claims, which logins the bot's roles grant,
// and how long its certificates may live.
package policy

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Claims are a proof's identifying claims, named as allow-rule fields. Most
// have one value; a few (CircleCI context ids) have several.
type Claims map[string][]string

// Flatten joins multi-valued claims with commas, for audit records and messages.
func (c Claims) Flatten() map[string]string {
	out := make(map[string]string, len(c))
	for k, v := range c {
		out[k] = strings.Join(v, ",")
	}
	return out
}

// String lists the claims as field=value pairs in a stable order.
func (c Claims) String() string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%s", k, strings.Join(c[k], ",")))
	}
	return strings.Join(parts, " ")
}

// AllowRule admits a proof when every field it sets matches the claim of
// the same name. A field may list several patterns: any one matching is enough.
type AllowRule struct {
	Line   int
	Fields []RuleField
}

// RuleField is one field of an allow rule with its glob patterns.
type RuleField struct {
	Name     string
	Patterns []string
	re       []*regexp.Regexp
}

// ParseAllowRules reads a method section's allow: list. Field names must be
// among known; scalar values (strings, booleans, numbers) are compared as
// the platform sends them, so ref_protected: true matches the claim "true".
func ParseAllowRules(list *yaml.Node, known []string) ([]AllowRule, error) {
	if list == nil {
		return nil, nil
	}
	if list.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("line %d: allow must be a list of rules", list.Line)
	}
	var rules []AllowRule
	for i, item := range list.Content {
		if item.Kind != yaml.MappingNode || len(item.Content) == 0 {
			return nil, fmt.Errorf("line %d: allow[%d] must be a mapping of claim fields to values", item.Line, i)
		}
		rule := AllowRule{Line: item.Line}
		for j := 0; j+1 < len(item.Content); j += 2 {
			key, val := item.Content[j], item.Content[j+1]
			if !slices.Contains(known, key.Value) {
				return nil, fmt.Errorf("line %d: allow[%d]: unknown field %q; fields for this method are: %s",
					key.Line, i, key.Value, strings.Join(known, ", "))
			}
			patterns, err := scalarList(val)
			if err != nil {
				return nil, fmt.Errorf("line %d: allow[%d].%s: %v", val.Line, i, key.Value, err)
			}
			f := RuleField{Name: key.Value, Patterns: patterns}
			for _, p := range patterns {
				f.re = append(f.re, globRegexp(p))
			}
			rule.Fields = append(rule.Fields, f)
		}
		rules = append(rules, rule)
	}
	return rules, nil
}

func scalarList(n *yaml.Node) ([]string, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Value == "" {
			return nil, fmt.Errorf("empty value; remove the field to allow any value")
		}
		return []string{n.Value}, nil
	case yaml.SequenceNode:
		var out []string
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode || c.Value == "" {
				return nil, fmt.Errorf("line %d: list items must be non-empty strings", c.Line)
			}
			out = append(out, c.Value)
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("empty list; remove the field to allow any value")
		}
		return out, nil
	}
	return nil, fmt.Errorf("must be a string, boolean or list of strings")
}

// globRegexp compiles a pattern where * matches any run of characters
// (including / and newlines) and ? any one character; everything else is
// literal. The whole value must match.
func globRegexp(pattern string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("(?s)^")
	for _, r := range pattern {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

func (f *RuleField) matches(values []string) bool {
	for _, re := range f.re {
		for _, v := range values {
			if re.MatchString(v) {
				return true
			}
		}
	}
	return false
}

// MatchRules reports whether any rule admits claims. With no rules nothing
// is admitted: a join token must say whom it trusts. When none admits, the
// mismatch says why; its String is for admins (it shows the patterns), its
// Public for the unauthenticated caller.
func MatchRules(rules []AllowRule, claims Claims) (bool, *Mismatch) {
	m := &Mismatch{}
	if len(rules) == 0 {
		return false, m
	}
	for i, r := range rules {
		rm := RuleMismatch{Index: i, Line: r.Line}
		for _, f := range r.Fields {
			if !f.matches(claims[f.Name]) {
				rm.Fields = append(rm.Fields, FieldMismatch{Name: f.Name, Patterns: f.Patterns, Got: claims[f.Name]})
			}
		}
		if len(rm.Fields) == 0 {
			return true, nil
		}
		m.Rules = append(m.Rules, rm)
	}
	return false, m
}

// Mismatch is why no allow rule admitted a proof: per rule, the fields
// that did not match.
type Mismatch struct {
	Rules []RuleMismatch
}

// RuleMismatch is one rule that did not admit a proof.
type RuleMismatch struct {
	Index, Line int
	Fields      []FieldMismatch
}

// FieldMismatch is a rule field whose patterns the claim did not match.
type FieldMismatch struct {
	Name     string
	Patterns []string
	Got      []string // the claim's values; nil when the proof lacks it
}

// String tells an admin everything: each failing field's patterns and the
// claim's value. It goes in the audit record, never to the caller.
func (m *Mismatch) String() string {
	if m == nil {
		return ""
	}
	if len(m.Rules) == 0 {
		return "the join token has no allow rules; add at least one rule under allow:"
	}
	reasons := make([]string, 0, len(m.Rules))
	for _, r := range m.Rules {
		failed := make([]string, 0, len(r.Fields))
		for _, f := range r.Fields {
			failed = append(failed, fmt.Sprintf("%s wants %s, token has %s", f.Name, strings.Join(f.Patterns, " or "), f.got()))
		}
		reasons = append(reasons, fmt.Sprintf("rule %d (line %d): %s", r.Index+1, r.Line, strings.Join(failed, "; ")))
	}
	return strings.Join(reasons, " | ")
}

// Public names, per rule, the fields that did not match and the claim the
// caller presented, but not the patterns: a caller who could read them
// would learn which repositories, branches or accounts the join token trusts.
func (m *Mismatch) Public() string {
	if m == nil {
		return ""
	}
	if len(m.Rules) == 0 {
		return "the join token has no allow rules"
	}
	reasons := make([]string, 0, len(m.Rules))
	for _, r := range m.Rules {
		failed := make([]string, 0, len(r.Fields))
		for _, f := range r.Fields {
			failed = append(failed, fmt.Sprintf("%s (token has %s)", f.Name, f.got()))
		}
		reasons = append(reasons, fmt.Sprintf("rule %d (line %d) does not match %s", r.Index+1, r.Line, strings.Join(failed, ", ")))
	}
	return strings.Join(reasons, "; ")
}

func (f FieldMismatch) got() string {
	if len(f.Got) == 0 {
		return "(absent)"
	}
	return strings.Join(f.Got, ",")
}

// IsLiteral reports whether pattern has no glob: it matches itself only.
func IsLiteral(pattern string) bool { return !strings.ContainsAny(pattern, "*?") }

// LiteralPrefix is the text of pattern before its first glob, which every
// value it matches begins with.
func LiteralPrefix(pattern string) string {
	if i := strings.IndexAny(pattern, "*?"); i >= 0 {
		return pattern[:i]
	}
	return pattern
}

// OwnerLiteral reports whether every value pattern matches begins with
// prefix and the same owner: the pattern begins with prefix, and what
// follows is either glob-free or starts with segments non-empty,
// glob-free parts each ended by sep. So with prefix "" and sep "/",
// acme/app and acme/* pin the owner acme, while *, */app, acme* and
// ac?e/app do not: a glob may narrow within an owner, never stand for one.
// Patterns are anchored, so acme/* matches neither acme-evil/x nor evil/acme/x.
func OwnerLiteral(pattern, prefix, sep string, segments int) bool {
	rest, ok := strings.CutPrefix(pattern, prefix)
	if !ok || rest == "" {
		return false
	}
	if IsLiteral(rest) {
		return true
	}
	lit := LiteralPrefix(rest)
	for range segments {
		seg, after, found := strings.Cut(lit, sep)
		if !found || seg == "" {
			return false
		}
		lit = after
	}
	return true
}

// OwnerScope says how an allow rule pins the tenant (organization,
// project, account) that owns a proof, for a method whose issuer serves
// many tenants: a rule that pins none admits all of them.
type OwnerScope struct {
	// Issuer names who issues the proofs and whom it serves, for messages:
	// "token.actions.githubusercontent.com issues tokens to every repository on github.com".
	Issuer string
	// Fields are the rule fields that can pin the owner, the first being the one to suggest.
	Fields []OwnerField
	// AnyLiteral accepts a rule when any of its fields is glob-free (the
	// generic oidc method, whose claims mbot does not know); Fields is then empty.
	AnyLiteral bool
}

// OwnerField is a rule field that pins the owner when all its patterns do.
type OwnerField struct {
	Name string
	// Pins reports whether a pattern pins the owner; nil means it must be glob-free.
	Pins func(pattern string) bool
	// Shape shows a pinned value, for messages: "acme/app or acme/*".
	Shape string
	// Example is the value suggested for the line to add: "<your org>".
	Example string
}

func (f OwnerField) pins(patterns []string) bool {
	for _, p := range patterns {
		if f.Pins == nil && !IsLiteral(p) || f.Pins != nil && !f.Pins(p) {
			return false
		}
	}
	return true
}

// UnscopedRuleError refuses an allow rule that does not pin the owner.
// Its message starts "line N:" like the other errors of a method section,
// shows the rule and the line to add.
type UnscopedRuleError struct {
	Line    int
	Message string
}

func (e *UnscopedRuleError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Message) }

// Check refuses the first rule that does not pin the owner.
func (s *OwnerScope) Check(rules []AllowRule) error {
	if s == nil {
		return nil
	}
	for i, r := range rules {
		if s.scoped(r) {
			continue
		}
		return &UnscopedRuleError{Line: r.Line, Message: s.explain(i, r)}
	}
	return nil
}

func (s *OwnerScope) scoped(r AllowRule) bool {
	for _, f := range r.Fields {
		if s.AnyLiteral && (OwnerField{}).pins(f.Patterns) {
			return true
		}
		for _, of := range s.Fields {
			if of.Name == f.Name && of.pins(f.Patterns) {
				return true
			}
		}
	}
	return false
}

func (s *OwnerScope) explain(i int, r AllowRule) string {
	var b strings.Builder
	if s.AnyLiteral {
		fmt.Fprintf(&b, "allow[%d] sets every field to a glob, so it admits any token of %s whose claims fit them; "+
			"set at least one field, ideally sub, to an exact value (no * or ?)", i, s.Issuer)
	} else {
		fmt.Fprintf(&b, "allow[%d] does not pin the owner: %s, so a rule must set one of ", i, s.Issuer)
		shapes := make([]string, len(s.Fields))
		for j, f := range s.Fields {
			shapes[j] = fmt.Sprintf("%s (%s)", f.Name, f.Shape)
		}
		b.WriteString(strings.Join(shapes, ", "))
		globbed := false
		for _, f := range r.Fields {
			for _, of := range s.Fields {
				if of.Name == f.Name {
					fmt.Fprintf(&b, "; %s: %s does not pin it", f.Name, yamlValue(f.Patterns))
					globbed = globbed || slices.ContainsFunc(f.Patterns, func(p string) bool { return !IsLiteral(p) })
				}
			}
		}
		if globbed {
			b.WriteString("; a glob may narrow within an owner (acme/*), never stand for it")
		}
	}
	if len(s.Fields) > 0 {
		b.WriteString(". The rule, and a line to add:\n")
	} else {
		b.WriteString(". The rule:\n")
	}
	for j, f := range r.Fields {
		lead := "  "
		if j == 0 {
			lead = "- "
		}
		fmt.Fprintf(&b, "    %s%s: %s\n", lead, f.Name, yamlValue(f.Patterns))
	}
	if len(s.Fields) > 0 {
		f := s.Fields[0]
		fmt.Fprintf(&b, "      %s: %s   # add", f.Name, f.Example)
	}
	return strings.TrimRight(b.String(), "\n")
}

// yamlValue writes patterns as a rule's value, quoted where YAML needs it.
func yamlValue(patterns []string) string {
	q := make([]string, len(patterns))
	for i, p := range patterns {
		q[i] = p
		if p == "" || strings.ContainsAny(p, "*?:{}[],&#|>!%@`'\"") || strings.TrimSpace(p) != p {
			q[i] = fmt.Sprintf("%q", p)
		}
	}
	if len(q) == 1 {
		return q[0]
	}
	return "[" + strings.Join(q, ", ") + "]"
}
