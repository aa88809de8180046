package resources

import (
	"maps"
	"strings"

	"github.com/mbot-dev/mbot/internal/lazyregexp"
)

var templateRe = lazyregexp.New(`\{\{\s*(internal|external|mbot)\.([A-Za-z0-9_\-]+)\s*\}\}`)

// The {{mbot.<variable>}} templates: facts about the identity a
// certificate is signed for, set by the authority, never by a trait. They
// let one role grant a leaf's own bots and the root bots it exchanges for
// different values (docs/reference/resources.md).
const (
	// TemplateBot is the bot's name: the leaf's own bot's, or the root bot's.
	TemplateBot = "mbot.bot"
	// TemplateCluster is the cluster the bot belongs to: this authority's
	// cluster_name for its own bots, the root's for an exchanged identity.
	TemplateCluster = "mbot.cluster"
	// TemplateRootCluster is the root's cluster_name, for an exchanged
	// identity only: it expands to nothing for the authority's own bots,
	// so that an entry using it grants them nothing.
	TemplateRootCluster = "mbot.root_cluster"
)

var templateVariables = map[string]bool{TemplateBot: true, TemplateCluster: true, TemplateRootCluster: true}

// IdentityTraits are the values templates expand to for bot: its traits
// ({{internal.<trait>}}, {{external.<trait>}}) and the {{mbot.*}}
// variables. cluster is the authority's cluster_name; root is the root's
// for an exchanged identity, "" for the authority's own bots. Trait names
// hold no '.', so no trait can pass for a variable.
func IdentityTraits(traits map[string][]string, bot, cluster, root string) map[string][]string {
	out := maps.Clone(traits)
	if out == nil {
		out = map[string][]string{}
	}
	out[TemplateBot] = []string{bot}
	out[TemplateCluster] = []string{cluster}
	if root != "" {
		out[TemplateCluster] = []string{root}
		out[TemplateRootCluster] = []string{root}
	}
	return out
}

// ExpandTemplate expands "{{internal.<trait>}}" or "{{mbot.<variable>}}"
// (with optional literal text around it) once per value. A template whose
// trait is missing expands to nothing, never to its literal text; a string
// without a template is itself.
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

// splitTemplate returns the trait a login template refers to (a variable
// as "mbot.<name>") and the text around it; trait is empty for a literal
// login, and ok false for a malformed template, which grants nothing.
func splitTemplate(s string) (trait, prefix, suffix string, ok bool) {
	m := templateRe.FindStringSubmatchIndex(s)
	if m == nil {
		return "", "", "", !strings.Contains(s, "{{")
	}
	prefix, suffix, trait = s[:m[0]], s[m[1]:], s[m[4]:m[5]]
	if strings.Contains(suffix, "{{") {
		return "", "", "", false // one template per value, as in Teleport
	}
	if ns := s[m[2]:m[3]]; ns == "mbot" {
		trait = ns + "." + trait
		if !templateVariables[trait] {
			return "", "", "", false
		}
	}
	return trait, prefix, suffix, true
}

// TemplateTrait is the trait (or "mbot.<variable>") a template refers to,
// "" for a literal value or a malformed template.
func TemplateTrait(s string) string {
	trait, _, _, _ := splitTemplate(s)
	return trait
}
