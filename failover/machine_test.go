package failover

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// The tests drive one machine with a scripted peer and clock, and assert the
// actions each rule produces, written as short lines ("forward s1 from 42",
// "standby s1", "vip s1 on", "+PeerLost bravo").

const hb = 10 * time.Millisecond

// recorder is an Env that writes down what the machine does.
type recorder struct {
	m       *Machine
	names   []string
	acts    []string
	sent    []Message
	asks    []bool
	raised  map[alarmKey]bool
	alarmed []Alarm
	t       *testing.T
}

func (r *recorder) Send(path int, m Message) { r.sent = append(r.sent, m) }
func (r *recorder) Forward(i int, from *uint16, c Continuity) {
	a := "forward " + r.names[i]
	if from != nil {
		a += fmt.Sprintf(" from %d", *from)
	}
	if c.Valid {
		a += fmt.Sprintf(" cont %d", c.SeqOffset)
	}
	r.acts = append(r.acts, a)
}
func (r *recorder) Standby(i int) { r.acts = append(r.acts, "standby "+r.names[i]) }
func (r *recorder) HoldVIP(i int, hold bool) {
	r.acts = append(r.acts, fmt.Sprintf("vip %s %s", r.names[i], map[bool]string{true: "on", false: "off"}[hold]))
}
func (r *recorder) AskWitness(takeover bool) { r.asks = append(r.asks, takeover) }
func (r *recorder) Alarm(a Alarm) {
	k := alarmKey{a.Kind, a.Subject}
	if a.On == r.raised[k] && a.On {
		// A raise with a new message is allowed; check the text changed.
		for i := len(r.alarmed) - 1; i >= 0; i-- {
			if p := r.alarmed[i]; p.Kind == a.Kind && p.Subject == a.Subject {
				if p.Msg == a.Msg {
					r.t.Errorf("alarm %v %q raised twice with the same message", a.Kind, a.Subject)
				}
				break
			}
		}
	}
	if !a.On && !r.raised[k] {
		r.t.Errorf("alarm %v %q cleared while not raised", a.Kind, a.Subject)
	}
	r.raised[k] = a.On
	r.alarmed = append(r.alarmed, a)
	sign := "-"
	if a.On {
		sign = "+"
	}
	s := sign + a.Kind.String()
	if a.Subject != "" {
		s += " " + a.Subject
	}
	r.acts = append(r.acts, s)
}

// rig is one machine, named alpha (rank 0, odd epochs), paired with bravo.
type rig struct {
	*recorder
	cfg  Config
	now  time.Duration
	peer Config // bravo's config, for its digest
}

func baseConfig(streams ...Stream) Config {
	if len(streams) == 0 {
		streams = []Stream{{Name: "s1", Prefer: "alpha"}}
	}
	return Config{Self: "alpha", Peer: "bravo", Streams: streams, Paths: 2, Heartbeat: hb, DetectMultiplier: 3}
}

func newRig(t *testing.T, cfg Config) *rig {
	t.Helper()
	r := &rig{recorder: &recorder{raised: map[alarmKey]bool{}, t: t}, cfg: cfg, now: time.Second}
	for _, s := range cfg.Streams {
		r.names = append(r.names, s.Name)
	}
	r.peer = cfg
	r.peer.Self, r.peer.Peer = cfg.Peer, cfg.Self
	m, err := New(cfg, r.recorder, r.now)
	if err != nil {
		t.Fatal(err)
	}
	r.m = m
	return r
}

// local is a healthy standby or owner view of a stream.
func healthy() Local {
	return Local{Carried: true, LinkUp: true, HasRing: true, RingFirst: 1, BitrateKbps: 1000}
}

// tick advances the clock by one heartbeat and ticks, every stream healthy
// unless set otherwise.
// startTicks is how many heartbeats a unit that hears nobody starts for.
var startTicks = int(max(3*hb+hb, minStartupWait) / hb)

func (r *rig) tick(n int, locals ...Local) {
	for range n {
		r.now += hb
		for i := range r.cfg.Streams {
			l := healthy()
			if i < len(locals) {
				l = locals[i]
			}
			r.m.SetLocal(r.now, i, l)
		}
		r.m.Tick(r.now)
	}
}

// from bravo: a message with bravo's digest and state up.
func (r *rig) msg(entries ...Entry) Message {
	return Message{Version: Version, Digest: Digest(r.peer), State: Up, FreeStreams: NoLimitStreams, FreeBitrate: NoLimitBitrate, Entries: entries}
}

// recv delivers m on every path; bravo heard alpha's last tick.
func (r *rig) recv(m Message) {
	for p := range r.cfg.Paths {
		m.Path = uint8(p)
		r.m.Receive(r.now, p, m)
	}
	r.m.PeerHeard(r.now, r.now-hb)
}

// tickHearing ticks n times, hearing bravo's entries every heartbeat.
func (r *rig) tickHearing(n int, entries ...Entry) {
	for range n {
		r.tick(1)
		r.recv(r.msg(entries...))
	}
}

func (r *rig) expect(want ...string) {
	r.t.Helper()
	got := strings.Join(r.acts, "; ")
	if got != strings.Join(want, "; ") {
		r.t.Fatalf("actions:\n got  %s\n want %s", got, strings.Join(want, "; "))
	}
	r.acts = nil
}

func ready(i int, epoch uint32) Entry {
	return Entry{Index: uint16(i), Epoch: epoch, Ready: true, HasRing: true, RingFirst: 1}
}

func (r *rig) lastEntry(i int) Entry {
	r.t.Helper()
	for k := len(r.sent) - 1; k >= 0; k-- {
		for _, e := range r.sent[k].Entries {
			if int(e.Index) == i {
				return e
			}
		}
	}
	r.t.Fatal("no entry sent")
	return Entry{}
}

// owning brings alpha up as owner of every stream preferring it.
func (r *rig) owning() {
	r.t.Helper()
	var es []Entry
	for i := range r.cfg.Streams {
		es = append(es, ready(i, 0))
	}
	r.tick(1)
	r.recv(r.msg(es...))
	r.acts = nil
}

func TestStartupClaimsPreferredOnceTheTableArrives(t *testing.T) {
	r := newRig(t, baseConfig(Stream{Name: "s1", Prefer: "alpha"}, Stream{Name: "s2", Prefer: "bravo"}))
	r.tick(1)
	r.expect()
	if st := r.m.Status(r.now); st.State != Starting {
		t.Fatalf("state %v, want starting", st.State)
	}
	r.recv(r.msg(ready(0, 0), ready(1, 0)))
	r.expect("forward s1")
	if e := r.lastEntry(0); e.Epoch != 1 || !e.Forwarding {
		t.Fatalf("s1 entry %+v, want epoch 1 forwarding", e)
	}
	// s2 is bravo's to claim: alpha waits for it while bravo is live.
	r.tickHearing(10, ready(0, 1), ready(1, 0))
	r.expect()
	r.recv(r.msg(ready(0, 1), Entry{Index: 1, Epoch: 2, Forwarding: true}))
	r.expect()
	if st := r.m.Status(r.now); st.Streams[1].Owner != "bravo" || st.Streams[0].Role != "active" {
		t.Fatalf("status %+v", st.Streams)
	}
}

func TestStartupWaitsThenClaimsAloneWithoutWitness(t *testing.T) {
	r := newRig(t, baseConfig(Stream{Name: "s1", Prefer: "alpha"}, Stream{Name: "s2", Prefer: "bravo"}))
	r.tick(startTicks - 1)
	r.expect()
	r.tick(1) // minStartupWait: starting ends; bravo silent, so alpha takes s2 too
	r.expect("+PeerLost bravo", "+PathDown 0", "+PathDown 1", "forward s1", "forward s2")
}

func TestNewerEpochWinsAtOnce(t *testing.T) {
	r := newRig(t, baseConfig())
	r.owning()
	r.recv(r.msg(Entry{Index: 0, Epoch: 2, Forwarding: true}))
	r.expect("standby s1")
	r.recv(r.msg(Entry{Index: 0, Epoch: 1})) // older: ignored
	r.expect()
	// Until the media confirms the stop, the entry says forwarding.
	if e := r.lastEntry(0); e.Epoch != 2 || !e.Forwarding {
		t.Fatalf("entry %+v, want epoch 2, still forwarding", e)
	}
	r.m.Stopped(r.now, 0, 5, true)
	if e := r.lastEntry(0); e.Epoch != 2 || e.Forwarding {
		t.Fatalf("entry %+v, want epoch 2 standby", e)
	}
}

func TestDisagreeingPeerNeverCausesTakeover(t *testing.T) {
	for _, bad := range []func(*Message){
		func(m *Message) { m.Digest ^= 1 },
		func(m *Message) { *m = Message{Version: Version + 1} },
	} {
		r := newRig(t, baseConfig(Stream{Name: "s1", Prefer: "bravo"}))
		r.tickHearing(1, Entry{Index: 0, Epoch: 2, Forwarding: true, HasProgress: true, Progress: 7})
		r.acts = nil
		// The "peer" now says it owns everything with a huge epoch, with
		// another config: it is alive, so nothing is taken, and its
		// entries are not read.
		for range 50 {
			r.tick(1)
			m := r.msg(Entry{Index: 0, Epoch: 1001, HasStart: true, Start: 3})
			bad(&m)
			r.recv(m)
		}
		r.expect("+Mismatch")
		if e := r.lastEntry(0); e.Epoch != 2 {
			t.Fatalf("epoch %d after a disagreeing peer, want 2", e.Epoch)
		}
		if err := r.m.Handover(r.now, 0); !errors.Is(err, ErrNotOwner) {
			t.Fatalf("handover: %v", err)
		}
		// Agreement returns: the alarm clears once.
		r.tickHearing(2, Entry{Index: 0, Epoch: 2, Forwarding: true})
		r.expect("-Mismatch")
	}
}

func TestTakeoverAfterSilence(t *testing.T) {
	r := newRig(t, baseConfig(Stream{Name: "s1", Prefer: "bravo"}))
	owner := Entry{Index: 0, Epoch: 2, Forwarding: true, HasProgress: true, Progress: 41,
		Cont: Continuity{Valid: true, SeqOffset: 9}}
	r.tickHearing(5, owner)
	r.expect()
	r.tick(2)
	r.expect()
	r.tick(1) // D after the last message
	r.expect("+PeerLost bravo", "+PathDown 0", "+PathDown 1", "forward s1 from 42 cont 9")
	if e := r.lastEntry(0); e.Epoch != 3 || !e.HasStart || e.Start != 42 {
		t.Fatalf("entry %+v, want epoch 3 start 42", e)
	}
	// The peer returns (restarted, knowing nothing): with preempt off the
	// stream stays; the alarms clear once.
	r.tickHearing(3, ready(0, 0))
	r.expect("-PeerLost bravo", "-PathDown 0", "-PathDown 1")
	r.tickHearing(300, ready(0, 3))
	r.expect()
}

// TestSilentAtIsWhenTheTakeoverFallsDue: a driver that ticks at SilentAt
// takes over then, not at the next heartbeat.
func TestSilentAtIsWhenTheTakeoverFallsDue(t *testing.T) {
	r := newRig(t, baseConfig(Stream{Name: "s1", Prefer: "bravo"}))
	r.tickHearing(5, Entry{Index: 0, Epoch: 2, Forwarding: true})
	at := r.m.SilentAt()
	if want := r.now + r.m.d; at != want {
		t.Fatalf("SilentAt %v, want the last message + D = %v", at, want)
	}
	r.tick(2)
	r.expect()
	// Between two heartbeats: a millisecond before it falls due, nothing;
	// at it, the takeover, without waiting for the next heartbeat.
	for _, now := range []time.Duration{at - time.Millisecond, at} {
		r.now = now
		r.m.SetLocal(now, 0, healthy())
		r.m.Tick(now)
		if now < at {
			r.expect()
		}
	}
	r.expect("+PeerLost bravo", "+PathDown 0", "+PathDown 1", "forward s1")
}

func TestStallIsNotSilence(t *testing.T) {
	r := newRig(t, baseConfig(Stream{Name: "s1", Prefer: "bravo"}))
	r.tickHearing(5, Entry{Index: 0, Epoch: 2, Forwarding: true})
	r.acts = nil
	// The machine is not run for 200 ms; the peer's messages wait in the
	// socket. The first tick after it must not take over.
	r.now += 200 * time.Millisecond
	r.tick(1)
	r.expect()
	r.recv(r.msg(Entry{Index: 0, Epoch: 2, Forwarding: true}))
	r.tickHearing(5, Entry{Index: 0, Epoch: 2, Forwarding: true})
	r.expect()
}

func TestRestartFasterThanDetectionResumesOwnStreams(t *testing.T) {
	// alpha owned s1 (epoch 5, odd) and restarted before bravo noticed:
	// bravo's table says alpha owns it, so alpha forwards it again, from
	// the live point (its ring is new).
	r := newRig(t, baseConfig(Stream{Name: "s1", Prefer: "bravo"}))
	r.m.SetLocal(r.now, 0, healthy())
	r.recv(r.msg(Entry{Index: 0, Epoch: 5, HasStart: true, Start: 100, Ready: true}))
	r.expect("forward s1")
}

func TestDualHandoverStopsThenGrantsEpochFromLastPlusOne(t *testing.T) {
	r := newRig(t, baseConfig())
	r.owning()
	if err := r.m.Handover(r.now, 0); err != nil {
		t.Fatal(err)
	}
	r.expect("standby s1")
	if err := r.m.Handover(r.now, 0); !errors.Is(err, ErrHandoverPending) {
		t.Fatalf("second handover: %v", err)
	}
	r.m.Stopped(r.now, 0, 65535, true)
	r.expect()
	if e := r.lastEntry(0); e.Epoch != 2 || !e.HasStart || e.Start != 0 || e.Forwarding {
		t.Fatalf("entry %+v, want epoch 2 start 0 (65535+1)", e)
	}
	if err := r.m.Handover(r.now, 0); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("handover of a stream not owned: %v", err)
	}
}

func TestHandoverRefusedSaysWhy(t *testing.T) {
	r := newRig(t, baseConfig())
	r.owning()
	r.recv(r.msg(Entry{Index: 0, Epoch: 1})) // not ready
	if err := r.m.Handover(r.now, 0); !errors.Is(err, ErrPeerNotReady) {
		t.Fatalf("handover to an unready peer: %v", err)
	}
	m := r.msg(ready(0, 1))
	m.FreeStreams = 0
	r.recv(m)
	if err := r.m.Handover(r.now, 0); !errors.Is(err, ErrPeerOverCapacity) {
		t.Fatalf("handover to a full peer: %v", err)
	}
	m = r.msg(ready(0, 1))
	m.State = Draining
	r.recv(m)
	if err := r.m.Handover(r.now, 0); !errors.Is(err, ErrPeerUnavailable) {
		t.Fatalf("handover to a draining peer: %v", err)
	}
	if err := r.m.Handover(r.now, 7); !errors.Is(err, ErrNoSuchStream) {
		t.Fatalf("handover of stream 7: %v", err)
	}
	r.expect()
}

func TestStandbyForwardsAHandoverFromItsStart(t *testing.T) {
	r := newRig(t, baseConfig(Stream{Name: "s1", Prefer: "bravo"}))
	r.tickHearing(1, Entry{Index: 0, Epoch: 2, Forwarding: true})
	r.recv(r.msg(Entry{Index: 0, Epoch: 3, HasStart: true, Start: 500, Cont: Continuity{Valid: true, SeqOffset: 4}}))
	r.expect("forward s1 from 500 cont 4")
}

func TestVIPHandoverWaitsForTheRing(t *testing.T) {
	r := newRig(t, baseConfig(Stream{Name: "s1", Prefer: "alpha", VIP: true}))
	r.owning()
	r.tickHearing(1, ready(0, 1))
	fwd := func(p uint16) Local { l := healthy(); l.HasProgress, l.Progress = true, p; return l }
	if err := r.m.Handover(r.now, 0); err != nil {
		t.Fatal(err)
	}
	if e := r.lastEntry(0); !e.Prepare {
		t.Fatalf("entry %+v, want prepare", e)
	}
	// The peer holds the address and reports the ring from 200.
	holding := Entry{Index: 0, Epoch: 1, Ready: true, Prepare: true, HasRing: true, RingFirst: 200}
	r.tick(1, fwd(150))
	r.recv(r.msg(holding))
	r.tick(1, fwd(198))
	r.expect()
	r.tick(1, fwd(199)) // every packet before 200 went through alpha
	r.expect("standby s1", "vip s1 off")
	r.m.Stopped(r.now, 0, 199, true)
	if e := r.lastEntry(0); e.Epoch != 2 || e.Start != 200 {
		t.Fatalf("entry %+v, want epoch 2 start 200", e)
	}
}

func TestVIPStandbyHoldsTheAddressOnlyWhileAsked(t *testing.T) {
	r := newRig(t, baseConfig(Stream{Name: "s1", Prefer: "bravo", VIP: true}))
	r.tickHearing(1, Entry{Index: 0, Epoch: 2, Forwarding: true})
	r.acts = nil
	r.recv(r.msg(Entry{Index: 0, Epoch: 2, Forwarding: true, Prepare: true}))
	r.expect("vip s1 on")
	if e := r.lastEntry(0); !e.Prepare {
		t.Fatalf("standby entry %+v: prepare echoes that it holds the address", e)
	}
	// Messages may come out of order: one without the flag is not enough,
	// two heartbeats without it are.
	r.recv(r.msg(Entry{Index: 0, Epoch: 2, Forwarding: true}))
	r.expect()
	// Until then, while nothing comes through the address (the ring has
	// not moved), it announces the address again every heartbeat.
	r.tickHearing(2, Entry{Index: 0, Epoch: 2, Forwarding: true})
	r.expect("vip s1 on", "vip s1 off")
	r.recv(r.msg(Entry{Index: 0, Epoch: 2, Forwarding: true, Prepare: true}))
	r.recv(r.msg(Entry{Index: 0, Epoch: 3, HasStart: true, Start: 9}))
	r.expect("vip s1 on", "forward s1 from 9")
}

func TestVIPHandoverGoesAheadAfterTimeout(t *testing.T) {
	r := newRig(t, baseConfig(Stream{Name: "s1", Prefer: "alpha", VIP: true}))
	r.owning()
	r.tickHearing(1, ready(0, 1))
	r.acts = nil
	r.m.SetUnit(r.now, Draining, "temp:cpu critical")
	prepareTicks := int(max(vipPrepareTimeout*hb, vipPrepareMin) / hb)
	r.tickHearing(prepareTicks-1, ready(0, 1))
	r.expect()
	r.tickHearing(1, ready(0, 1))
	r.expect("+CannotHandOver s1", "standby s1", "vip s1 off")
	r.m.Stopped(r.now, 0, 10, true)
	r.expect("-CannotHandOver s1")
}

func TestDrainingHandsOverOrSaysWhyNot(t *testing.T) {
	r := newRig(t, baseConfig())
	r.owning()
	r.recv(r.msg(Entry{Index: 0, Epoch: 1})) // bravo cannot receive s1
	r.m.SetUnit(r.now, Draining, "power.on-battery")
	r.expect("+CannotHandOver s1")
	r.tick(1)
	r.recv(r.msg(Entry{Index: 0, Epoch: 1}))
	r.expect()
	r.recv(r.msg(ready(0, 1)))
	r.expect("-CannotHandOver s1", "standby s1")
	if st := r.m.Status(r.now); st.State != Draining || st.Streams[0].Phase != PhaseStopping {
		t.Fatalf("status %+v", st)
	}
}

func TestLocalFaultHandsTheStreamOver(t *testing.T) {
	r := newRig(t, baseConfig())
	r.owning()
	r.recv(r.msg(ready(0, 1)))
	down := healthy()
	down.LinkUp = false
	r.tick(1, down)
	r.expect("standby s1")
	r.m.Stopped(r.now, 0, 3, true)
	// Its link went down under the last packets it sent: the peer starts
	// linkRewind packets earlier, from its ring.
	last := uint16(3)
	want := last + 1 - linkRewind
	if e := r.lastEntry(0); e.Epoch != 2 || e.Start != want || e.Ready {
		t.Fatalf("entry %+v, want epoch 2 from %d", e, want)
	}
}

func TestPreemptionWaitsForTheHold(t *testing.T) {
	cfg := baseConfig(Stream{Name: "s1", Prefer: "bravo"})
	cfg.Preempt, cfg.PreemptHold = true, 100*time.Millisecond
	r := newRig(t, cfg)
	r.tick(startTicks) // bravo silent: alpha takes s1
	r.acts = nil
	// bravo returns, up: s1 moves back only after it has been up for the hold.
	r.tickHearing(10, ready(0, 1))
	r.expect("-PeerLost bravo", "-PathDown 0", "-PathDown 1")
	r.tickHearing(1, ready(0, 1))
	r.expect("standby s1")
	r.m.Stopped(r.now, 0, 1, true)
	// bravo took it (epoch 2), then fails over to alpha again at once (epoch 3):
	r.recv(r.msg(Entry{Index: 0, Epoch: 2, Forwarding: true}))
	r.recv(r.msg(Entry{Index: 0, Epoch: 3, HasStart: true, Start: 7}))
	r.expect("forward s1 from 7")
	// It just moved: no preemption for the hold, though bravo is up.
	r.tickHearing(9, ready(0, 3))
	r.expect()
	r.tickHearing(1, ready(0, 3))
	r.expect("standby s1")
}

func TestWithoutPreemptStreamsStay(t *testing.T) {
	r := newRig(t, baseConfig(Stream{Name: "s1", Prefer: "bravo"}))
	r.tick(startTicks)
	r.acts = nil
	r.tickHearing(200, ready(0, 1))
	r.expect("-PeerLost bravo", "-PathDown 0", "-PathDown 1")
}

func TestCapacityTakesByPriority(t *testing.T) {
	cfg := baseConfig(
		Stream{Name: "a", Prefer: "bravo", Priority: 1},
		Stream{Name: "b", Prefer: "bravo", Priority: 5},
		Stream{Name: "c", Prefer: "bravo", Priority: 3},
	)
	cfg.Capacity.Streams = 2
	r := newRig(t, cfg)
	r.tickHearing(1, Entry{Index: 0, Epoch: 2}, Entry{Index: 1, Epoch: 2}, Entry{Index: 2, Epoch: 2})
	r.acts = nil
	r.tick(3)
	want := "+OverCapacity"
	r.expect("+PeerLost bravo", "+PathDown 0", "+PathDown 1", "forward b", "forward c", want)
	if a := r.alarmed[len(r.alarmed)-1]; !strings.Contains(a.Msg, " a:") && !strings.Contains(a.Msg, "for a") {
		t.Fatalf("over-capacity message %q does not name stream a", a.Msg)
	}
	// The peer returns: it is carried again by its owner; the alarm clears.
	r.tickHearing(1, Entry{Index: 0, Epoch: 2, Forwarding: true}, Entry{Index: 1, Epoch: 3}, Entry{Index: 2, Epoch: 3})
	r.expect("-PeerLost bravo", "-PathDown 0", "-OverCapacity", "-PathDown 1")
}

func witnessRig(t *testing.T, prefer string) *rig {
	cfg := baseConfig(Stream{Name: "s1", Prefer: prefer})
	cfg.Witness = true
	return newRig(t, cfg)
}

func TestFencedWithoutLeaseOrPeer(t *testing.T) {
	r := witnessRig(t, "alpha")
	r.m.WitnessAnswer(r.now, r.now, true, false)
	r.owning() // alpha owns s1; bravo heard alpha's tick before this one
	// A lease runs D − heartbeat from its request: to 20 ms from now; the
	// peer's word, D + heartbeat from alpha's tick it heard: to 30 ms.
	r.m.WitnessAnswer(r.now, r.now, true, false)
	r.tick(2)
	r.expect()
	// The peer is silent and the witness stops answering.
	r.tick(1)
	r.expect("standby s1", "+Fenced", "+WitnessUnreachable", "+PeerLost bravo", "+PathDown 0", "+PathDown 1")
	if st := r.m.Status(r.now); st.Streams[0].Phase != PhaseFenced || !st.Fenced {
		t.Fatalf("status %+v", st)
	}
	// The witness answers again: alpha resumes, from after its last packet.
	r.m.Stopped(r.now, 0, 99, true)
	r.m.WitnessAnswer(r.now, r.now, true, false)
	r.expect("forward s1 from 100", "-Fenced", "-WitnessUnreachable")
}

func TestHearingAPeerThatDoesNotHearUsIsNoRight(t *testing.T) {
	r := witnessRig(t, "alpha")
	r.m.WitnessAnswer(r.now, r.now, true, false)
	r.owning()
	// bravo's messages keep coming, but they echo an old send time of
	// alpha's: bravo does not hear alpha, and may be about to take over.
	old := r.now - hb
	for range 3 {
		r.tick(1)
		for p := range r.cfg.Paths {
			r.m.Receive(r.now, p, r.msg(ready(0, 1)))
		}
		r.m.PeerHeard(r.now, old)
	}
	r.expect("+WitnessUnreachable", "standby s1", "+Fenced")
	// Once bravo hears alpha again, and its entry for s1 came since,
	// alpha resumes.
	r.tickHearing(1, ready(0, 1))
	r.expect("forward s1", "-Fenced")
}

func TestWitnessTakeoverNeedsTheGrant(t *testing.T) {
	r := witnessRig(t, "bravo")
	r.tickHearing(2, Entry{Index: 0, Epoch: 2, Forwarding: true})
	// The witness answers every request at once, with a lease; whether it
	// grants a takeover is the test's.
	tick := func(n int, grant bool) {
		for range n {
			r.tick(1)
			r.m.WitnessAnswer(r.now, r.now, true, grant && r.asks[len(r.asks)-1])
		}
	}
	r.m.WitnessAnswer(r.now, r.now, true, false)
	tick(3, false)
	r.expect("+PeerLost bravo", "+PathDown 0", "+PathDown 1")
	if !r.asks[len(r.asks)-1] {
		t.Fatalf("asks %v: the last should ask for takeover", r.asks)
	}
	// Granted at 40 ms of silence: alpha still waits until D + 3 heartbeats
	// have passed since alpha's last message bravo heard (sent at -10 ms),
	// as bravo may forward on alpha's word to D + heartbeat after it, and
	// checks that once a heartbeat.
	tick(1, true)
	r.expect()
	tick(1, true)
	r.expect("forward s1")
}

func TestWitnessDeniesTakeoverWhenBothAsk(t *testing.T) {
	w := NewWitness()
	d := 30 * time.Millisecond
	req := func(unit, peer string, takeover, hears bool) WitnessRequest {
		return WitnessRequest{Unit: unit, Peer: peer, Takeover: takeover, HearsPeer: hears, Detect: d, Heartbeat: hb}
	}
	now := time.Second
	// The pair link is cut; both units reach the witness and ask.
	for range 100 {
		now += hb
		for _, a := range []WitnessAnswer{w.Ask(now, req("alpha", "bravo", true, false)), w.Ask(now, req("bravo", "alpha", true, false))} {
			if a.Takeover || !a.Lease {
				t.Fatalf("answer %+v: both keep their leases, neither takes over", a)
			}
		}
	}
	// bravo goes quiet: alpha gets the takeover only once bravo has been
	// unheard for D + heartbeat, and bravo is fenced until it hears alpha.
	last := now
	for now < last+d+hb {
		now += hb
		if a := w.Ask(now, req("alpha", "bravo", true, false)); a.Takeover != (now-last >= d+hb) {
			t.Fatalf("at %v after bravo: %+v", now-last, a)
		}
	}
	if a := w.Ask(now, req("bravo", "alpha", true, false)); a.Lease || a.Takeover {
		t.Fatalf("fenced bravo got %+v", a)
	}
	if a := w.Ask(now, req("bravo", "alpha", false, true)); !a.Lease {
		t.Fatalf("bravo hearing alpha got %+v, want a lease", a)
	}
}

func TestWitnessThatRestartedWaitsBeforeGranting(t *testing.T) {
	w := NewWitness()
	now := 5 * time.Second
	r := WitnessRequest{Unit: "alpha", Peer: "bravo", Takeover: true, Detect: 30 * time.Millisecond, Heartbeat: hb}
	if a := w.Ask(now, r); a.Takeover {
		t.Fatal("a fresh witness granted a takeover against a unit it never had time to hear")
	}
	if a := w.Ask(now+40*time.Millisecond, r); !a.Takeover {
		t.Fatal("no takeover after D + heartbeat")
	}
}

func TestConfigRefusedWithEveryReason(t *testing.T) {
	cfg := Config{Self: "a", Peer: "a", Streams: []Stream{{Name: "z"}, {Name: "b", Prefer: "x"}, {Name: "b"}}, Heartbeat: 0, DetectMultiplier: 1}
	_, err := New(cfg, &recorder{}, 0)
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("err %v", err)
	}
	for _, want := range []string{"both named", "heartbeat paths", "heartbeat 0s", "detect multiplier", "out of order", "prefers \"x\"", "listed twice"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestDigestIsTheSameOnBothUnits(t *testing.T) {
	a := baseConfig(Stream{Name: "s1"}, Stream{Name: "s2", Prefer: "bravo", Priority: 3})
	b := a
	b.Self, b.Peer = a.Peer, a.Self
	b.Streams = []Stream{{Name: "s1", Prefer: "alpha"}, {Name: "s2", Prefer: "bravo"}}
	b.Capacity.Streams, b.Preempt, b.PreemptHold = 1, true, time.Second
	if Digest(a) != Digest(b) {
		t.Fatal("digest differs across the units of one pair config")
	}
	for _, change := range []func(*Config){
		func(c *Config) { c.Heartbeat++ },
		func(c *Config) { c.DetectMultiplier++ },
		func(c *Config) { c.Witness = true },
		func(c *Config) { c.Peer = "charlie" },
		func(c *Config) { c.Streams = []Stream{{Name: "s1", VIP: true}, c.Streams[1]} },
		func(c *Config) { c.Streams = []Stream{{Name: "s1", Prefer: "bravo"}, c.Streams[1]} },
		func(c *Config) { c.Streams = c.Streams[:1] },
	} {
		c := a
		c.Streams = append([]Stream(nil), a.Streams...)
		change(&c)
		if Digest(c) == Digest(a) {
			t.Errorf("a change of %+v kept the digest", c)
		}
	}
}
