package health

import (
	"bufio"
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestKindsAreWellDeclared(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range Kinds() {
		if k.Name == "" || strings.ContainsAny(k.Name, ": ") || seen[k.Name] {
			t.Errorf("%q: a name must be unique, non-empty, without spaces or \":\"", k.Name)
		}
		seen[k.Name] = true
		if k.Scoped() && (!strings.HasPrefix(k.Subject, "<") || !strings.HasSuffix(k.Subject, ">")) {
			t.Errorf("%s: subject %q is not written as <placeholder>", k.Name, k.Subject)
		}
		if k.Severity != Warning && k.Severity != Critical {
			t.Errorf("%s: severity %v, want warning or critical", k.Name, k.Severity)
		}
		if k.Graded && k.Severity != Critical {
			t.Errorf("%s: graded kinds go from warning to critical", k.Name)
		}
		if k.Raised == "" || k.Clears == "" || strings.Contains(k.Raised+k.Clears, "|") {
			t.Errorf("%s: operator text must say when it is raised and when it clears, without \"|\"", k.Name)
		}
		name := k.For()
		if k.Scoped() {
			name = k.For("x")
		}
		if got, ok := KindOf(name); !ok || got != k {
			t.Errorf("KindOf(%q) = %v, %v; want its own declaration", name, got.Name, ok)
		}
	}
	if len(seen) != 25 {
		t.Errorf("%d kinds declared; this test knows 25: check the new one is in the operator guide and raised somewhere", len(seen))
	}
}

func TestNamesAndLookup(t *testing.T) {
	tests := []struct {
		name    string
		kind    Kind // zero: not declared
		subject string
	}{
		{LinkDown.For("eth0"), LinkDown, "eth0"},
		{Temp.For("coretemp/Core 0"), Temp, "coretemp/Core 0"},
		{OutputFailing.For("news", "198.18.0.1:5004"), OutputFailing, "news:198.18.0.1:5004"},
		{OutputFailing.For("news", "[2001:db8::1]:5004"), OutputFailing, "news:[2001:db8::1]:5004"},
		{SensorUnreadable.For("class/hwmon"), SensorUnreadable, "class/hwmon"},
		{SupervisorGaveUp.For(), SupervisorGaveUp, ""},
		{PowerOnBattery.Name, PowerOnBattery, ""},
		{"stream.failed:news", StreamFailed, "news"},
		// An unscoped kind refuses a subject, a scoped one needs one.
		{SupervisorGaveUp.For("x"), Kind{}, ""},
		{"power.on-battery:ups0", Kind{}, ""},
		{LinkDown.For(), Kind{}, ""},
		{Temp.For(""), Temp, ""}, // a sensor with an empty label still raises its alarm
		{"temp", Kind{}, ""},
		// Names that no kind declares.
		{"lnk.down:eth0", Kind{}, ""},
		{"temp.cpu", Kind{}, ""},
		{"Link.Down:eth0", Kind{}, ""},
		{"", Kind{}, ""},
		{":eth0", Kind{}, ""},
	}
	for _, tt := range tests {
		k, ok := KindOf(tt.name)
		if ok != (tt.kind.Name != "") || k != tt.kind {
			t.Errorf("KindOf(%q) = %q, %v; want %q", tt.name, k.Name, ok, tt.kind.Name)
			continue
		}
		if !ok {
			continue
		}
		if sub, ok := k.SubjectOf(tt.name); !ok || sub != tt.subject {
			t.Errorf("SubjectOf(%q) = %q, %v; want %q", tt.name, sub, ok, tt.subject)
		}
		for _, other := range Kinds() {
			if other.Is(tt.name) != (other == k) {
				t.Errorf("%s.Is(%q) = %v", other.Name, tt.name, other.Is(tt.name))
			}
		}
	}
	if got := LinkDown.For("eth0"); got != "link.down:eth0" {
		t.Errorf("LinkDown.For(eth0) = %q", got)
	}
	if got := OutputFailing.Pattern(); got != "output.failing:<stream>:<ip:port>" {
		t.Errorf("OutputFailing.Pattern() = %q", got)
	}
}

func TestTrackerRefusesUndeclaredNames(t *testing.T) {
	var logs bytes.Buffer
	tr := NewTracker(nil, slog.New(slog.NewTextHandler(&logs, nil)))
	ch, unsub := tr.Subscribe(10)
	defer unsub()
	tr.Set("lnk.down:eth0", Critical, "no carrier")
	tr.Set("lnk.down:eth0", Critical, "no carrier")
	tr.Set("lnk.down:eth1", Critical, "no carrier")
	tr.Clear("lnk.down:eth0")
	tr.Set(SupervisorGaveUp.For("root"), Critical, "gave up")
	tr.Set(LinkDown.For(), Critical, "no carrier")
	tr.Set("temp.cpu", OK, "") // a clear by another road
	if n := tr.Refused(); n != 7 {
		t.Errorf("refused %d, want 7", n)
	}
	if act, ev := tr.Active(), tr.Events(0); len(act) != 0 || len(ev) != 0 || len(ch) != 0 {
		t.Errorf("an undeclared name got through: active %v, events %v", act, ev)
	}
	// Logged once per name, so a raiser in a loop does not flood the journal.
	for _, want := range []string{"lnk.down:eth0", "supervisor.gave-up:root", "condition=link.down\n", "temp.cpu"} {
		if n := strings.Count(logs.String(), want); n != 1 {
			t.Errorf("%q logged %d times, want once:\n%s", want, n, logs.String())
		}
	}
	if strings.Contains(logs.String(), "lnk.down:eth1") {
		t.Errorf("a second subject of one undeclared name was logged again:\n%s", logs.String())
	}
	// The declared names still work.
	tr.Set(LinkDown.For("eth0"), Critical, "no carrier")
	if _, ok := tr.Get("link.down:eth0"); !ok || tr.Refused() != 7 {
		t.Errorf("a declared name was refused (refused %d)", tr.Refused())
	}
}

func TestTrackerLogsOfUndeclaredNamesAreBounded(t *testing.T) {
	var logs bytes.Buffer
	tr := NewTracker(nil, slog.New(slog.NewTextHandler(&logs, nil)))
	for i := range 1000 {
		tr.Set(fmt.Sprintf("made.up%d", i), Warning, "")
	}
	if n := strings.Count(logs.String(), "\n"); n != maxLoggedBad {
		t.Errorf("%d log lines, want %d", n, maxLoggedBad)
	}
	if tr.Refused() != 1000 {
		t.Errorf("refused %d, want every one counted", tr.Refused())
	}
}

func TestTrackerRaisesAtAnUndeclaredSeverityAndSaysSo(t *testing.T) {
	var logs bytes.Buffer
	tr := NewTracker(nil, slog.New(slog.NewTextHandler(&logs, nil)))
	tr.Set(PowerMainsLost.For("psu0"), Warning, "offline")
	tr.Set(PowerMainsLost.For("psu1"), Warning, "offline")
	tr.Set(Temp.For("cpu"), Warning, "81 °C") // graded: warning is declared
	if c, ok := tr.Get("power.mains-lost:psu0"); !ok || c.Severity != Warning {
		t.Errorf("a real alarm was hidden for its severity: %+v %v", c, ok)
	}
	if n := strings.Count(logs.String(), "severity its declaration does not give"); n != 1 {
		t.Errorf("logged %d times, want once per kind:\n%s", n, logs.String())
	}
	if tr.Refused() != 0 {
		t.Errorf("refused %d", tr.Refused())
	}
}

// TestOperationsGuideListsEveryKind keeps the operator guide's alarms table
// and the declarations the same, row for row, so neither drifts.
func TestOperationsGuideListsEveryKind(t *testing.T) {
	const section = "## Alarms (health conditions)"
	f, err := os.Open("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == section:
			in = true
		case in && strings.HasPrefix(line, "## "):
			in = false
		case in && strings.HasPrefix(line, "| `"):
			rows = append(rows, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	var want []string
	wantBy := map[string]string{}
	for _, k := range Kinds() {
		sev := k.Severity.String()
		if k.Graded {
			sev = Warning.String() + " / " + sev
		}
		row := fmt.Sprintf("| `%s` | %s | %s | %s |", k.Pattern(), sev, k.Raised, k.Clears)
		want = append(want, row)
		wantBy[k.Pattern()] = row
	}
	if strings.Join(rows, "\n") == strings.Join(want, "\n") {
		return
	}
	gotBy := map[string]string{}
	for _, row := range rows {
		pattern, _, _ := strings.Cut(strings.TrimPrefix(row, "| `"), "`")
		gotBy[pattern] = row
		switch w, ok := wantBy[pattern]; {
		case !ok:
			t.Errorf("the guide lists %s, which no kind declares", pattern)
		case row != w:
			t.Errorf("the guide's row for %s differs from its declaration:\n got %s\nwant %s", pattern, row, w)
		}
	}
	for _, k := range Kinds() {
		if _, ok := gotBy[k.Pattern()]; !ok {
			t.Errorf("the guide does not list %s", k.Pattern())
		}
	}
	t.Errorf("the table under %q in docs/operations.md should read:\n%s", section, strings.Join(want, "\n"))
}

// TestNoConditionNamesOutsideDeclarations reads the production Go code and
// fails on a condition name written as a string instead of built from its
// declaration (LinkDown.For(nic)), so names change in one place only.
func TestNoConditionNamesOutsideDeclarations(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]bool{}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") || rel == "health/conditions.go" {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, rel, src, parser.SkipObjectResolution)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		files[rel] = true
		for _, p := range conditionLiterals(f) {
			t.Errorf("%s: %s", fset.Position(p.pos), p.why)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, raiser := range []string{"hw/monitor.go", "hw/power.go", "media/manager.go", "cmd/appliance/wire.go"} {
		if !files[raiser] {
			t.Errorf("%s was not read: the check looks in the wrong place", raiser)
		}
	}
}

func TestConditionLiteralsAreFound(t *testing.T) {
	src := `package p
func f() {
	t.Set("link.down:"+nic, health.Critical, "")
	t.Clear("power.on-battery")
	_ = fmt.Sprintf("output.failing:%s:%s", s, a)
	_ = cond{"psu.failed:" + n, health.Warning, ""}
	t.Set("lnk.down:"+nic, health.Critical, "")
	t.Set(prefix+"x", health.Warning, "")
	_ = strings.HasPrefix(name, "link.down")

	// Not condition names.
	h.Set("Content-Type", "application/json")
	_ = filepath.Join(z, "temp")
	t.Set(health.LinkDown.For(nic), health.Critical, "no carrier "+nic)
}`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "p.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	var lines []int
	for _, p := range conditionLiterals(f) {
		lines = append(lines, fset.Position(p.pos).Line)
	}
	if got, want := fmt.Sprint(lines), "[3 4 5 6 7 8 9]"; got != want {
		t.Errorf("flagged lines %s, want %s", got, want)
	}
}

type finding struct {
	pos token.Pos
	why string
}

// conditionLiterals finds string literals that are, or begin, a declared
// condition name, and literals in the name of a Set(name, health.Severity,
// msg) call (which catches a misspelt one).
func conditionLiterals(f *ast.File) []finding {
	var out []finding
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.BasicLit:
			if n.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(n.Value)
			if err != nil {
				return true
			}
			for _, k := range Kinds() {
				// "temp" alone is an ordinary word; dotted names are not.
				if strings.HasPrefix(s, k.Name+":") || (s == k.Name && strings.Contains(k.Name, ".")) {
					out = append(out, finding{n.Pos(), fmt.Sprintf("%q is a %s condition name: build it from its declaration, health.<Kind>.For", s, k.Pattern())})
					return true
				}
			}
		case *ast.CallExpr:
			sel, ok := n.Fun.(*ast.SelectorExpr)
			if !ok || sel.Sel.Name != "Set" || len(n.Args) != 3 || !isHealthSeverity(n.Args[1]) {
				return true
			}
			ast.Inspect(n.Args[0], func(a ast.Node) bool {
				if lit, ok := a.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					out = append(out, finding{lit.Pos(), fmt.Sprintf("condition name written as %s: build it with a declaration in health/conditions.go", lit.Value)})
				}
				return true
			})
		}
		return true
	})
	// Inspect visits a Set's literals twice when they also begin a name.
	seen := map[token.Pos]bool{}
	uniq := out[:0]
	for _, p := range out {
		if !seen[p.pos] {
			seen[p.pos] = true
			uniq = append(uniq, p)
		}
	}
	return uniq
}

func isHealthSeverity(e ast.Expr) bool {
	sel, ok := e.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	pkg, ok := sel.X.(*ast.Ident)
	return ok && pkg.Name == "health" && (sel.Sel.Name == "OK" || sel.Sel.Name == "Warning" || sel.Sel.Name == "Critical")
}
