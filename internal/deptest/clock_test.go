package deptest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// TestNoWallClockDurations: production code never turns a time into
// UnixNano (or Unix, UnixMilli, UnixMicro), which drops Go's monotonic
// reading: that is how a wall-clock step once killed healthy workers as
// hung. Durations come from a Clock's Mono() or from time.Time values kept
// whole. Wall time is for people (timestamps they read) and for records
// kept across boots, and those are written with the time package's own
// formats.
func TestNoWallClockDurations(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	banned := map[string]bool{"UnixNano": true, "Unix": true, "UnixMilli": true, "UnixMicro": true}
	checked := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			return nil
		}
		checked++
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || !banned[sel.Sel.Name] || len(call.Args) != 0 {
				return true
			}
			// time.Unix(sec, nsec) builds a time and takes arguments; a
			// method call without arguments reads one out.
			rel, _ := filepath.Rel(root, path)
			t.Errorf("%s:%d: .%s() drops the monotonic reading; keep the time.Time, or use the clock's Mono()", rel, fset.Position(call.Pos()).Line, sel.Sel.Name)
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 20 {
		t.Fatalf("checked only %d files", checked)
	}
}
