// Package configdoc keeps the field tables of the configuration references
// (docs/reference/authority-yaml.md, mbot-yaml.md) generated from the config
// structs, as internal/clidoc does the CLI reference: between the markers
//
//	<!-- fields: NAME -->
//	| field | ... |
//	|---|---|
//	| `path` | ... |
//	<!-- end fields -->
//
// the rows are one per YAML field of the struct, in the struct's order, each
// keeping the page's own cells (default, description) for its field; a field
// the page lacks gets a row of Undocumented cells, and a row for a field the
// struct no longer has is dropped. go generate ./docs rewrites the pages;
// docs' tests check that they are fresh and that no row is Undocumented.
package configdoc

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/client"
)

// Undocumented fills the cells of a field the page has no row for.
const Undocumented = "(undocumented)"

// Table is one generated table: the struct whose fields it lists, how deep
// it goes (0: every leaf, dotted; 1: the top-level fields only), and whether
// it leaves out the fields of inline structs (Own: an output's own fields,
// not those of its types, which the page lists by type).
type Table struct {
	Name  string
	Type  reflect.Type
	Depth int
	Own   bool
}

// Fields are the YAML paths of t's fields, in struct order: inline structs
// flattened; a struct field with YAML fields of its own is entered (its
// leaves listed, storage.dsn) unless depth stops it; lists and maps are
// leaves.
func Fields(t reflect.Type, depth int) []string {
	var out []string
	walk(t, "", 1, depth, false, &out)
	return out
}

// OwnFields are Fields without those of t's inline structs.
func OwnFields(t reflect.Type, depth int) []string {
	var out []string
	walk(t, "", 1, depth, true, &out)
	return out
}

func walk(t reflect.Type, prefix string, level, depth int, own bool, out *[]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() && !f.Anonymous {
			continue
		}
		if strings.Contains(opts, "inline") {
			if !own {
				walk(f.Type, prefix, level, depth, own, out)
			}
			continue
		}
		if name == "" {
			continue
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && hasYAMLFields(ft) && (depth == 0 || level < depth) {
			walk(ft, prefix+name+".", level+1, depth, false, out)
			continue
		}
		*out = append(*out, prefix+name)
	}
}

func hasYAMLFields(t reflect.Type) bool {
	for i := 0; i < t.NumField(); i++ {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); name != "" && name != "-" {
			return true
		}
	}
	return false
}

var rowField = regexp.MustCompile("^\\| `([^`]+)` \\|")

// Regenerate returns page with each table's rows regenerated.
func Regenerate(page string, tables []Table) (string, error) {
	for _, tb := range tables {
		start := "<!-- fields: " + tb.Name + " -->\n"
		const end = "<!-- end fields -->\n"
		i := strings.Index(page, start)
		if i < 0 {
			return "", fmt.Errorf("no %q marker", strings.TrimSpace(start))
		}
		body := page[i+len(start):]
		j := strings.Index(body, end)
		if j < 0 {
			return "", fmt.Errorf("the table %s has no %q", tb.Name, strings.TrimSpace(end))
		}
		lines := strings.Split(strings.TrimSuffix(body[:j], "\n"), "\n")
		if len(lines) < 2 || !strings.HasPrefix(lines[1], "|---") {
			return "", fmt.Errorf("the table %s has no header row and |---| line", tb.Name)
		}
		columns := strings.Count(lines[1], "|") - 1
		cells := map[string]string{}
		for _, l := range lines[2:] {
			if m := rowField.FindStringSubmatch(l); m != nil {
				cells[m[1]] = strings.TrimPrefix(l, m[0])
			}
		}
		var b strings.Builder
		b.WriteString(lines[0] + "\n" + lines[1] + "\n")
		fields := Fields(tb.Type, tb.Depth)
		if tb.Own {
			fields = OwnFields(tb.Type, tb.Depth)
		}
		for _, path := range fields {
			rest, ok := cells[path]
			if !ok {
				rest = strings.Repeat(" "+Undocumented+" |", columns-1)
			}
			fmt.Fprintf(&b, "| `%s` |%s\n", path, rest)
		}
		page = page[:i+len(start)] + b.String() + body[j:]
	}
	return page, nil
}

// Page is a reference page (its path under docs/) and its tables.
type Page struct {
	Path   string
	Tables []Table
}

// Pages are the configuration references whose tables are generated.
var Pages = []Page{
	{"reference/authority-yaml.md", []Table{{Name: "authority.Config", Type: reflect.TypeFor[authority.Config]()}}},
	{"reference/mbot-yaml.md", []Table{
		{Name: "client.Config", Type: reflect.TypeFor[client.Config](), Depth: 1},
		{Name: "client.Output", Type: reflect.TypeFor[client.Output](), Depth: 1, Own: true},
	}},
}
