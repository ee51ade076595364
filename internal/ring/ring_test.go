package ring

import (
	"fmt"
	"testing"
)

func TestRing(t *testing.T) {
	r := New[int](3)
	if got := r.Recent(10); len(got) != 0 {
		t.Fatalf("empty ring: %v", got)
	}
	r.Add(1)
	r.Add(2)
	if got := fmt.Sprint(r.Recent(0)); got != "[2 1]" {
		t.Errorf("partly full: %s", got)
	}
	for i := 3; i <= 7; i++ {
		r.Add(i)
	}
	if got := fmt.Sprint(r.Recent(0)); got != "[7 6 5]" {
		t.Errorf("wrapped: %s", got)
	}
	if got := fmt.Sprint(r.Recent(2)); got != "[7 6]" {
		t.Errorf("Recent(2): %s", got)
	}
}
