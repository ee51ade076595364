package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
)

// A rig test needs more than Go: root (network namespaces, mounts,
// real-time threads) or tools from the distribution (ip, mmdebstrap,
// systemd-nspawn, QEMU). Where they are missing it is skipped, and the skip
// is recorded so that a run ends with one line that says what to install,
// instead of one skip message per test buried in -v output. CI sets
// RigsEnv=required: there, a rig that would be skipped fails instead, so a
// CI machine that lost a package cannot pass by skipping.

// RigsEnv is the environment variable that makes rig tests required when
// it is "required" (.ci/run sets it).
const RigsEnv = "APPLIANCE_RIGS"

// SkipsEnv names a file that every test binary appends its rig skips to;
// `make test` sets it and prints the one summary line from it. Each line
// is "root TEST" or "pkg DEBIAN-PACKAGE TEST".
const SkipsEnv = "APPLIANCE_RIG_SKIPS"

// Tool is a program a rig test runs and the Debian package that has it.
type Tool struct {
	Name    string // as looked up in PATH, e.g. "ip"
	Package string // e.g. "iproute2"
}

var skips struct {
	mu       sync.Mutex
	root     []string // tests skipped for not running as root
	packages []string // packages whose tools were missing, sorted, unique
}

// euid is os.Geteuid; tests of this file pretend not to be root.
var euid = os.Geteuid

func rigsRequired() bool { return os.Getenv(RigsEnv) == "required" }

// NeedRoot skips t unless the test runs as root; why says what for. With
// RigsEnv=required it fails instead.
func NeedRoot(t testing.TB, why string) {
	t.Helper()
	if euid() == 0 {
		return
	}
	msg := fmt.Sprintf("needs root: %s (run the tests as root, e.g. sudo make test)", why)
	if rigsRequired() {
		t.Fatalf("%s; %s=required makes rig tests required", msg, RigsEnv)
	}
	skips.mu.Lock()
	skips.root = append(skips.root, t.Name())
	skips.mu.Unlock()
	appendSkip("root " + t.Name())
	t.Skip(msg)
}

// NeedTools skips t if any of the tools is missing from PATH, naming every
// missing one and its package at once. With RigsEnv=required it fails
// instead.
func NeedTools(t testing.TB, tools ...Tool) {
	t.Helper()
	var missing, pkgs []string
	for _, tl := range tools {
		if _, err := exec.LookPath(tl.Name); err != nil {
			missing = append(missing, tl.Name)
			if !slices.Contains(pkgs, tl.Package) {
				pkgs = append(pkgs, tl.Package)
			}
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("needs %s: apt-get install -y --no-install-recommends %s", strings.Join(missing, ", "), strings.Join(pkgs, " "))
	if rigsRequired() {
		t.Fatalf("%s; %s=required makes rig tests required (.ci/run installs them)", msg, RigsEnv)
	}
	skips.mu.Lock()
	for _, p := range pkgs {
		if i, found := slices.BinarySearch(skips.packages, p); !found {
			skips.packages = slices.Insert(skips.packages, i, p)
		}
	}
	skips.mu.Unlock()
	for _, p := range pkgs {
		appendSkip("pkg " + p + " " + t.Name())
	}
	t.Skip(msg)
}

// appendSkip adds a line to the file SkipsEnv names, if it names one. The
// test binaries of several packages append to it at once: each line is one
// small O_APPEND write, so lines do not mix.
func appendSkip(line string) {
	path := os.Getenv(SkipsEnv)
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "recording a rig skip in %s: %v\n", path, err)
		return
	}
	defer f.Close()
	_, _ = f.WriteString(line + "\n")
}

// SkipSummary is the one line that sums up this test binary's rig skips,
// or "" if there were none.
func SkipSummary() string {
	skips.mu.Lock()
	defer skips.mu.Unlock()
	var parts []string
	if n := len(skips.packages); n > 0 {
		parts = append(parts, "tools missing: apt-get install -y --no-install-recommends "+strings.Join(skips.packages, " "))
	}
	switch n := len(skips.root); n {
	case 0:
	case 1:
		parts = append(parts, "1 needs root (sudo make test)")
	default:
		parts = append(parts, fmt.Sprintf("%d need root (sudo make test)", n))
	}
	if len(parts) == 0 {
		return ""
	}
	return "rig tests skipped: " + strings.Join(parts, "; ")
}

// Main runs the tests and prints SkipSummary after them: a package with rig
// tests calls it from TestMain, as os.Exit(testutil.Main(m)). go test shows
// the line with -v or when the package fails; `make test` collects the
// lines of every package through SkipsEnv and prints one.
func Main(m *testing.M) int {
	code := m.Run()
	if line := SkipSummary(); line != "" {
		fmt.Println(line)
	}
	return code
}
