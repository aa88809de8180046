package resources

import (
	"fmt"
	"strings"
	"sync"

	"github.com/mbot-dev/mbot/internal/lazyregexp"
	"github.com/mbot-dev/mbot/internal/suggest"
)

// fieldOwner is a mapping of a resource in the words of the YAML a user writes.
type fieldOwner struct {
	label  string   // "bot spec"
	fields []string // the known keys, in declaration order
}

// fieldOwners maps the Go types yaml.v3 names in an unknown-field error to
// what the user wrote. Built on first use: reading the fields by reflection
// is no work for a process that never meets an unknown field.
var fieldOwners = sync.OnceValue(func() map[string]fieldOwner {
	return map[string]fieldOwner{
		"RoleSpec":              {"role spec", suggest.YAMLFields(RoleSpec{})},
		"BotSpec":               {"bot spec", suggest.YAMLFields(BotSpec{})},
		"DatabaseSpec":          {"database spec", suggest.YAMLFields(DatabaseSpec{})},
		"KubernetesClusterSpec": {"kubernetes_cluster spec", suggest.YAMLFields(KubernetesClusterSpec{})},
		"TrustedClusterSpec":    {"trusted_cluster spec", suggest.YAMLFields(TrustedClusterSpec{})},
		"TrustedRoot":           {"trusted_cluster spec.root", suggest.YAMLFields(TrustedRoot{})},
		"RoleMapping":           {"a role_map entry", suggest.YAMLFields(RoleMapping{})},
		"LeafClusterSpec":       {"leaf_cluster spec", suggest.YAMLFields(LeafClusterSpec{})},
		"Metadata":              {"metadata", suggest.YAMLFields(Metadata{})},
		"envelope":              {"a resource", suggest.YAMLFields(envelope[BotSpec]{})},
	}
})

// yaml.v3's "field rolez not found in type resources.BotSpec".
var unknownField = lazyregexp.New(`(?s)^(\d+: )field (.*) not found in type resources\.(\w+)(?:\[[^\]]*\])?$`)

// unknownFieldMessage rewrites yaml.v3's unknown-field error (without its
// "line " prefix) in user terms with the nearest known field: "5: bot spec
// has no field rolez (did you mean roles?)". Other errors are returned as
// they are.
func unknownFieldMessage(e string) string {
	m := unknownField.FindStringSubmatch(e)
	if m == nil {
		return e
	}
	owner, ok := fieldOwners()[m[3]]
	if !ok {
		return e
	}
	msg := fmt.Sprintf("%s%s has no field %s", m[1], owner.label, m[2])
	if near := suggest.Nearest(m[2], owner.fields); near != "" {
		return msg + " (did you mean " + near + "?)"
	}
	return msg + " (fields: " + strings.Join(owner.fields, ", ") + ")"
}
