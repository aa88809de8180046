package docs

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/client"
	"github.com/mbot-dev/mbot/internal/configdoc"
	"github.com/mbot-dev/mbot/joiners"
)

// yamlFields returns the dotted yaml paths of every field of t: a struct's
// fields by their yaml names, inline structs flattened, slices and maps
// of structs entered (outputs.type).
func yamlFields(t reflect.Type, prefix string, out map[string]bool) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() && !f.Anonymous {
			continue
		}
		if strings.Contains(opts, "inline") {
			yamlFields(f.Type, prefix, out)
			continue
		}
		if name == "" {
			continue // not read from YAML
		}
		path := prefix + name
		out[path] = true
		yamlFields(f.Type, path+".", out)
	}
}

// documented says whether page documents the field at path: its name (or
// its dotted path) in backticks, or as a key of a YAML example.
func documented(page, path string) bool {
	name := path[strings.LastIndex(path, ".")+1:]
	if strings.Contains(page, "`"+path+"`") || strings.Contains(page, "`"+path+".") || strings.Contains(page, "`"+name+"`") || strings.Contains(page, "`"+name+":") {
		return true
	}
	return regexp.MustCompile(`(?m)^\s*(- )?` + regexp.QuoteMeta(name) + `:`).MatchString(page)
}

// TestConfigReferences checks every field of the authority.yaml and
// mbot.yaml structs against docs/reference/authority-yaml.md and
// docs/reference/mbot-yaml.md: a field the loader reads and the page does
// not name is a field users cannot find.
func TestConfigReferences(t *testing.T) {
	for _, tc := range []struct {
		page string
		typ  reflect.Type
	}{
		{"reference/authority-yaml.md", reflect.TypeFor[authority.Config]()},
		{"reference/mbot-yaml.md", reflect.TypeFor[client.Config]()},
	} {
		data, err := os.ReadFile(tc.page)
		if err != nil {
			t.Fatal(err)
		}
		fields := map[string]bool{}
		yamlFields(tc.typ, "", fields)
		if len(fields) < 8 {
			t.Fatalf("%s: found only %d fields; is the walk broken?", tc.typ, len(fields))
		}
		for path := range fields {
			if !documented(string(data), path) {
				t.Errorf("docs/%s does not document %s (a field of %s)", tc.page, path, tc.typ)
			}
		}
	}
}

// TestConfigTablesGenerated checks that the field tables of the
// configuration references are as go generate ./docs writes them from the
// config structs (internal/configdoc): a row per field, in the struct's
// order, and none left Undocumented.
func TestConfigTablesGenerated(t *testing.T) {
	for _, p := range configdoc.Pages {
		data, err := os.ReadFile(p.Path)
		if err != nil {
			t.Fatal(err)
		}
		want, err := configdoc.Regenerate(string(data), p.Tables)
		if err != nil {
			t.Fatalf("docs/%s: %v", p.Path, err)
		}
		if want != string(data) {
			t.Errorf("docs/%s is stale: run go generate ./docs", p.Path)
		}
		if strings.Contains(want, configdoc.Undocumented) {
			t.Errorf("docs/%s has fields marked %s: describe them", p.Path, configdoc.Undocumented)
		}
	}
}

// TestJoinMethodsListed checks that the pages that list the join methods
// list every one, in the order --help gives them.
func TestJoinMethodsListed(t *testing.T) {
	var quoted []string
	for _, m := range joiners.Methods() {
		quoted = append(quoted, "`"+m+"`")
	}
	want := strings.Join(quoted, ", ")
	for _, page := range []string{"issue.md", "reference/mbot-yaml.md"} {
		data, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), want) {
			t.Errorf("docs/%s does not list the join methods as mbot issue --help does: want %s", page, want)
		}
	}
}
