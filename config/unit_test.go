package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The unit's own config on the data partition, and the image's default it
// falls back on.
func TestLoadUnit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	def := file("default.yaml", "version: 1\nunit: {name: image-default}\n")
	good := file("good.yaml", "version: 1\nunit: {name: edge-a}\n")
	typo := file("typo.yaml", "version: 1\nunit: {name: edge-a}\nstreams:\n  - {name: s, input: \"udp://0.0.0.0:5004\", outptus: []}\n")
	empty := file("empty.yaml", "")
	notYAML := file("garbage.yaml", "version: 1\nunit: {name: [\n")
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o755); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name     string
		unit     string
		wantName string
		wantPath string
		wantErr  string // in UnitErr; "" for none
	}{
		{"no unit config asked for", "", "image-default", def, ""},
		{"unit config absent", filepath.Join(dir, "absent.yaml"), "image-default", def, ""},
		{"unit config good", good, "edge-a", good, ""},
		{"unit config with a mistyped key", typo, "image-default", def, `typo.yaml:4:`},
		{"unit config empty", empty, "image-default", def, "empty.yaml:1:1:"},
		{"unit config not YAML", notYAML, "image-default", def, "not valid YAML"},
		{"unit config a directory", filepath.Join(dir, "adir"), "image-default", def, "is a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := LoadUnit(def, tc.unit, Env{})
			if err != nil {
				t.Fatalf("LoadUnit: %v", err)
			}
			if c.Config.Unit.Name != tc.wantName || c.Path != tc.wantPath {
				t.Errorf("runs %q from %s, want %q from %s", c.Config.Unit.Name, c.Path, tc.wantName, tc.wantPath)
			}
			switch {
			case tc.wantErr == "" && c.UnitErr != nil:
				t.Errorf("UnitErr %v, want none", c.UnitErr)
			case tc.wantErr != "" && (c.UnitErr == nil || !strings.Contains(c.UnitErr.Error(), tc.wantErr)):
				t.Errorf("UnitErr %v, want one saying %q", c.UnitErr, tc.wantErr)
			}
			if c.Fallback() != (tc.wantErr != "") {
				t.Errorf("Fallback() %v with UnitErr %v", c.Fallback(), c.UnitErr)
			}
		})
	}

	// The default is what every unit falls back on: with problems it is
	// refused, even when the unit's own file is good.
	bad := file("bad-default.yaml", "version: 2\n")
	if _, err := LoadUnit(bad, good, Env{}); err == nil || !strings.Contains(err.Error(), "bad-default.yaml") {
		t.Errorf("a default with problems: %v, want its problems", err)
	}
	if _, err := LoadUnit(filepath.Join(dir, "no-default.yaml"), good, Env{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing default: %v, want not-exist", err)
	}
}
