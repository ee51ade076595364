package hw

import (
	"context"
	"log/slog"
	"sync"

	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/load"
	"github.com/shirou/gopsutil/v4/mem"
)

// Load is how busy the unit is.
type Load struct {
	CPUPct     float64 `json:"cpu_pct"` // since the previous reading
	MemUsedPct float64 `json:"mem_used_pct"`
	Load1      float64 `json:"load1"`
}

// loadReader reads Load through gopsutil. A figure that cannot be read is
// zero; its error is logged when it starts failing, not on every poll.
type loadReader struct {
	log *slog.Logger

	mu      sync.Mutex
	failing map[string]bool
}

func (r *loadReader) read(ctx context.Context) Load {
	var l Load
	if pcts, err := cpu.PercentWithContext(ctx, 0, false); r.check("cpu", err) && len(pcts) > 0 {
		l.CPUPct = pcts[0]
	}
	if vm, err := mem.VirtualMemoryWithContext(ctx); r.check("memory", err) {
		l.MemUsedPct = vm.UsedPercent
	}
	if avg, err := load.AvgWithContext(ctx); r.check("load average", err) {
		l.Load1 = avg.Load1
	}
	return l
}

// check reports whether err is nil, logging the first of a run of failures.
func (r *loadReader) check(what string, err error) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		if r.failing[what] {
			r.log.Info("reading " + what + " works again")
			delete(r.failing, what)
		}
		return true
	}
	if !r.failing[what] {
		r.log.Warn("cannot read "+what+"; reporting 0 until it works", "err", err)
		if r.failing == nil {
			r.failing = map[string]bool{}
		}
		r.failing[what] = true
	}
	return false
}
