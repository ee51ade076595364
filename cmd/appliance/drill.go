package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"appliance/control"
	"appliance/status"
)

// ErrDrillRunning means another drill has not finished.
var ErrDrillRunning = errors.New("a drill is already running on this unit; wait for it to finish")

// drillLimit bounds how long a drill waits for the peer to take the streams.
const drillLimit = 10 * time.Second

// Drill implements control.Actions.
func (u *unit) Drill(ctx context.Context, scenario, stream string) (control.DrillResult, error) {
	if u.pair == nil {
		return control.DrillResult{}, ErrNotPaired
	}
	return u.pair.runDrill(ctx, scenario, stream)
}

// runDrill moves this unit's streams to the peer the way the scenario would
// and measures, per stream, how long it went without a forwarder and how
// many input packets the two units' agreed sequence numbers skipped or
// repeated. The peer must be up and in agreement: a drill never costs a
// stream that a real fault would not.
func (p *pairUnit) runDrill(ctx context.Context, scenario, only string) (control.DrillResult, error) {
	if !p.drillRunning.CompareAndSwap(false, true) {
		return control.DrillResult{}, ErrDrillRunning
	}
	defer p.drillRunning.Store(false)
	v := p.view.Load()
	if ps := peerStateName(v.st); ps != "up" || !v.st.Agreement {
		return control.DrillResult{}, fmt.Errorf("the peer %s is %s (agreement: %v): a drill needs a healthy peer to take the streams", p.pc.PeerName, ps, v.st.Agreement)
	}
	self := p.u.cfg.Unit.Name
	var names []string
	for name, o := range v.owner {
		if o.owner == self && (only == "" || only == name) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	if only != "" && len(names) == 0 {
		if _, ok := p.index[only]; !ok {
			return control.DrillResult{}, control.Mark(control.ErrNoStream, fmt.Errorf("no stream %q on this unit", only))
		}
		return control.DrillResult{}, fmt.Errorf("stream %s is not forwarded by this unit; run the drill on %s", only, p.pc.PeerName)
	}
	if len(names) == 0 {
		return control.DrillResult{}, fmt.Errorf("this unit forwards no stream; run the drill on %s", p.pc.PeerName)
	}
	started := p.u.clk.Now()
	rec := status.Drill{Scenario: scenario, Started: started, Result: "running", Streams: len(names)}
	p.addDrill(rec)
	defer func() {
		if rec.Result == "running" { // the caller went away mid-drill
			rec.Result, rec.Detail = "failed", "interrupted: the drill's caller went away"
			p.updateDrill(rec)
		}
	}()

	p.fastView.Store(true)
	defer p.fastView.Store(false)
	t0 := p.u.clk.Mono()
	var err error
	switch scenario {
	case control.DrillPlanned:
		for _, n := range names {
			reply := make(chan error, 1)
			select {
			case p.reqs <- pairReq{stream: p.index[n], reply: reply}:
			case <-ctx.Done():
				return control.DrillResult{}, ctx.Err()
			}
			select {
			case e := <-reply:
				if e != nil {
					err = fmt.Errorf("stream %s: %w", n, e)
				}
			case <-ctx.Done():
				return control.DrillResult{}, ctx.Err()
			}
			if err != nil {
				break
			}
		}
	case control.DrillOverheat:
		why := "drill: a simulated critical temperature"
		p.drill.Store(&why)
		defer p.drill.Store(nil)
	case control.DrillPowerLoss:
		// As a power cut: no more heartbeats, and every stream stops at
		// once. The unit keeps listening, so it learns the peer's epochs
		// and joins as standby when the drill ends.
		p.muted.Store(true)
		p.node.SetMuted(true)
		defer func() {
			p.node.SetMuted(false)
			p.muted.Store(false)
		}()
		for _, n := range names {
			p.enqueue(pairOp{kind: opDrillStop, stream: p.index[n]})
		}
	}
	res := control.DrillResult{Scenario: scenario, Streams: len(names)}
	if err == nil {
		err = p.measure(ctx, names, t0, &res)
	}
	if err != nil {
		res.Result, res.Detail = "failed", err.Error()
	} else {
		res.Result = "ok"
	}
	rec.Result, rec.Detail, rec.GapMs, rec.Lost, rec.Duplicates = res.Result, res.Detail, res.GapMs, res.Lost, res.Duplicates
	p.updateDrill(rec)
	p.u.log.Info("drill", "scenario", scenario, "result", res.Result, "streams", res.Streams, "gap_ms", res.GapMs,
		"lost", res.Lost, "duplicates", res.Duplicates, "detail", res.Detail)
	return res, nil
}

// measure waits until the peer owns every stream and works out the figures:
// the gap runs from this unit's last forwarded packet (the stop) to the
// moment the peer's new epoch reached this unit, so it includes one
// one-way delay; lost and duplicates compare the last sequence number this
// unit forwarded with the one the peer started from.
func (p *pairUnit) measure(ctx context.Context, names []string, t0 time.Duration, res *control.DrillResult) error {
	peer := p.pc.PeerName
	taken := map[string]time.Duration{}
	deadline := t0 + drillLimit
	tk := p.u.clk.NewTicker(time.Millisecond)
	defer tk.Stop()
	for len(taken) < len(names) {
		v := p.view.Load()
		now := p.u.clk.Mono()
		for _, n := range names {
			if _, ok := taken[n]; !ok && v.owner[n].owner == peer {
				taken[n] = now
			}
		}
		if len(taken) == len(names) {
			break
		}
		if now > deadline {
			return fmt.Errorf("the peer took %d of %d streams within %v", len(taken), len(names), drillLimit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tk.C():
		}
	}
	v := p.view.Load()
	starts := map[string]*uint16{}
	for _, s := range v.st.Streams {
		if s.HasStart {
			st := s.Start
			starts[s.Name] = &st
		}
	}
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	for _, n := range names {
		stop, ok := p.stops[p.index[n]]
		ok = ok && stop.at >= t0 // a stop from before this drill says nothing
		from := t0
		if ok {
			from = stop.at
		}
		gap := taken[n] - from
		res.GapMs = max(res.GapMs, ms(gap))
		if start := starts[n]; ok && stop.ok && start != nil {
			d := int(int16(*start - (stop.last + 1)))
			if d > 0 {
				res.Lost += d
			} else {
				res.Duplicates += -d
			}
		}
	}
	return nil
}

func (p *pairUnit) addDrill(d status.Drill) {
	p.drillMu.Lock()
	defer p.drillMu.Unlock()
	p.drills = append([]status.Drill{d}, p.drills...)
	if len(p.drills) > maxDrills {
		p.drills = p.drills[:maxDrills]
	}
}

func (p *pairUnit) updateDrill(d status.Drill) {
	p.drillMu.Lock()
	defer p.drillMu.Unlock()
	for i := range p.drills {
		if p.drills[i].Started.Equal(d.Started) && p.drills[i].Scenario == d.Scenario {
			p.drills[i] = d
			return
		}
	}
}
