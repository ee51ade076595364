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
