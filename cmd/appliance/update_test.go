package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"appliance/control"
	"appliance/internal/clock"
	"appliance/internal/testutil"
	"appliance/media"
	"appliance/update"
)

var updateTestKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, ed25519.SeedSize))

// updateRig is a unit's slots in files: a file for each slot's partition,
// a directory for the boot partition.
func updateRig(t *testing.T, running string, entries map[string]string) update.Layout {
	t.Helper()
	dir := t.TempDir()
	l := update.Layout{Boot: filepath.Join(dir, "boot"), Cmdline: filepath.Join(dir, "cmdline"), State: filepath.Join(dir, "state"),
		Devices:  map[string]string{"a": filepath.Join(dir, "root-a"), "b": filepath.Join(dir, "root-b")},
		PartUUID: map[string]string{"a": "uuid-a", "b": "uuid-b"}}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(l.Boot, "loader", "entries"), 0o755))
	must(os.MkdirAll(l.State, 0o755))
	for _, s := range update.Slots {
		must(os.WriteFile(l.Devices[s], bytes.Repeat([]byte(s), 1<<16), 0o644))
	}
	must(os.WriteFile(l.Cmdline, []byte("root=PARTUUID=uuid-"+running+" ro appliance.slot="+running+"\n"), 0o644))
	for file, version := range entries {
		e, _ := update.ParseEntryName(file)
		gen := 1
		if e.Counted {
			gen = 2
		}
		must(os.WriteFile(filepath.Join(l.Boot, "loader", "entries", file),
			update.EntryBody(e.Slot, version, gen, "root=PARTUUID=uuid-"+e.Slot+" ro appliance.slot="+e.Slot), 0o644))
	}
	return l
}

func testBundle(t *testing.T, version string) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{}
	for _, name := range []string{"rootfs", "vmlinuz", "initrd"} {
		files[name] = filepath.Join(dir, name)
		if err := os.WriteFile(files[name], []byte(name+" "+version), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, version+".bundle")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := update.WriteBundle(f, version, []string{"rootfs", "vmlinuz", "initrd"}, files, updateTestKey); err != nil {
		t.Fatal(err)
	}
	return path
}

func testUpdater(l update.Layout, clk clock.Clock) (*updater, chan struct{}) {
	rebooted := make(chan struct{}, 1)
	up := &updater{l: l, pub: updateTestKey.Public().(ed25519.PublicKey), version: "1.0", clk: clk,
		log: slog.New(slog.NewTextHandler(io.Discard, nil)), healthy: func() (bool, string) { return false, "not yet" },
		reboot: func() error { rebooted <- struct{}{}; return nil }}
	return up, rebooted
}

// A paired unit hands its forwarded streams to the peer before anything is
// written, then writes the other slot and asks for the reboot.
func TestUpdatePairedHandsOverFirst(t *testing.T) {
	l := updateRig(t, "a", map[string]string{"appliance-a.conf": "1.0"})
	up, rebooted := testUpdater(l, clock.Real())
	var handed []string
	untouched := false
	streams := func() []media.StreamStatus {
		return []media.StreamStatus{{Name: "cam1", Role: media.RoleForward}, {Name: "cam2", Role: media.RoleStandby}, {Name: "cam3", Role: media.RoleForward}}
	}
	up.handover = streamsToPeer(streams, func(_ context.Context, stream string) error {
		b, _ := os.ReadFile(l.Devices["b"])
		untouched = bytes.Equal(b, bytes.Repeat([]byte("b"), 1<<16))
		handed = append(handed, stream)
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	up.start(ctx)
	r, err := control.Do(ctx, fakeUpdateActions{up: up}, control.Request{Op: control.OpUpdate, Bundle: testBundle(t, "2.0")})
	if err != nil || r.Update.Slot != "b" || r.Update.From != "a" {
		t.Fatalf("update: %+v %v", r, err)
	}
	select {
	case <-rebooted:
	case <-time.After(10 * time.Second):
		t.Fatalf("no reboot asked for: %+v", up.snapshot().LastUpdate)
	}
	if strings.Join(handed, ",") != "cam1,cam3" || !untouched {
		t.Errorf("handed over %v (slot b untouched then: %v), want cam1 and cam3 before any write", handed, untouched)
	}
	s := up.snapshot()
	if s.Running != "a" || s.Slots[1].Version != "2.0" || s.Slots[1].TriesLeft == nil || *s.Slots[1].TriesLeft != update.Tries ||
		s.LastUpdate == nil || s.LastUpdate.Outcome != update.Trial || s.Update == nil || s.Update.State != "rebooting" {
		t.Errorf("slots after the write: %+v, last %+v, update %+v", s.Slots, s.LastUpdate, s.Update)
	}
}

// fakeUpdateActions is a unit whose only action is the update.
type fakeUpdateActions struct {
	control.Actions
	up *updater
}

func (f fakeUpdateActions) Update(ctx context.Context, bundle string) (control.UpdateResult, error) {
	return f.up.Update(ctx, bundle)
}

// A handover that fails stops the update before anything is written.
func TestUpdateHandoverFailsNothingWritten(t *testing.T) {
	l := updateRig(t, "a", map[string]string{"appliance-a.conf": "1.0"})
	up, _ := testUpdater(l, clock.Real())
	up.handover = func(context.Context) error { return errors.New("the peer is silent") }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	up.start(ctx)
	if _, err := up.Update(ctx, testBundle(t, "2.0")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the update to fail", func() bool {
		s := up.snapshot()
		return s.Update == nil && s.LastUpdate != nil && s.LastUpdate.Outcome == update.Failed
	})
	if r := up.snapshot().LastUpdate.Reason; !strings.Contains(r, "handed to the peer") || !strings.Contains(r, "nothing was written") {
		t.Errorf("reason %q", r)
	}
	if b, _ := os.ReadFile(l.Devices["b"]); !bytes.Equal(b, bytes.Repeat([]byte("b"), 1<<16)) {
		t.Errorf("slot b was written")
	}
	if _, err := up.Update(ctx, "relative/path.bundle"); !errors.Is(err, control.ErrInvalid) {
		t.Errorf("a relative path: %v, want ErrInvalid", err)
	}
}

// A trial boot is committed once the unit is healthy, and no update is
// taken before.
func TestUpdateTrialCommitted(t *testing.T) {
	l := updateRig(t, "b", map[string]string{"appliance-a.conf": "1.0", "appliance-b+0-1.conf": "2.0"})
	if err := update.WriteRecord(l.State, update.Record{Version: "2.0", Slot: "b", From: "a", Outcome: update.Trial}); err != nil {
		t.Fatal(err)
	}
	up, _ := testUpdater(l, clock.Real())
	healthy := make(chan bool, 1)
	up.healthy = func() (bool, string) {
		select {
		case ok := <-healthy:
			return ok, ""
		default:
			return false, "waiting"
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	up.start(ctx)
	if _, err := up.Update(ctx, testBundle(t, "3.0")); err == nil || !strings.Contains(err.Error(), "trial") {
		t.Errorf("an update during a trial boot: %v", err)
	}
	if s := up.snapshot(); s.Slots[1].Committed || s.Slots[1].TriesLeft == nil {
		t.Errorf("before healthy: %+v", s.Slots[1])
	}
	healthy <- true
	select {
	case <-up.judged:
	case <-time.After(10 * time.Second):
		t.Fatal("the trial was not judged")
	}
	s := up.snapshot()
	if !s.Slots[1].Committed || s.LastUpdate.Outcome != update.Committed || s.LastUpdate.Finished == nil {
		t.Errorf("after healthy: %+v, last %+v", s.Slots[1], s.LastUpdate)
	}
	if _, err := os.Stat(filepath.Join(l.Boot, "loader", "entries", "appliance-b.conf")); err != nil {
		t.Errorf("slot b's entry not committed: %v", err)
	}
}

// Back on the old slot after a failed trial: the record says rolled back,
// with what the trial boot saw.
func TestUpdateRolledBackWithWhy(t *testing.T) {
	l := updateRig(t, "a", map[string]string{"appliance-a.conf": "1.0", "appliance-b+0-1.conf": "2.0"})
	if err := update.WriteRecord(l.State, update.Record{Version: "2.0", Slot: "b", From: "a", FromVersion: "1.0", Outcome: update.Trial}); err != nil {
		t.Fatal(err)
	}
	if err := update.WriteTrialNote(l.State, update.TrialNote{Slot: "b", Version: "2.0", Note: "appliance.service failed (failed), result exit-code, exit status 1"}); err != nil {
		t.Fatal(err)
	}
	up, _ := testUpdater(l, clock.Real())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	up.start(ctx)
	s := up.snapshot()
	if s.LastUpdate.Outcome != update.RolledBack || !strings.Contains(s.LastUpdate.Reason, "exit status 1") || !s.Slots[1].Bad || !s.Slots[0].Running {
		t.Errorf("after the rollback: %+v, last %+v", s.Slots, s.LastUpdate)
	}
	if rec, _, _ := update.ReadRecord(l.State); rec.Outcome != update.RolledBack {
		t.Errorf("the record on disk: %+v", rec)
	}
}

// The trial's judge: nothing to do on a committed boot; on a trial it
// notes what it sees and fails at the deadline.
func TestJudgeTrial(t *testing.T) {
	var out bytes.Buffer
	l := updateRig(t, "a", map[string]string{"appliance-a.conf": "1.0"})
	if err := judgeTrial(context.Background(), l, clock.Real(), time.Minute, nil, &out); err != nil || !strings.Contains(out.String(), "not a trial") {
		t.Errorf("a committed boot: %v %q", err, out.String())
	}

	l = updateRig(t, "b", map[string]string{"appliance-a.conf": "1.0", "appliance-b+0-1.conf": "2.0"})
	clk := clock.NewFake(time.Date(2026, 11, 28, 1, 0, 0, 0, time.UTC))
	done := make(chan error, 1)
	observe := func(context.Context) string {
		return "appliance.service activating (auto-restart), result exit-code, exit status 1"
	}
	go func() { done <- judgeTrial(context.Background(), l, clk, 3*time.Second, observe, io.Discard) }()
	var err error
	testutil.Eventually(t, 10*time.Second, "the judge to give up at its deadline", func() bool {
		select {
		case err = <-done:
			return true
		default:
		}
		if clk.Pending() > 0 {
			clk.Advance(time.Second)
		}
		return false
	})
	if err == nil {
		t.Fatal("no error at the deadline: the unit would not reboot")
	}
	n, ok := update.ReadTrialNote(l.State)
	if !ok || n.Slot != "b" || n.Version != "2.0" || !strings.Contains(n.Note, "not healthy within 3s") || !strings.Contains(n.Note, "exit status 1") {
		t.Errorf("the trial note: %+v", n)
	}
}

func TestDescribeService(t *testing.T) {
	got := describeService([]byte("ActiveState=activating\nSubState=auto-restart\nResult=exit-code\nExecMainStatus=1\nNRestarts=3\n"))
	want := "appliance.service activating (auto-restart), result exit-code, exit status 1, restarted 3 times"
	if got != want {
		t.Errorf("%q, want %q", got, want)
	}
}
