package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeTB records what a rig helper did to the test instead of doing it.
type fakeTB struct {
	testing.TB
	name            string
	skipped, failed string
}

type stopped struct{}

func (f *fakeTB) Helper()      {}
func (f *fakeTB) Name() string { return f.name }
func (f *fakeTB) Skip(args ...any) {
	f.skipped = fmt.Sprint(args...)
	panic(stopped{})
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
	panic(stopped{})
}

// call runs a helper as a test would, stopping where the test would stop.
func call(f *fakeTB, helper func(testing.TB)) {
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(stopped); !ok {
				panic(r)
			}
		}
	}()
	helper(f)
}

func resetSkips() {
	skips.mu.Lock()
	skips.root, skips.packages = nil, nil
	skips.mu.Unlock()
}

// TestNeedTools: missing tools skip the test, naming every missing tool and
// package at once; the summary is one line with each package once; the
// skips file gets a line per package; required, a missing tool fails.
func TestNeedTools(t *testing.T) {
	resetSkips()
	t.Cleanup(resetSkips)
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "present"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin)
	file := filepath.Join(t.TempDir(), "skips")
	t.Setenv(SkipsEnv, file)
	t.Setenv(RigsEnv, "")

	f := &fakeTB{name: "TestPresent"}
	call(f, func(tb testing.TB) { NeedTools(tb, Tool{"present", "pkg-present"}) })
	if f.skipped != "" || f.failed != "" {
		t.Fatalf("a tool that is there: skipped %q, failed %q", f.skipped, f.failed)
	}
	if s := SkipSummary(); s != "" {
		t.Fatalf("summary with nothing skipped: %q", s)
	}

	f = &fakeTB{name: "TestA"}
	call(f, func(tb testing.TB) {
		NeedTools(tb, Tool{"ip", "iproute2"}, Tool{"present", "pkg-present"}, Tool{"mmdebstrap", "mmdebstrap"})
	})
	if f.failed != "" || !strings.Contains(f.skipped, "ip, mmdebstrap") || !strings.Contains(f.skipped, "apt-get install -y --no-install-recommends iproute2 mmdebstrap") {
		t.Fatalf("skip message %q (failed %q); want both tools and both packages", f.skipped, f.failed)
	}
	f = &fakeTB{name: "TestB"}
	call(f, func(tb testing.TB) { NeedTools(tb, Tool{"ip", "iproute2"}) })
	if f.skipped == "" {
		t.Fatal("a second test without ip was not skipped")
	}
	want := "rig tests skipped: tools missing: apt-get install -y --no-install-recommends iproute2 mmdebstrap"
	if s := SkipSummary(); s != want {
		t.Fatalf("summary %q, want %q", s, want)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), "pkg iproute2 TestA\npkg mmdebstrap TestA\npkg iproute2 TestB\n"; got != want {
		t.Fatalf("skips file:\n%s\nwant:\n%s", got, want)
	}

	t.Setenv(RigsEnv, "required")
	f = &fakeTB{name: "TestRequired"}
	call(f, func(tb testing.TB) { NeedTools(tb, Tool{"ip", "iproute2"}) })
	if f.skipped != "" || !strings.Contains(f.failed, "iproute2") || !strings.Contains(f.failed, RigsEnv+"=required") {
		t.Fatalf("required: skipped %q, failed %q; want a failure naming the package and why", f.skipped, f.failed)
	}
}

// TestNeedRoot: as root nothing happens; otherwise the test is skipped (or,
// required, fails) and counted in the summary.
func TestNeedRoot(t *testing.T) {
	resetSkips()
	t.Cleanup(resetSkips)
	t.Setenv(SkipsEnv, "")
	t.Cleanup(func() { euid = os.Geteuid })
	for _, tc := range []struct {
		uid      int
		required string
	}{{0, ""}, {0, "required"}, {1000, ""}, {1000, "required"}} {
		euid = func() int { return tc.uid }
		required := tc.required
		t.Setenv(RigsEnv, required)
		f := &fakeTB{name: "TestRoot"}
		call(f, func(tb testing.TB) { NeedRoot(tb, "network namespaces") })
		switch {
		case tc.uid == 0:
			if f.skipped != "" || f.failed != "" {
				t.Fatalf("as root: skipped %q, failed %q", f.skipped, f.failed)
			}
		case required == "":
			if !strings.Contains(f.skipped, "needs root: network namespaces") {
				t.Fatalf("not root: skip message %q", f.skipped)
			}
			if s := SkipSummary(); !strings.Contains(s, "1 needs root (sudo make test)") {
				t.Fatalf("summary %q", s)
			}
		default:
			if !strings.Contains(f.failed, "needs root") {
				t.Fatalf("not root, required: failure %q", f.failed)
			}
		}
	}
}

// TestCIRequiresRigs: CI makes rig tests required before it runs them, and
// make test collects the skips into its summary line.
func TestCIRequiresRigs(t *testing.T) {
	ci, err := os.ReadFile("../../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	req, run := strings.Index(string(ci), "\nexport "+RigsEnv+"=required\n"), strings.Index(string(ci), "\nmake test\n")
	if req < 0 || run < 0 || req > run {
		t.Errorf(".ci/run must export %s=required before make test", RigsEnv)
	}
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mk), SkipsEnv+"=$$skips $(GO) test") || !strings.Contains(string(mk), `echo "rig tests skipped: $$msg"`) {
		t.Errorf("make test must pass %s to go test and print the summary line", SkipsEnv)
	}
}
