// Package suggest finds the known name a mistyped one was meant to be: the
// nearest field of a resource or configuration file, command or flag, for
// a "did you mean ...?" in the message that refuses it.
package suggest

import (
	"reflect"
	"strings"
)

// Nearest returns the candidate closest to s by edit distance, if it is
// close enough to be a typo: at most 2 edits, or a third of the longer name.
func Nearest(s string, candidates []string) string {
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

// YAMLFields lists the yaml keys of a struct's fields, in declaration order,
// with the keys of its inline structs in their place.
func YAMLFields(v any) []string {
	var out []string
	t := reflect.TypeOf(v)
	for i := range t.NumField() {
		name, opts, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		switch {
		case opts == "inline" && t.Field(i).Type.Kind() == reflect.Struct:
			out = append(out, YAMLFields(reflect.Zero(t.Field(i).Type).Interface())...)
		case name != "" && name != "-":
			out = append(out, name)
		}
	}
	return out
}
