// Package deptest enforces the direction of dependencies between the
// repository's packages, so that layering survives refactors.
package deptest

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "appliance"

// allowed lists, for each package, the packages of this module its
// production code may import. A package missing here may import nothing of
// the module.
var allowed = map[string][]string{
	"internal/clock":      {},
	"internal/ring":       {},
	"internal/atomicfile": {},
	"internal/testutil":   {},
	"internal/spawn":      {},
	"config":              {},
	"supervisor":          {"internal/clock", "internal/ring", "internal/spawn"},
	"media":               {"internal/clock", "supervisor", "health"},
	"control":             {},
	"hw":                  {"internal/clock", "health"},
	"health":              {"internal/clock", "internal/ring"},
	"watchdog":            {"internal/clock", "internal/atomicfile", "health", "supervisor"},
	"failover":            {"internal/clock"},
	"pairnet":             {"internal/clock", "failover"},
	"lab":                 {"internal/clock", "internal/spawn", "internal/testutil", "media", "config", "control"},
	"status":              {"internal/clock", "media", "supervisor", "health", "hw", "watchdog", "failover", "control"},
	"update":              {"internal/atomicfile"},
	"update/mkbundle":     {"update"},
	"cmd/appliance":       {"*"},
}

func TestDependencyDirection(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "docs") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		pkg := filepath.ToSlash(rel)
		isTest := strings.HasSuffix(path, "_test.go")
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			return nil
		}
		checked++
		for _, imp := range f.Imports {
			ip, _ := strconv.Unquote(imp.Path.Value)
			if !isTest && ip == "testing" && pkg != "internal/testutil" {
				t.Errorf("%s: production code imports testing", path)
			}
			if !strings.HasPrefix(ip, module+"/") {
				continue
			}
			dep := strings.TrimPrefix(ip, module+"/")
			if strings.HasPrefix(dep, "cmd/") {
				t.Errorf("%s imports %s: nothing imports a command", path, ip)
				continue
			}
			if isTest || dep == pkg {
				continue
			}
			if !permitted(pkg, dep) {
				t.Errorf("%s imports %s: %s may import only %v", path, ip, pkg, allowed[pkg])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 20 {
		t.Fatalf("checked only %d files; is the walk rooted at the repository?", checked)
	}
}

func permitted(pkg, dep string) bool {
	for _, a := range allowed[pkg] {
		if a == "*" || a == dep {
			return true
		}
	}
	return false
}
