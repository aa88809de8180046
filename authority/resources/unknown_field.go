package resources

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/mbot-dev/mbot/internal/lazyregexp"
)

// fieldOwner is a mapping of a resource in the words of the YAML a user writes.
type fieldOwner struct {
	label  string   // "bot spec"
	fields []string // the known keys, in declaration order
}

// fieldOwners maps the Go types yaml.v3 names in an unknown-field error to
// what the user wrote.
var fieldOwners = map[string]fieldOwner{
	"RoleSpec":              {"role spec", yamlFields(RoleSpec{})},
	"BotSpec":               {"bot spec", yamlFields(BotSpec{})},
	"DatabaseSpec":          {"database spec", yamlFields(DatabaseSpec{})},
	"KubernetesClusterSpec": {"kubernetes_cluster spec", yamlFields(KubernetesClusterSpec{})},
	"TrustedClusterSpec":    {"trusted_cluster spec", yamlFields(TrustedClusterSpec{})},
	"TrustedRoot":           {"trusted_cluster spec.root", yamlFields(TrustedRoot{})},
	"RoleMapping":           {"a role_map entry", yamlFields(RoleMapping{})},
	"LeafClusterSpec":       {"leaf_cluster spec", yamlFields(LeafClusterSpec{})},
	"Metadata":              {"metadata", yamlFields(Metadata{})},
	"envelope":              {"a resource", yamlFields(envelope[BotSpec]{})},
}

// yamlFields lists the yaml keys of a struct's fields.
func yamlFields(v any) []string {
	var out []string
	t := reflect.TypeOf(v)
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name != "" && name != "-" {
			out = append(out, name)
		}
	}
	return out
}

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
	owner, ok := fieldOwners[m[3]]
	if !ok {
		return e
	}
	msg := fmt.Sprintf("%s%s has no field %s", m[1], owner.label, m[2])
	if near := nearest(m[2], owner.fields); near != "" {
		return msg + " (did you mean " + near + "?)"
	}
	return msg + " (fields: " + strings.Join(owner.fields, ", ") + ")"
}

// nearest returns the candidate closest to s by edit distance, if it is
// close enough to be a typo: at most 2 edits, or a third of the longer name.
func nearest(s string, candidates []string) string {
	if len(s) > 64 {
		return "" // no typo is that long; and the distance is quadratic
	}
	best, bestD := "", -1
	for _, c := range candidates {
		d := editDistance(strings.ToLower(s), c)
		if d <= max(2, max(len(s), len(c))/3) && (bestD < 0 || d < bestD) {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, by bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
