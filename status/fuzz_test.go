package status

import (
	"strings"
	"testing"
)

func TestAcceptsGzip(t *testing.T) {
	for _, tt := range []struct {
		header string
		want   bool
	}{
		{"", false},
		{"gzip", true},
		{"GZIP", true},
		{"gzip, deflate, br", true},
		{"br;q=1.0, gzip;q=0.8, *;q=0.1", true},
		{"gzip;q=0", false},
		{"gzip;q=0.000", false},
		{"gzip;q=0.001", true},
		{"gzip; q=0 , *", false},
		{"*", true},
		{"*;q=0", false},
		{"identity", false},
		{"gzip;q=2", false},      // not a weight: the element counts for nothing
		{"gzip;q=1.5", false},    // neither
		{"gzip;q=0.0001", false}, // neither
		{"deflate, x-gzip", true},
		{"gzipx", false},
	} {
		if got := acceptsGzip([]string{tt.header}); got != tt.want {
			t.Errorf("%q: %v, want %v", tt.header, got, tt.want)
		}
	}
	if !acceptsGzip([]string{"br", "gzip"}) {
		t.Error("a second Accept-Encoding line naming gzip is ignored")
	}
}

func FuzzAcceptsGzip(f *testing.F) {
	for _, s := range []string{"gzip", "gzip;q=0", "br;q=1.0, gzip;q=0.8, *;q=0.1", "*;q=0", "gzip;q=1.000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		got := acceptsGzip([]string{h})
		// Names and the q parameter are case-insensitive, and a q-value has
		// no letters, so the case of the header cannot change the verdict.
		if up := acceptsGzip([]string{asciiUpper(h)}); up != got {
			t.Errorf("%q: %v, but %v in upper case", h, got, up)
		}
		// Nothing can be gzipped unless gzip or * is named.
		if got && !strings.Contains(strings.ToLower(h), "gzip") && !strings.Contains(h, "*") {
			t.Errorf("%q: accepts gzip without naming it", h)
		}
	})
}

func FuzzParseLimit(f *testing.F) {
	for _, s := range []string{"", "1", "200", "201", "500", "0", "-1", "x", "1e3", "+5", "0x10"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		n, err := parseLimit(v)
		if err != nil {
			if n != 0 || !strings.Contains(err.Error(), "limit") {
				t.Errorf("%q: %d, %v", v, n, err)
			}
			return
		}
		if n < 1 || n > MaxEvents {
			t.Errorf("%q: limit %d outside 1..%d", v, n, MaxEvents)
		}
	})
}

func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}
