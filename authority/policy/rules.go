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
// (including /) and ? any one character; everything else is literal.
func globRegexp(pattern string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
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
// is admitted: a join token must say whom it trusts.
func MatchRules(rules []AllowRule, claims Claims) (bool, string) {
	if len(rules) == 0 {
		return false, "the join token has no allow rules; add at least one rule under allow:"
	}
	var reasons []string
	for i, r := range rules {
		var failed []string
		for _, f := range r.Fields {
			if !f.matches(claims[f.Name]) {
				got := "(absent)"
				if v := claims[f.Name]; len(v) > 0 {
					got = strings.Join(v, ",")
				}
				failed = append(failed, fmt.Sprintf("%s wants %s, token has %s", f.Name, strings.Join(f.Patterns, " or "), got))
			}
		}
		if len(failed) == 0 {
			return true, ""
		}
		reasons = append(reasons, fmt.Sprintf("rule %d (line %d): %s", i+1, r.Line, strings.Join(failed, "; ")))
	}
	return false, strings.Join(reasons, " | ")
}
