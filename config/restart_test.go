package config

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"unicode"
)

func TestRestartNeeded(t *testing.T) {
	t.Parallel()
	old := Default()
	if got := RestartNeeded(old, Default()); got != nil {
		t.Errorf("same config: %q", got)
	}

	cur := Default()
	cur.Media.Workers = 3
	cur.Status.Listen = "127.0.0.1:9090"
	cur.HW.Links = []Link{{Name: "eth0", Role: "media"}}
	cur.Control.Socket = "/run/x.sock"
	cur.TestSources = nil
	cur.Streams = append(cur.Streams, Stream{Name: "more"}) // applied live
	cur.Streams[0].Outputs = nil
	want := []string{"control.socket", "hw.links", "media.workers", "status.listen", "test_sources"}
	if got := RestartNeeded(old, cur); !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}

	// "links: []" and no links are the same setting.
	a, b := mustParse(t, minimal+"hw: {links: []}\n"), mustParse(t, minimal)
	if got := RestartNeeded(a, b); got != nil {
		t.Errorf("empty and missing links: %q", got)
	}
}

// Every setting but streams is covered: changing any one field of Config
// names exactly that setting, spelled as in the file.
func TestRestartNeededCoversEveryField(t *testing.T) {
	t.Parallel()
	var walk func(v reflect.Value, path []string)
	seen := 0
	// A pair section, so that its settings are walked too.
	base := func() *Config {
		c, p := Default(), DefaultPair()
		c.Pair = &p
		return c
	}
	addrPort := reflect.TypeFor[netip.AddrPort]()
	walk = func(v reflect.Value, path []string) {
		if v.Kind() == reflect.Pointer {
			v = v.Elem()
		}
		if v.Kind() == reflect.Struct && v.Type() != addrPort {
			for i := range v.NumField() {
				f := v.Type().Field(i)
				if len(path) == 0 && f.Name == "Streams" {
					continue
				}
				walk(v.Field(i), append(path[:len(path):len(path)], snake(f.Name)))
			}
			return
		}
		seen++
		old, cur := base(), base()
		field := reflect.ValueOf(cur).Elem()
		for _, p := range path {
			if field.Kind() == reflect.Pointer {
				field = field.Elem()
			}
			field = field.FieldByNameFunc(func(name string) bool { return snake(name) == p })
		}
		switch {
		case field.Type() == addrPort:
			field.Set(reflect.ValueOf(netip.MustParseAddrPort("192.0.2.1:1")))
		case field.Kind() == reflect.Bool:
			field.SetBool(!field.Bool())
		case field.Kind() == reflect.Uint64:
			field.SetUint(field.Uint() + 1)
		case field.Kind() == reflect.Int, field.Kind() == reflect.Int64:
			field.SetInt(field.Int() + 1)
		case field.Kind() == reflect.Float64:
			field.SetFloat(field.Float() + 1)
		case field.Kind() == reflect.String:
			field.SetString(field.String() + "x")
		case field.Kind() == reflect.Slice:
			field.Set(reflect.Append(field, reflect.Zero(field.Type().Elem())))
		default:
			t.Fatalf("%s: kind %v; teach this test to change it", strings.Join(path, "."), field.Kind())
		}
		if got, want := RestartNeeded(old, cur), []string{strings.Join(path, ".")}; !reflect.DeepEqual(got, want) {
			t.Errorf("changing %s: got %q, want %q", want[0], got, want)
		}
	}
	walk(reflect.ValueOf(*base()), nil)
	if seen != len(restartSettings)+len(pairSettings) {
		t.Errorf("%d fields, %d settings", seen, len(restartSettings)+len(pairSettings))
	}
}

// snake spells a Go field name as the file does: StateDir -> state_dir, HW -> hw.
func snake(name string) string {
	var b strings.Builder
	for i, r := range name {
		if i > 0 && unicode.IsUpper(r) && unicode.IsLower(rune(name[i-1])) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}
