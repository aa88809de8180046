package skipreport_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEverySkipReported keeps the summary whole: no test of the module skips
// but through skipreport, and every package whose tests skip (through
// skipreport, or the internal/testservers helpers) has a TestMain that calls
// skipreport.Main, without which its skips would go unreported.
func TestEverySkipReported(t *testing.T) {
	if os.Getenv("SKIPREPORT_CHILD") != "" {
		t.Skip("a child test")
	}
	root := filepath.Join("..", "..")
	skips := map[string]string{}  // package directory -> a file that skips
	testMain := map[string]bool{} // package directory -> has a TestMain
	reports := map[string]bool{}  // package directory -> its tests call skipreport.Main
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || filepath.Dir(path) == "." {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		test := strings.HasSuffix(path, "_test.go")
		if !test && filepath.Dir(rel) != filepath.Join("internal", "testservers") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		dir := filepath.Dir(rel)
		if dir == filepath.Join("internal", "skipreport") {
			return nil // the package itself, and its child tests
		}
		for _, imp := range f.Imports {
			if test && imp.Path.Value == `"github.com/mbot-dev/mbot/internal/testservers"` {
				skips[dir] = rel
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.FuncDecl:
				if n.Name.Name == "TestMain" && n.Recv == nil && test {
					testMain[dir] = true
				}
				if test && callsMain(n) {
					reports[dir] = true // from TestMain, or a function it calls (e2e's runTests)
				}
			case *ast.CallExpr:
				sel, ok := n.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				pkg, _ := sel.X.(*ast.Ident)
				switch {
				case pkg != nil && pkg.Name == "skipreport" && (sel.Sel.Name == "Skip" || sel.Sel.Name == "Skipf"):
					skips[dir] = rel
				case sel.Sel.Name == "Skip" || sel.Sel.Name == "Skipf" || sel.Sel.Name == "SkipNow":
					t.Errorf("%s: %s skips with %s.%s, which the summary does not see; use skipreport.%s(t, ...)",
						fset.Position(n.Pos()), rel, exprName(sel.X), sel.Sel.Name, strings.TrimSuffix(sel.Sel.Name, "Now"))
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(skips) < 5 {
		t.Fatalf("found skips in only %d packages; is the walk broken?", len(skips))
	}
	for dir, file := range skips {
		if dir == filepath.Join("internal", "testservers") {
			continue // a helper; its callers report
		}
		if !testMain[dir] || !reports[dir] {
			t.Errorf("%s: its tests skip (%s) but no TestMain calls skipreport.Main: add func TestMain(m *testing.M) { os.Exit(skipreport.Main(m)) }", dir, file)
		}
	}
}

func callsMain(fn *ast.FuncDecl) bool {
	found := false
	ast.Inspect(fn, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok {
			if pkg, ok := sel.X.(*ast.Ident); ok && pkg.Name == "skipreport" && sel.Sel.Name == "Main" {
				found = true
			}
		}
		return true
	})
	return found
}

func exprName(e ast.Expr) string {
	if id, ok := e.(*ast.Ident); ok {
		return id.Name
	}
	return "t"
}
