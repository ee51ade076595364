package hw

import (
	"io/fs"
	"math"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParsePowerSupply feeds arbitrary attribute files to the supply
// parser. missing has a bit per file (type, online, status, capacity) that
// makes it absent.
func FuzzParsePowerSupply(f *testing.F) {
	f.Add([]byte("Mains\n"), []byte("1\n"), []byte(""), []byte(""), uint8(0b1100))
	f.Add([]byte("Battery\n"), []byte(""), []byte("Discharging\n"), []byte("15\n"), uint8(0b0010))
	f.Fuzz(func(t *testing.T, typ, online, status, capacity []byte, missing uint8) {
		files := map[string][]byte{"type": typ, "online": online, "status": status, "capacity": capacity}
		order := []string{"type", "online", "status", "capacity"}
		ps := parsePowerSupply("PSU1", func(file string) ([]byte, error) {
			for i, name := range order {
				if name == file && missing&(1<<i) != 0 {
					return nil, fs.ErrNotExist
				}
			}
			return files[file], nil
		})
		if ps.Name != "PSU1" {
			t.Fatalf("name %q", ps.Name)
		}
		if ps.CapacityPct != nil && (*ps.CapacityPct < 0 || *ps.CapacityPct > 100) {
			t.Errorf("capacity %d out of range", *ps.CapacityPct)
		}
		if ps.Err == "" && ps.Type == "" {
			t.Errorf("no type and no error: %+v", ps)
		}
		for _, s := range []string{ps.Type, ps.Status} {
			if !utf8.ValidString(s) || strings.ContainsAny(s, "\n\x00") {
				t.Errorf("field %q is not a clean word", s)
			}
		}
		if !utf8.ValidString(ps.Err) && utf8.Valid(typ) && utf8.Valid(online) && utf8.Valid(status) && utf8.Valid(capacity) {
			t.Errorf("error %q is not valid UTF-8", ps.Err)
		}
		// Whatever else happens, the conditions can be decided from it.
		powerConditions([]PowerSupply{ps})
	})
}

// FuzzParseMilliCelsius feeds arbitrary sensor files to the temperature parser.
func FuzzParseMilliCelsius(f *testing.F) {
	f.Add([]byte("45000\n"))
	f.Add([]byte("-273000"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := parseMilliCelsius(raw, 1000)
		if err != nil {
			if c != 0 {
				t.Errorf("error %v with value %v", err, c)
			}
			return
		}
		if math.IsNaN(c) || math.IsInf(c, 0) || math.Abs(c) > 1e9 {
			t.Errorf("%q parsed to %v", raw, c)
		}
	})
}
