package media

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
)

// The parent and a worker talk over an inherited stream socket (fd 3 in the
// worker), in newline-delimited JSON: this is the control plane, a few
// messages a second, never the packet path. The parent sends one assignment;
// the worker answers with reports until it dies. Each report is also the
// worker's heartbeat.

// assignment tells a worker which streams to relay. Input sockets are
// inherited as files; fd is their number in the worker.
type assignment struct {
	Worker         int              `json:"worker"`
	ReportInterval int64            `json:"report_interval_ns"`
	Streams        []assignedStream `json:"streams"`
}

type assignedStream struct {
	Index       int              `json:"index"`
	Name        string           `json:"name"`
	FD          int              `json:"fd"`
	Outputs     []netip.AddrPort `json:"outputs"`
	ClockRate   int              `json:"clock_rate"`
	RewriteSSRC *uint32          `json:"rewrite_ssrc,omitempty"`
	Continuity  Continuity       `json:"continuity"`
}

// report is a worker's periodic account of its streams.
type report struct {
	Seq     uint64         `json:"seq"`
	Streams []streamReport `json:"streams"`
}

type streamReport struct {
	Index      int        `json:"index"`
	Counters   Counters   `json:"counters"`
	Continuity Continuity `json:"continuity"`
}

// maxReportStreams bounds what a report may claim, so a corrupt or hostile
// message cannot make the parent allocate without limit.
const maxReportStreams = 4096

// decodeReport reads one report and checks it against the streams the worker
// was given (index -> owned).
func decodeReport(dec *json.Decoder, owned map[int]bool) (report, error) {
	var r report
	if err := dec.Decode(&r); err != nil {
		if err == io.EOF {
			return r, err
		}
		return r, fmt.Errorf("bad report from worker: %w", err)
	}
	if len(r.Streams) > maxReportStreams {
		return r, fmt.Errorf("bad report from worker: %d streams", len(r.Streams))
	}
	for _, s := range r.Streams {
		if !owned[s.Index] {
			return r, fmt.Errorf("bad report from worker: stream %d is not assigned to it", s.Index)
		}
	}
	return r, nil
}

// checkAssignment validates what a worker was told before it acts on it.
func checkAssignment(a *assignment) error {
	if a.ReportInterval <= 0 {
		return fmt.Errorf("assignment: report interval %d", a.ReportInterval)
	}
	for i, s := range a.Streams {
		if s.FD < 3 {
			return fmt.Errorf("assignment: stream %d (%s): fd %d", i, s.Name, s.FD)
		}
		if len(s.Outputs) == 0 {
			return fmt.Errorf("assignment: stream %d (%s): no outputs", i, s.Name)
		}
		for _, o := range s.Outputs {
			if !o.IsValid() || o.Port() == 0 {
				return fmt.Errorf("assignment: stream %d (%s): output %v", i, s.Name, o)
			}
		}
		if s.ClockRate <= 0 {
			return fmt.Errorf("assignment: stream %d (%s): clock rate %d", i, s.Name, s.ClockRate)
		}
	}
	return nil
}
