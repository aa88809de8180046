package resources

import (
	"strings"

	"github.com/mbot-dev/mbot/internal/lazyregexp"
)

var templateRe = lazyregexp.New(`\{\{\s*(internal|external)\.([A-Za-z0-9_\-]+)\s*\}\}`)

// ExpandTemplate expands "{{internal.<trait>}}" (with optional literal text
// around it) once per trait value. A template whose trait is missing expands
// to nothing, never to its literal text; a string without a template is itself.
func ExpandTemplate(s string, traits map[string][]string) []string {
	trait, prefix, suffix, ok := splitTemplate(s)
	if !ok {
		return nil
	}
	if trait == "" {
		return []string{s}
	}
	var out []string
	for _, v := range traits[trait] {
		if v != "" {
			out = append(out, prefix+v+suffix)
		}
	}
	return out
}

// splitTemplate returns the trait a login template refers to and the text
// around it; trait is empty for a literal login, and ok false for a
// malformed template, which grants nothing.
func splitTemplate(s string) (trait, prefix, suffix string, ok bool) {
	m := templateRe.FindStringSubmatchIndex(s)
	if m == nil {
		return "", "", "", !strings.Contains(s, "{{")
	}
	prefix, suffix, trait = s[:m[0]], s[m[1]:], s[m[4]:m[5]]
	if strings.Contains(suffix, "{{") {
		return "", "", "", false // one template per value, as in Teleport
	}
	return trait, prefix, suffix, true
}
