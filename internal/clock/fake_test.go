package clock

import (
	"context"
	"testing"
	"time"
)

func TestFakeTimerFiresOnlyWhenDue(t *testing.T) {
	t.Parallel()
	start := time.Unix(1000, 0)
	f := NewFake(start)
	tm := f.NewTimer(100 * time.Millisecond)
	f.Advance(99 * time.Millisecond)
	select {
	case <-tm.C():
		t.Fatal("timer fired early")
	default:
	}
	f.Advance(time.Millisecond)
	select {
	case got := <-tm.C():
		if want := start.Add(100 * time.Millisecond); !got.Equal(want) {
			t.Fatalf("fired at %v, want %v", got, want)
		}
	default:
		t.Fatal("timer did not fire when due")
	}
	if f.Pending() != 0 {
		t.Fatalf("fired timer still pending: %d", f.Pending())
	}
}

func TestFakeTickerAndStop(t *testing.T) {
	t.Parallel()
	f := NewFake(time.Unix(0, 0))
	tk := f.NewTicker(10 * time.Millisecond)
	n := 0
	for i := 0; i < 5; i++ {
		f.Advance(10 * time.Millisecond)
		select {
		case <-tk.C():
			n++
		default:
		}
	}
	if n != 5 {
		t.Fatalf("got %d ticks, want 5", n)
	}
	tk.Stop()
	f.Advance(time.Second)
	select {
	case <-tk.C():
		t.Fatal("stopped ticker fired")
	default:
	}
}

func TestFakeResetDrainsAndRearms(t *testing.T) {
	t.Parallel()
	f := NewFake(time.Unix(0, 0))
	tm := f.NewTimer(time.Second)
	f.Advance(time.Second)
	if tm.Reset(time.Second) {
		t.Fatal("Reset of a fired timer reported it active")
	}
	select {
	case <-tm.C():
		t.Fatal("stale tick survived Reset")
	default:
	}
	f.Advance(time.Second)
	select {
	case <-tm.C():
	default:
		t.Fatal("re-armed timer did not fire")
	}
}

func TestWaitPending(t *testing.T) {
	t.Parallel()
	f := NewFake(time.Unix(0, 0))
	go func() { f.NewTimer(time.Hour) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.WaitPending(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if got := f.Deadlines(); len(got) != 1 || !got[0].Equal(time.Unix(3600, 0)) {
		t.Fatalf("deadlines %v", got)
	}
}

func TestFakeMonoStartsNonZeroAndAdvancesWithWall(t *testing.T) {
	t.Parallel()
	start := time.Unix(1000, 0)
	f := NewFake(start)
	if got := f.Mono(); got != FakeMonoStart || got == 0 {
		t.Fatalf("Mono() = %v at start, want FakeMonoStart (%v)", got, FakeMonoStart)
	}
	f.Advance(1500 * time.Millisecond)
	if got := f.Mono(); got != FakeMonoStart+1500*time.Millisecond {
		t.Errorf("Mono() = %v after Advance(1.5s)", got)
	}
	if got := f.Now(); !got.Equal(start.Add(1500 * time.Millisecond)) {
		t.Errorf("Now() = %v after Advance(1.5s)", got)
	}
}

// A wall step moves Now alone: Mono, timers and tickers do not notice it.
func TestFakeStepWall(t *testing.T) {
	t.Parallel()
	for _, step := range []time.Duration{time.Hour, -time.Hour} {
		t.Run(step.String(), func(t *testing.T) {
			t.Parallel()
			start := time.Unix(100000, 0)
			f := NewFake(start)
			tm := f.NewTimer(time.Second)
			tk := f.NewTicker(300 * time.Millisecond)
			f.StepWall(step)
			if got := f.Now(); !got.Equal(start.Add(step)) {
				t.Fatalf("Now() = %v after StepWall(%v), want %v", got, step, start.Add(step))
			}
			if got := f.Mono(); got != FakeMonoStart {
				t.Fatalf("Mono() = %v after a wall step, want it unmoved at %v", got, FakeMonoStart)
			}
			if n := f.Unread(); n != 0 {
				t.Fatalf("a wall step fired %d timers or tickers", n)
			}
			if d := f.Deadlines(); len(d) != 2 || !d[0].Equal(start.Add(step+300*time.Millisecond)) || !d[1].Equal(start.Add(step+time.Second)) {
				t.Fatalf("deadlines %v, want 300ms and 1s from the stepped wall time", d)
			}
			f.Advance(999 * time.Millisecond)
			select {
			case <-tm.C():
				t.Fatal("timer fired early after a wall step")
			default:
			}
			select {
			case got := <-tk.C():
				// Three periods fell due; the buffer of one kept the first.
				if want := start.Add(step + 300*time.Millisecond); !got.Equal(want) {
					t.Errorf("tick carries %v, want the stepped wall time %v", got, want)
				}
			default:
				t.Fatal("ticker did not fire")
			}
			f.Advance(time.Millisecond)
			select {
			case got := <-tm.C():
				if want := start.Add(step + time.Second); !got.Equal(want) {
					t.Errorf("timer fired at %v, want %v", got, want)
				}
			default:
				t.Fatal("timer did not fire one second of monotonic time after it was armed")
			}
			if got := f.Mono(); got != FakeMonoStart+time.Second {
				t.Errorf("Mono() = %v, want %v", got, FakeMonoStart+time.Second)
			}
		})
	}
}

func TestFakeAdvanceBackwardsPanics(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Error("Advance(-1s) did not panic")
		}
	}()
	NewFake(time.Unix(0, 0)).Advance(-time.Second)
}

func TestFakeUnread(t *testing.T) {
	t.Parallel()
	f := NewFake(time.Unix(0, 0))
	tk := f.NewTicker(time.Second)
	f.Advance(3 * time.Second)
	if n := f.Unread(); n != 1 {
		t.Fatalf("Unread() = %d after ticks nobody read, want 1 (the buffer holds one)", n)
	}
	<-tk.C()
	if n := f.Unread(); n != 0 {
		t.Fatalf("Unread() = %d after the tick was read", n)
	}
}
