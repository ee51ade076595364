package config

import (
	"errors"
	"testing"
)

// FuzzParse: no input makes the loader panic; every input gives a config or
// a list of problems, each with a line inside the file.
func FuzzParse(f *testing.F) {
	f.Add(defaultYAML)
	f.Add([]byte(minimal))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if err == nil {
			if c == nil || c.Version != 1 || c.Unit.Name == "" {
				t.Fatalf("accepted a config without version or unit: %+v", c)
			}
			for _, s := range c.Streams {
				if len(s.Outputs) == 0 || s.Name == "" || !s.Input.Addr.IsValid() {
					t.Fatalf("accepted an incomplete stream: %+v", s)
				}
			}
			return
		}
		var e *Error
		if !errors.As(err, &e) || len(e.Problems) == 0 {
			t.Fatalf("error without problems: %v", err)
		}
		for _, p := range e.Problems {
			if p.Line < 1 || p.Msg == "" {
				t.Fatalf("problem without a line or text: %+v", p)
			}
		}
	})
}
