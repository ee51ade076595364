package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"appliance/config"
	"appliance/control"
	"appliance/internal/clock"
	"appliance/media"
	"appliance/status"
)

// Restart implements control.Actions: it restarts one stream's pipeline on
// its worker, the narrowest restart there is; the worker and its other
// streams carry on.
func (u *unit) Restart(ctx context.Context, stream string) (control.RestartResult, error) {
	r, err := u.media.Restart(ctx, stream)
	if err != nil {
		return control.RestartResult{}, err
	}
	return control.RestartResult{Stream: stream, Worker: r.Worker, WorkerPID: r.WorkerPID, Restarts: r.Restarts}, nil
}

// unitActions is the unit as the control socket and the HTTP API both call
// it: once the unit has failed, every action is refused with what to do,
// and each error is marked with its kind, which the API answers with a
// status code.
type unitActions struct{ u *unit }

var errUnitFailed = control.Mark(control.ErrFailed, errors.New("the unit has failed: its supervision root gave up and the watchdogs are no longer fed (see /api/v1/status); restart it: systemctl restart appliance"))

func (a unitActions) usable() error {
	if a.u.gaveUp.Load() {
		return errUnitFailed
	}
	return nil
}

// kindOf marks the errors whose kind the unit knows.
func kindOf(err error) error {
	if errors.Is(err, media.ErrNoStream) {
		return control.Mark(control.ErrNoStream, fmt.Errorf("%w; `appliance status` (or GET /api/v1/status) lists this unit's streams", err))
	}
	return err
}

func (a unitActions) Reload(ctx context.Context) (control.ReloadResult, error) {
	if err := a.usable(); err != nil {
		return control.ReloadResult{}, err
	}
	r, err := a.u.Reload(ctx)
	err = kindOf(err)
	a.u.acts.record(ctx, a.u.clk, control.OpReload, "", err, func() string {
		return fmt.Sprintf("%d added, %d removed, %d changed", len(r.Added), len(r.Removed), len(r.Changed))
	})
	return r, err
}

func (a unitActions) SetRole(ctx context.Context, stream, role string, from *uint16) (control.RoleResult, error) {
	if err := a.usable(); err != nil {
		return control.RoleResult{}, err
	}
	r, err := a.u.SetRole(ctx, stream, role, from)
	err = kindOf(err)
	a.u.acts.record(ctx, a.u.clk, control.OpRole, stream, err, func() string { return "now " + role })
	return r, err
}

func (a unitActions) Handover(ctx context.Context, stream string) (control.HandoverResult, error) {
	if err := a.usable(); err != nil {
		return control.HandoverResult{}, err
	}
	r, err := a.u.Handover(ctx, stream)
	err = kindOf(err)
	a.u.acts.record(ctx, a.u.clk, control.OpHandover, stream, err, func() string {
		return fmt.Sprintf("handed over to %s (epoch %d)", r.To, r.Epoch)
	})
	return r, err
}

func (a unitActions) Drill(ctx context.Context, scenario, stream string) (control.DrillResult, error) {
	if err := a.usable(); err != nil {
		return control.DrillResult{}, err
	}
	r, err := a.u.Drill(ctx, scenario, stream)
	err = kindOf(err)
	a.u.acts.record(ctx, a.u.clk, control.OpDrill, stream, err, func() string {
		return fmt.Sprintf("%s drill: %s, %d streams moved, gap %.1f ms, %d lost, %d duplicates", scenario, r.Result, r.Streams, r.GapMs, r.Lost, r.Duplicates)
	})
	return r, err
}

func (a unitActions) Restart(ctx context.Context, stream string) (control.RestartResult, error) {
	if err := a.usable(); err != nil {
		return control.RestartResult{}, err
	}
	r, err := a.u.Restart(ctx, stream)
	err = kindOf(err)
	a.u.acts.record(ctx, a.u.clk, control.OpRestart, stream, err, func() string {
		return fmt.Sprintf("restarted on worker-%d", r.Worker)
	})
	return r, err
}

// Update implements control.Updater: on a unit that runs from the image,
// it starts an update; elsewhere it says why it cannot.
func (a unitActions) Update(ctx context.Context, bundle string) (control.UpdateResult, error) {
	if err := a.usable(); err != nil {
		return control.UpdateResult{}, err
	}
	var r control.UpdateResult
	var err error
	if a.u.updater == nil {
		err = fmt.Errorf("this unit cannot update itself: it does not run from an appliance image (no %s; docs/image.md)", updateKeyPath)
	} else {
		r, err = a.u.updater.Update(ctx, bundle)
	}
	a.u.acts.record(ctx, a.u.clk, control.OpUpdate, "", err, func() string {
		return fmt.Sprintf("update from %s started: slot %s is written once the bundle checks", r.Bundle, r.Slot)
	})
	return r, err
}

// actionLog keeps the last actions asked of the unit, for its event log:
// what, on which stream, by whom, and how it went.
type actionLog struct {
	mu  sync.Mutex
	evs []status.Event // oldest first
}

// maxActions is how many actions the log keeps.
const maxActions = 100

// record adds one action; done describes a success.
func (l *actionLog) record(ctx context.Context, clk clock.Clock, op, stream string, err error, done func() string) {
	e := status.Event{Time: clk.Now(), Source: "action", Kind: op, Stream: stream, By: control.ActorOf(ctx)}
	if err != nil {
		e.Failed, e.Message = true, err.Error()
	} else {
		e.Message = done()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.evs) == maxActions {
		l.evs = append(l.evs[:0], l.evs[1:]...)
	}
	l.evs = append(l.evs, e)
}

func (l *actionLog) recent() []status.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.evs)
}

// apiOptions are the status server's settings from the config, with the
// unit's actions behind it.
func apiOptions(cfg *config.Config, act control.Actions) status.Options {
	tokens := make([]status.Token, 0, len(cfg.Status.Tokens))
	for _, t := range cfg.Status.Tokens {
		tokens = append(tokens, status.Token{Name: t.Name, SHA256: t.SHA256})
	}
	return status.Options{
		MaxConnections: cfg.Status.MaxConnections,
		IdleTimeout:    time.Duration(cfg.Status.IdleTimeout),
		Actions:        act,
		Tokens:         tokens,
		TLS:            status.TLSFiles{Cert: cfg.Status.TLS.Cert, Key: cfg.Status.TLS.Key},
	}
}
