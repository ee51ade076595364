package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"appliance/config"
	"appliance/control"
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
	return r, kindOf(err)
}

func (a unitActions) SetRole(ctx context.Context, stream, role string, from *uint16) (control.RoleResult, error) {
	if err := a.usable(); err != nil {
		return control.RoleResult{}, err
	}
	r, err := a.u.SetRole(ctx, stream, role, from)
	return r, kindOf(err)
}

func (a unitActions) Handover(ctx context.Context, stream string) (control.HandoverResult, error) {
	if err := a.usable(); err != nil {
		return control.HandoverResult{}, err
	}
	r, err := a.u.Handover(ctx, stream)
	return r, kindOf(err)
}

func (a unitActions) Drill(ctx context.Context, scenario, stream string) (control.DrillResult, error) {
	if err := a.usable(); err != nil {
		return control.DrillResult{}, err
	}
	r, err := a.u.Drill(ctx, scenario, stream)
	return r, kindOf(err)
}

func (a unitActions) Restart(ctx context.Context, stream string) (control.RestartResult, error) {
	if err := a.usable(); err != nil {
		return control.RestartResult{}, err
	}
	r, err := a.u.Restart(ctx, stream)
	return r, kindOf(err)
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
