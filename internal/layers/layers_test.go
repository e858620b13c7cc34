package layers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// table is the layers, lowest first (see doc.go). A pattern is an import
// path, or "path/..." for the path and every package below it; the longest
// pattern that matches a package gives its layer. A listed package that
// does not exist is fine.
var table = [][]string{
	0: {"nanogate/internal/...", "nanogate/catalog", "nanogate/metrics", "nanogate/telemetry"},
	1: {"nanogate/config"},
	2: {"nanogate/auth", "nanogate/keys", "nanogate/upstream", "nanogate/ratelimit", "nanogate/accounting", "nanogate/images",
		"nanogate/images/signatures"},
	3: {"nanogate/provider"},
	4: {"nanogate/router"},
	5: {"nanogate/gateway"},
	6: {"nanogate/openai"},
	7: {"nanogate/proxy", "nanogate/batch", "nanogate/dashboard"},
	8: {"nanogate", "nanogate/e2e", "nanogate/compat/...", "nanogate/bench/...", "nanogate/catalog/gen",
		"nanogate/internal/fakeup/cmd/...", "nanogate/deploy"},
}

// top is the layer of wiring and harnesses, the only one that may import
// the test helpers outside tests.
const top = 8

// testHelpers may be imported by _test.go files and by layer top only.
var testHelpers = []string{"nanogate/internal/fakeup/...", "nanogate/internal/gwtest/...", "nanogate/internal/redistest/..."}

func matches(pattern, path string) bool {
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return path == base || strings.HasPrefix(path, base+"/")
	}
	return path == pattern
}

// layerOf is the layer of the longest pattern of the table matching path,
// -1 for none.
func layerOf(path string) int {
	layer, longest := -1, -1
	for l, patterns := range table {
		for _, p := range patterns {
			if matches(p, path) && len(p) > longest {
				layer, longest = l, len(p)
			}
		}
	}
	return layer
}

func isTestHelper(path string) bool {
	for _, p := range testHelpers {
		if matches(p, path) {
			return true
		}
	}
	return false
}

// pkg is what go list says of a package of the module.
type pkg struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
	Error        *struct{ Err string }
}

// systems are the GOOS values whose build constraints the tests follow: a
// file for one system alone may import what the others do not.
var systems = []string{"linux", "darwin", "windows"}

var listed sync.Map // GOOS -> func() ([]pkg, error)

// packages lists the module's packages as built for goos, once per test
// binary.
func packages(t *testing.T, goos string) []pkg {
	t.Helper()
	f, _ := listed.LoadOrStore(goos, sync.OnceValues(func() ([]pkg, error) { return goList(goos) }))
	pkgs, err := f.(func() ([]pkg, error))()
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

func goList(goos string) ([]pkg, error) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("the layers are read with go list: %w", err)
	}
	cmd := exec.Command(gobin, "list", "-e", "-json=ImportPath,Imports,TestImports,XTestImports,Error", "nanogate/...")
	cmd.Env = append(os.Environ(), "GOOS="+goos, "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("GOOS=%s go list: %v\n%s", goos, err, stderr.Bytes())
	}
	var pkgs []pkg
	for dec := json.NewDecoder(bytes.NewReader(out)); ; {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			return pkgs, nil
		} else if err != nil {
			return nil, err
		}
		if p.Error != nil {
			return nil, fmt.Errorf("GOOS=%s go list %s: %s", goos, p.ImportPath, p.Error.Err)
		}
		pkgs = append(pkgs, p)
	}
}

// forEachSystem runs check on the module's packages as built for each of
// systems.
func forEachSystem(t *testing.T, check func(t *testing.T, pkgs []pkg)) {
	for _, goos := range systems {
		t.Run(goos, func(t *testing.T) { check(t, packages(t, goos)) })
	}
}

func TestEveryPackageHasALayer(t *testing.T) {
	forEachSystem(t, func(t *testing.T, pkgs []pkg) {
		for _, p := range pkgs {
			if layerOf(p.ImportPath) < 0 {
				t.Errorf("%s has no layer: add it to the table in internal/layers/layers_test.go "+
					"(and to the list in internal/layers/doc.go)", p.ImportPath)
			}
		}
	})
}

// TestNoPackageImportsAHigherLayer checks the imports of the packages'
// own files; tests may reach higher.
func TestNoPackageImportsAHigherLayer(t *testing.T) {
	forEachSystem(t, func(t *testing.T, pkgs []pkg) {
		for _, p := range pkgs {
			from := layerOf(p.ImportPath)
			for _, imp := range p.Imports {
				if to := layerOf(imp); isModule(imp) && to > from {
					t.Errorf("%s (L%d) imports %s (L%d): a package imports only its own layer or lower ones "+
						"(internal/layers/doc.go); move the code down, or the import up", p.ImportPath, from, imp, to)
				}
			}
		}
	})
}

func TestTestHelpersAreImportedByTestsOnly(t *testing.T) {
	forEachSystem(t, func(t *testing.T, pkgs []pkg) {
		for _, p := range pkgs {
			if layerOf(p.ImportPath) == top {
				continue
			}
			for _, imp := range p.Imports {
				if isTestHelper(imp) {
					t.Errorf("%s imports the test helper %s outside its _test.go files: only tests and "+
						"L%d (wiring and harnesses) may", p.ImportPath, imp, top)
				}
			}
		}
	})
}

func isModule(path string) bool { return path == "nanogate" || strings.HasPrefix(path, "nanogate/") }

func TestTheLongestPatternGivesTheLayer(t *testing.T) {
	for path, want := range map[string]int{
		"nanogate":                          8,
		"nanogate/internal/jsonx":           0,
		"nanogate/internal/logsink":         0,
		"nanogate/internal/fakeup":          0,
		"nanogate/internal/fakeup/cmd/fake": 8,
		"nanogate/catalog":                  0,
		"nanogate/catalog/gen":              8,
		"nanogate/images/signatures":        2,
		"nanogate/bench/load/cmd/load":      8,
		"nanogate/proxyx":                   -1,
		"nanogate/new":                      -1,
	} {
		if got := layerOf(path); got != want {
			t.Errorf("layerOf(%s) = %d, want %d", path, got, want)
		}
	}
}
