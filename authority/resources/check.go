package resources

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/lazyregexp"
)

// Bounds on free text in resources: enough for any real description, label
// or trait, small enough that a value cannot flood a log line or a terminal.
const (
	maxDescriptionLen = 1024
	maxLabelLen       = 255
	maxTraitValueLen  = 255
	maxTraitNameLen   = identity.MaxNameLen
)

// loginTemplateRe matches a template span, well-formed or not, so that the
// literal text around it can be checked as a login. Whether a template is
// well formed (one per login, internal. or external.) is policy's concern:
// a malformed one grants nothing and mbot lint reports it.
var loginTemplateRe = lazyregexp.New(`\{\{ *[A-Za-z0-9_.\-]* *\}\}`)

// checkRoleLogin checks one entry of a role's spec.logins: a literal login
// must be a valid user name; a template's literal text must be one too, so
// that whatever a trait value expands it to is checked only for its own part.
func checkRoleLogin(what, login string) error {
	if !strings.Contains(login, "{{") && !strings.Contains(login, "}}") {
		return identity.CheckLogin(what, login)
	}
	shape := loginTemplateRe.ReplaceAllString(login, "x")
	if err := identity.CheckLogin(what, shape); err != nil {
		return fmt.Errorf("%s %s is not a valid login template: the text around {{internal.<trait>}} must form a user name with it (letters, digits, '.', '_' and '-', not starting with '-', at most %d characters)",
			what, identity.Quote(identity.Truncate(login, 64)), identity.MaxLoginLen)
	}
	return nil
}

// CheckTraitName checks a trait name: what {{internal.<trait>}} can refer to.
func CheckTraitName(name string) error {
	ok := name != "" && len(name) <= maxTraitNameLen
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
	}
	if !ok {
		return fmt.Errorf("trait name %s is not valid: use letters, digits, '_' and '-' (at most %d characters), as {{internal.<trait>}} refers to it",
			identity.Quote(identity.Truncate(name, 64)), maxTraitNameLen)
	}
	return nil
}

// checkText checks free text: valid UTF-8, printable, at most max bytes.
func checkText(what, s string, max int) error {
	switch {
	case len(s) > max:
		return fmt.Errorf("%s is %d bytes long; at most %d are accepted", what, len(s), max)
	case !utf8.ValidString(s):
		return fmt.Errorf("%s %s is not valid UTF-8", what, identity.Quote(identity.Truncate(s, 64)))
	case strings.ContainsFunc(s, notPrintable):
		return fmt.Errorf("%s %s contains a control character or an invisible one (newline, tab, escape, bidi override...); remove it", what, identity.Quote(identity.Truncate(s, 64)))
	}
	return nil
}

// notPrintable is true for control characters and for the format
// characters (bidi overrides, zero-width joiners) a terminal shows as
// nothing or uses to reorder what follows.
func notPrintable(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }

// nodeFail reports a bad value at the node where it was written.
type nodeFail func(n *yaml.Node, format string, args ...any) error

// item returns the i-th element of a sequence node, or the sequence itself
// (a flow sequence, an alias) when it has no such element.
func item(seq *yaml.Node, i int) *yaml.Node {
	if seq != nil && seq.Kind == yaml.SequenceNode && i < len(seq.Content) {
		return seq.Content[i]
	}
	return seq
}

// mapKey returns the key node of key in mapping n, or n.
func mapKey(n *yaml.Node, key string) *yaml.Node {
	if n != nil && n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				return n.Content[i]
			}
		}
	}
	return n
}

func checkMetadata(root *yaml.Node, meta Metadata, fail nodeFail) error {
	if meta.Name == "" {
		return fail(root, "metadata.name is required")
	}
	if err := identity.CheckName("metadata.name", meta.Name); err != nil {
		return fail(Lookup(root, "metadata", "name"), "%v", err)
	}
	if err := checkText("metadata.description", meta.Description, maxDescriptionLen); err != nil {
		return fail(Lookup(root, "metadata", "description"), "%v", err)
	}
	labels := Lookup(root, "metadata", "labels")
	for _, k := range slices.Sorted(maps.Keys(meta.Labels)) {
		if err := identity.CheckName("metadata.labels key", k); err != nil {
			return fail(mapKey(labels, k), "%v", err)
		}
		if err := checkText(fmt.Sprintf("metadata.labels.%s", k), meta.Labels[k], maxLabelLen); err != nil {
			return fail(Lookup(labels, k), "%v", err)
		}
	}
	return nil
}

func checkRole(root *yaml.Node, spec *RoleSpec, fail nodeFail) error {
	logins := Lookup(root, "spec", "logins")
	for i, l := range spec.Logins {
		if err := checkRoleLogin(fmt.Sprintf("spec.logins[%d]", i), l); err != nil {
			return fail(item(logins, i), "%v", err)
		}
	}
	for _, f := range GrantFields {
		node := Lookup(root, "spec", f.Name)
		for i, v := range f.Get(spec) {
			if err := f.checkGrantValue(fmt.Sprintf("spec.%s[%d]", f.Name, i), v); err != nil {
				return fail(item(node, i), "%v", err)
			}
		}
	}
	return nil
}

func checkBot(root *yaml.Node, spec *BotSpec, fail nodeFail) error {
	roles := Lookup(root, "spec", "roles")
	for i, r := range spec.Roles {
		if err := identity.CheckName(fmt.Sprintf("spec.roles[%d]", i), r); err != nil {
			return fail(item(roles, i), "%v", err)
		}
	}
	traits := Lookup(root, "spec", "traits")
	for _, name := range slices.Sorted(maps.Keys(spec.Traits)) {
		if err := CheckTraitName(name); err != nil {
			return fail(mapKey(traits, name), "spec.traits: %v", err)
		}
		values := Lookup(traits, name)
		for i, v := range spec.Traits[name] {
			if err := checkText(fmt.Sprintf("spec.traits.%s[%d]", name, i), v, maxTraitValueLen); err != nil {
				return fail(item(values, i), "%v", err)
			}
		}
	}
	return nil
}

func checkJoinToken(root *yaml.Node, spec *JoinTokenSpec, fail nodeFail) error {
	if err := identity.CheckName("spec.bot", spec.Bot); err != nil {
		return fail(Lookup(root, "spec", "bot"), "%v", err)
	}
	if err := identity.CheckName("spec.method", spec.Method); err != nil {
		return fail(Lookup(root, "spec", "method"), "%v", err)
	}
	return nil
}

// fieldName prints a YAML key in a message: as it is when it is a plain
// name, quoted (control characters escaped) when it is not.
func fieldName(key string) string {
	if identity.CheckName("", key) == nil {
		return key
	}
	return identity.Quote(key)
}

// writeNulls spells every empty null value ("labels:" with nothing after
// it) as null: yaml.v3 writes an empty null back as an empty quoted string, so the
// stored body would not load again (found by FuzzParse).
func writeNulls(n *yaml.Node) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" && n.Value == "" {
		n.Value = "null"
	}
	for _, c := range n.Content {
		writeNulls(c)
	}
}

// checkKeys refuses mapping keys that are not plain strings (null, empty,
// a sequence, an alias) anywhere in a document: no resource field is named
// so, and such a key does not survive being stored and read back the same.
func checkKeys(n *yaml.Node, fail nodeFail) error {
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind != yaml.ScalarNode || k.Tag == "!!null" || k.Value == "" {
				return fail(k, "a mapping key must be a non-empty string")
			}
		}
	}
	for _, c := range n.Content {
		if err := checkKeys(c, fail); err != nil {
			return err
		}
	}
	return nil
}
