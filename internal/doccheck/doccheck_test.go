package doccheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// moduleRoot is the repository's root, two levels up from this package.
const moduleRoot = "../.."

// sources calls fn with every non-test Go file of the module, parsed with
// its comments; vendored and generated trees (node_modules, dot dirs) are
// skipped.
func sources(t *testing.T, fn func(path string, f *ast.File, fset *token.FileSet)) {
	t.Helper()
	fset := token.NewFileSet()
	err := filepath.WalkDir(moduleRoot, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); n == "node_modules" || (strings.HasPrefix(n, ".") && p != moduleRoot) || n == "testdata" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.ParseComments)
		if err != nil {
			return err
		}
		fn(p, f, fset)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestEveryExportedNameHasADocComment: exported functions, methods of
// exported types, types, variables and constants of every library package
// carry a doc comment (a const or var group's comment covers its names).
func TestEveryExportedNameHasADocComment(t *testing.T) {
	var missing []string
	sources(t, func(p string, f *ast.File, fset *token.FileSet) {
		if f.Name.Name == "main" {
			return
		}
		for _, d := range f.Decls {
			for _, name := range undocumented(d) {
				missing = append(missing, fset.Position(name.Pos()).String()+" "+name.Name)
			}
		}
	})
	if len(missing) > 0 {
		t.Errorf("%d exported names without a doc comment:\n%s", len(missing), strings.Join(missing, "\n"))
	}
}

// undocumented returns the exported names d declares without a doc comment.
func undocumented(d ast.Decl) []*ast.Ident {
	var out []*ast.Ident
	switch d := d.(type) {
	case *ast.FuncDecl:
		if d.Name.IsExported() && d.Doc == nil && exportedRecv(d) {
			out = append(out, d.Name)
		}
	case *ast.GenDecl:
		for _, s := range d.Specs {
			switch s := s.(type) {
			case *ast.TypeSpec:
				if s.Name.IsExported() && d.Doc == nil && s.Doc == nil {
					out = append(out, s.Name)
				}
			case *ast.ValueSpec:
				for _, n := range s.Names {
					if n.IsExported() && d.Doc == nil && s.Doc == nil && s.Comment == nil {
						out = append(out, n)
					}
				}
			}
		}
	}
	return out
}

// exportedRecv reports whether fn is a function or a method of an exported
// type: a method of an unexported type is not in the package's API.
func exportedRecv(fn *ast.FuncDecl) bool {
	if fn.Recv == nil || len(fn.Recv.List) == 0 {
		return true
	}
	t := fn.Recv.List[0].Type
	if s, ok := t.(*ast.StarExpr); ok {
		t = s.X
	}
	if g, ok := t.(*ast.IndexExpr); ok {
		t = g.X
	}
	id, ok := t.(*ast.Ident)
	return !ok || id.IsExported()
}

// outsideDocs are the shapes of a citation of a document that lives
// outside the repository: the code documents itself.
var outsideDocs = regexp.MustCompile(`\bSPEC(\.md)?\b|\.\./shared/|\bSTYLE\.md\b`)

// TestNoCommentCitesADocumentOutsideTheRepository: comments explain in
// place, never by pointing at a specification the reader does not have.
func TestNoCommentCitesADocumentOutsideTheRepository(t *testing.T) {
	var found []string
	sources(t, func(p string, f *ast.File, fset *token.FileSet) {
		for _, g := range f.Comments {
			for _, c := range g.List {
				if outsideDocs.MatchString(c.Text) {
					found = append(found, fset.Position(c.Pos()).String()+": "+c.Text)
				}
			}
		}
	})
	if len(found) > 0 {
		t.Errorf("comments citing documents outside the repository:\n%s", strings.Join(found, "\n"))
	}
}

// TestTheWalkSeesTheModule: the checks above read the module's own
// sources (a wrong root would pass them vacuously).
func TestTheWalkSeesTheModule(t *testing.T) {
	if _, err := os.Stat(filepath.Join(moduleRoot, "go.mod")); err != nil {
		t.Fatalf("no go.mod at %s: %v", moduleRoot, err)
	}
	seen := map[string]bool{}
	sources(t, func(p string, f *ast.File, fset *token.FileSet) { seen[f.Name.Name] = true })
	for _, pkg := range []string{"gateway", "openai", "proxy", "provider", "main"} {
		if !seen[pkg] {
			t.Errorf("package %s not seen", pkg)
		}
	}
}
