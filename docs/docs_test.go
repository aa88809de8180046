package docs

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/client"
	"github.com/mbot-dev/mbot/commands"
	"github.com/mbot-dev/mbot/internal/clidoc"
	"gopkg.in/yaml.v3"
)

// notYetMerged are pages that other branches add in parallel and that this
// branch's pages already link to. The merge that brings them in empties
// this list; a link to any other missing file fails TestLinks.
var notYetMerged = []string{}

// notMbotConfig marks a YAML example that is not mbot configuration (a CI
// platform's file, a Kubernetes manifest, a fragment): it is only checked to
// be YAML.
const notMbotConfig = "# not-mbot-config"

// markdownFiles returns README.md and every Markdown file under docs/,
// relative to the repository root, with their contents.
func markdownFiles(t *testing.T) map[string]string {
	t.Helper()
	files := map[string]string{}
	read := func(rel string) {
		data, err := os.ReadFile(filepath.Join("..", rel))
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.ToSlash(rel)] = string(data)
	}
	read("README.md")
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".md") {
			read(filepath.Join("docs", path))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// block is one fenced code block of a Markdown file.
type block struct {
	file string
	line int    // of the opening fence
	info string // the fence's info string: yaml, sh, ...
	body string
}

var fence = regexp.MustCompile("^(\\s*)(```+|~~~+)\\s*(.*)$")

func codeBlocks(file, text string) []block {
	var (
		out   []block
		open  *block
		delim string
		lines []string
	)
	for i, l := range strings.Split(text, "\n") {
		m := fence.FindStringSubmatch(l)
		if open == nil {
			if m != nil {
				open = &block{file: file, line: i + 1, info: strings.TrimSpace(m[3])}
				delim, lines = m[2], nil
			}
			continue
		}
		if m != nil && strings.HasPrefix(m[2], delim) && m[3] == "" {
			// Blocks nested in list items are indented like their fence.
			indent := len(fence.FindStringSubmatch(l)[1])
			for j, bl := range lines {
				if len(bl) >= indent && strings.TrimSpace(bl[:indent]) == "" {
					lines[j] = bl[indent:]
				}
			}
			open.body = strings.Join(lines, "\n") + "\n"
			out = append(out, *open)
			open = nil
			continue
		}
		lines = append(lines, l)
	}
	return out
}

// topLevelKey matches a key at the top level of a YAML document.
var topLevelKey = regexp.MustCompile(`(?m)^([a-z_]+):`)

// TestYAMLExamples loads every ```yaml block of README.md and docs/ with the
// loader mbot uses for that kind of file, chosen by its top-level keys:
// kind: → resources (mbot apply, authority.yaml resources:), outputs: or
// authority: → mbot.yaml, cluster_name: or listen: → authority.yaml. A
// block marked "# not-mbot-config" is only parsed as YAML.
func TestYAMLExamples(t *testing.T) {
	n := 0
	for file, text := range markdownFiles(t) {
		for _, b := range codeBlocks(file, text) {
			if lang, _, _ := strings.Cut(b.info, " "); lang != "yaml" && lang != "yml" {
				continue
			}
			n++
			name := b.file + ":" + strconv.Itoa(b.line)
			t.Run(name, func(t *testing.T) {
				keys := map[string]bool{}
				for _, m := range topLevelKey.FindAllStringSubmatch(b.body, -1) {
					keys[m[1]] = true
				}
				var err error
				switch {
				case strings.Contains(b.body, notMbotConfig):
					dec := yaml.NewDecoder(strings.NewReader(b.body))
					for err == nil {
						var v any
						err = dec.Decode(&v)
					}
					if err.Error() == "EOF" {
						err = nil
					}
				case keys["kind"]:
					var res []resources.Resource
					res, err = resources.Parse(name, []byte(b.body))
					if err == nil && len(res) == 0 {
						t.Fatalf("%s: no resource in the block", name)
					}
					if err == nil {
						err = compileJoinTokens(res)
					}
				case keys["outputs"] || keys["authority"]:
					_, err = client.ParseConfig(name, []byte(b.body))
				case keys["cluster_name"] || keys["listen"]:
					_, err = authority.ParseConfig(filepath.Join(t.TempDir(), "authority.yaml"), []byte(b.body))
				default:
					t.Fatalf("%s: cannot tell which mbot file this YAML is (no top-level kind:, outputs:, authority:, cluster_name: or listen:); "+
						"if it is not mbot configuration, add a line %q to the block", name, notMbotConfig)
				}
				if err != nil {
					t.Errorf("%s: the example does not load:\n%v\n--- block:\n%s", name, err, b.body)
				}
			})
		}
	}
	if n < 20 {
		t.Errorf("found only %d YAML examples; is the block parser broken?", n)
	}
}

// compileJoinTokens checks each join token's method section as the
// authority does when it loads the token: the verifier compiles the allow
// rules (fields, owner pinning, issuer URLs) without fetching anything.
func compileJoinTokens(res []resources.Resource) error {
	for _, r := range res {
		if r.JoinToken == nil {
			continue
		}
		tok := r.JoinToken
		m, ok := verify.Methods[tok.Spec.Method]
		if !ok {
			return fmt.Errorf("join token %s: method %q is not one of %v", tok.Metadata.Name, tok.Spec.Method, verify.MethodNames())
		}
		if _, err := m.Compile(tok.Metadata.Name, tok.Spec.Section(), &verify.Env{Audience: "acme"}); err != nil {
			return fmt.Errorf("join token %s: %w", tok.Metadata.Name, err)
		}
	}
	return nil
}

// refusalCodes returns every ErrorCode constant defined in the module's
// non-test Go files, parsed from source so that a code added anywhere (its
// home is identity/api.go and authority/refusals.go) is found.
func refusalCodes(t *testing.T) map[string]string {
	t.Helper()
	codes := map[string]string{}
	fset := token.NewFileSet()
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != ".." || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				if !isErrorCodeType(vs.Type) {
					continue
				}
				for i, v := range vs.Values {
					lit, ok := v.(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						continue
					}
					s, _ := strconv.Unquote(lit.Value)
					codes[s] = fset.Position(vs.Names[i].Pos()).String()
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return codes
}

func isErrorCodeType(e ast.Expr) bool {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name == "ErrorCode"
	case *ast.SelectorExpr:
		return e.Sel.Name == "ErrorCode"
	}
	return false
}

// documentedCode is a troubleshooting.md heading for one refusal code.
var documentedCode = regexp.MustCompile("(?m)^### `([a-z_]+)`")

// TestRefusalCodesDocumented checks that every refusal code the API can
// answer with has a section in troubleshooting.md, and that every section
// is for a code that exists.
func TestRefusalCodesDocumented(t *testing.T) {
	codes := refusalCodes(t)
	if len(codes) < 15 {
		t.Fatalf("found only %d ErrorCode constants; is the source scan broken? %v", len(codes), codes)
	}
	data, err := os.ReadFile("troubleshooting.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range documentedCode.FindAllStringSubmatch(string(data), -1) {
		if documented[m[1]] {
			t.Errorf("troubleshooting.md documents %s twice", m[1])
		}
		documented[m[1]] = true
	}
	for code, where := range codes {
		if !documented[code] {
			t.Errorf("refusal code %s (%s) is not documented: add a section \"### `%s`\" with its cause and fix to docs/troubleshooting.md", code, where, code)
		}
	}
	for code := range documented {
		if _, ok := codes[code]; !ok {
			t.Errorf("docs/troubleshooting.md documents %s, which no ErrorCode constant defines: remove it or fix its name", code)
		}
	}
}

// TestCLIReference fails when docs/reference/cli.md is not what the
// command definitions render.
func TestCLIReference(t *testing.T) {
	want := clidoc.Markdown(commands.App())
	got, err := os.ReadFile("reference/cli.md")
	if err != nil {
		t.Fatalf("%v; create it with %s", err, clidoc.Regenerate)
	}
	if string(got) != want {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(want, "\n")
		i := 0
		for i < len(gl) && i < len(wl) && gl[i] == wl[i] {
			i++
		}
		at := func(l []string) string {
			if i < len(l) {
				return l[i]
			}
			return "(end of file)"
		}
		t.Fatalf("docs/reference/cli.md is stale: the commands changed since it was generated; run %s and commit it.\n"+
			"first difference at line %d:\n  file:     %s\n  commands: %s", clidoc.Regenerate, i+1, at(gl), at(wl))
	}
	for _, name := range clidoc.Names(commands.App()) {
		if !bytes.Contains(got, []byte("`"+name+"`")) {
			t.Errorf("docs/reference/cli.md does not mention %s", name)
		}
	}
}

// mdLink matches an inline Markdown link's target.
var mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// prose returns text without its fenced code blocks.
func prose(text string) string {
	var out []string
	inCode := false
	for _, l := range strings.Split(text, "\n") {
		if fence.MatchString(l) {
			inCode = !inCode
			continue
		}
		if !inCode {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// anchors returns the ids GitHub gives the headings of a Markdown text:
// lower case, punctuation dropped, spaces made hyphens, repeats numbered.
func anchors(text string) map[string]bool {
	ids := map[string]bool{}
	seen := map[string]int{}
	for _, l := range strings.Split(prose(text), "\n") {
		if !strings.HasPrefix(l, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(l, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(h) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				b.WriteRune(r)
			}
		}
		id := b.String()
		if n := seen[id]; n > 0 {
			ids[fmt.Sprintf("%s-%d", id, n)] = true
		} else {
			ids[id] = true
		}
		seen[id]++
	}
	return ids
}

// TestLinks checks that every relative link of README.md and docs/ points
// at a file that exists (or one of notYetMerged) and a heading of it that
// exists, and that no page sends a
// reader to SPEC sections they do not have.
func TestLinks(t *testing.T) {
	pending := map[string]bool{}
	for _, p := range notYetMerged {
		pending[p] = true
		if _, err := os.Stat(filepath.Join("..", p)); err == nil {
			t.Errorf("%s exists now: remove it from notYetMerged in docs/docs_test.go", p)
		}
	}
	files := markdownFiles(t)
	names := make([]string, 0, len(files))
	for f := range files {
		names = append(names, f)
	}
	sort.Strings(names)
	for _, file := range names {
		text := files[file]
		// Links inside code blocks are code, not links.
		text = prose(text)
		if strings.Contains(text, "SPEC §") {
			t.Errorf("%s refers to \"SPEC §\", a file readers do not have: say it in the page or link a page of docs/", file)
		}
		for _, m := range mdLink.FindAllStringSubmatch(text, -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			target, fragment, _ := strings.Cut(target, "#")
			rel := file
			if target != "" {
				rel = filepath.ToSlash(filepath.Clean(filepath.Join(filepath.Dir(file), target)))
			}
			if _, err := os.Stat(filepath.Join("..", rel)); err != nil {
				if !pending[rel] {
					t.Errorf("%s links to %s, which does not exist", file, m[1])
				}
				continue
			}
			if linked, ok := files[rel]; ok && fragment != "" && !anchors(linked)[fragment] {
				t.Errorf("%s links to %s, but %s has no heading with the anchor #%s", file, m[1], rel, fragment)
			}
		}
	}
	// The index lists every page, the pending ones included.
	index := files["docs/README.md"]
	for _, f := range append(slices.Clone(names), notYetMerged...) {
		if !strings.HasPrefix(f, "docs/") || f == "docs/README.md" {
			continue
		}
		if !strings.Contains(index, "("+strings.TrimPrefix(f, "docs/")+")") {
			t.Errorf("docs/README.md does not link to %s", f)
		}
	}
}

// TestAnchors checks the heading ids TestLinks resolves fragments against
// on headings of the kinds the docs use.
func TestAnchors(t *testing.T) {
	got := anchors("# Title\n## Services: `application` (X.509-SVID) and `workload-identity-jwt`\n```sh\n# not a heading\n```\n### `mbot authority start`\n## Title\n")
	for _, want := range []string{"title", "services-application-x509-svid-and-workload-identity-jwt", "mbot-authority-start", "title-1"} {
		if !got[want] {
			t.Errorf("no anchor %q in %v", want, got)
		}
	}
	if got["not-a-heading"] {
		t.Error("a comment in a code block was taken for a heading")
	}
}

// TestNoRepeatedParagraphs fails when a page prints one paragraph of prose
// twice (a merge that kept both sides).
func TestNoRepeatedParagraphs(t *testing.T) {
	for file, text := range markdownFiles(t) {
		seen := map[string]bool{}
		for _, p := range strings.Split(prose(text), "\n\n") {
			p = strings.TrimSpace(p)
			if len(p) < 80 || strings.HasPrefix(p, "|") {
				continue
			}
			if seen[p] {
				t.Errorf("%s prints this paragraph twice:\n%s", file, p)
			}
			seen[p] = true
		}
	}
}
