package health

import (
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"appliance/internal/clock"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newTracker() (*Tracker, *clock.Fake) {
	clk := clock.NewFake(epoch)
	return NewTracker(clk, slog.New(slog.NewTextHandler(io.Discard, nil))), clk
}

func TestTrackerRaiseChangeClear(t *testing.T) {
	tr, clk := newTracker()
	ch, unsub := tr.Subscribe(10)
	defer unsub()
	tr.Set("temp:cpu", Warning, "81 °C")
	tr.Set("temp:cpu", Warning, "81 °C") // no change, no event
	clk.Advance(time.Second)
	tr.Set("temp:cpu", Critical, "91 °C")
	tr.Set("psu.failed:psu1", Warning, "offline")
	if w := tr.Worst(); w != Critical {
		t.Errorf("worst %v", w)
	}
	act := tr.Active()
	if len(act) != 2 || act[0].Name != "temp:cpu" || !act[0].Since.Equal(epoch) {
		t.Errorf("active %+v", act)
	}
	clk.Advance(time.Second)
	tr.Set("temp:cpu", OK, "")
	tr.Clear("link.down:never-raised")
	var got []string
	for len(ch) > 0 {
		e := <-ch
		got = append(got, fmt.Sprintf("%s %s %s", e.Kind, e.Condition, e.Severity))
	}
	want := "[raised temp:cpu warning changed temp:cpu critical raised psu.failed:psu1 warning cleared temp:cpu ok]"
	if fmt.Sprint(got) != want {
		t.Errorf("events\n got %v\nwant %s", got, want)
	}
	if ev := tr.Events(1); len(ev) != 1 || ev[0].Kind != Cleared || !ev[0].Time.Equal(epoch.Add(2*time.Second)) {
		t.Errorf("recent %+v", ev)
	}
}

func TestTrackerNilSafe(t *testing.T) {
	var tr *Tracker
	tr.Set("state.unwritable", Warning, "y")
	tr.Clear("state.unwritable")
	tr.Set("no.such.condition", Critical, "y")
	if tr.Active() != nil || tr.Worst() != OK || tr.Events(0) != nil || tr.Dropped() != 0 || tr.Refused() != 0 {
		t.Error("nil tracker returned something")
	}
	_, unsub := tr.Subscribe(1)
	unsub()
}

func TestSlowSubscriberNeverBlocks(t *testing.T) {
	tr, _ := newTracker()
	_, unsub := tr.Subscribe(1)
	defer unsub()
	for i := 0; i < 10; i++ {
		tr.Set("state.unwritable", Warning, fmt.Sprint(i))
	}
	if d := tr.Dropped(); d != 9 {
		t.Errorf("dropped %d, want 9", d)
	}
}

func TestLevelHysteresis(t *testing.T) {
	l := Level{Warn: 80, Crit: 90, ClearMargin: 5}
	tests := []struct {
		v    float64
		want Severity
	}{
		{70, OK}, {79.9, OK}, {80, Warning}, {89, Warning}, {90, Critical},
		{88, Critical}, // below crit but within the margin
		{85.1, Critical},
		{85, Warning}, // crit - margin: down to warning
		{76, Warning}, // within the warning margin
		{75, OK},
		{95, Critical}, // straight to critical
		{60, OK},       // far below both: straight to ok
		{-10, OK},
	}
	for i, tt := range tests {
		if got := l.Update(tt.v); got != tt.want {
			t.Fatalf("step %d: %v °C gives %v, want %v", i, tt.v, got, tt.want)
		}
	}
}

func TestDebounce(t *testing.T) {
	type step struct {
		at      time.Duration // since start
		raw     *bool         // nil: Poll only
		state   bool
		changed bool
	}
	up, down := true, false
	tests := []struct {
		name  string
		steps []step
	}{
		{"first observation is taken", []step{{0, &up, true, true}}},
		{"short flap is invisible", []step{
			{0, &up, true, true}, {100 * time.Millisecond, &down, true, false},
			{250 * time.Millisecond, &up, true, false}, {500 * time.Millisecond, nil, true, false},
		}},
		{"down that holds is seen after the delay", []step{
			{0, &up, true, true}, {100 * time.Millisecond, &down, true, false},
			{299 * time.Millisecond, nil, true, false}, {300 * time.Millisecond, nil, false, true},
			{400 * time.Millisecond, &down, false, false},
		}},
		{"repeated raw states keep the first time", []step{
			{0, &up, true, true}, {100 * time.Millisecond, &down, true, false},
			{200 * time.Millisecond, &down, true, false}, {300 * time.Millisecond, &down, false, true},
		}},
		{"recovery is debounced too", []step{
			{0, &down, false, true}, {10 * time.Millisecond, &up, false, false},
			{210 * time.Millisecond, nil, true, true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Debounce{Delay: 200 * time.Millisecond}
			for i, s := range tt.steps {
				now := clock.FakeMonoStart + s.at
				var state, changed bool
				if s.raw != nil {
					state, changed = d.Observe(now, *s.raw)
				} else {
					state, changed = d.Poll(now)
				}
				if state != s.state || changed != s.changed {
					t.Fatalf("step %d at %v: got (%v, %v), want (%v, %v)", i, s.at, state, changed, s.state, s.changed)
				}
			}
		})
	}
}
