package lab

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"
)

// Row is one scenario in one mode: the worst stream of each run, the
// median over runs, and the verdict. The gap is the median over every
// stream of every run, and WorstGapMs the worst of them.
type Row struct {
	Scenario string `json:"scenario"`
	Mode     string `json:"mode"` // dual, vip, or lone (one unit)
	Runs     int    `json:"runs"`
	Streams  int    `json:"streams"`
	// DetectionMs is from the fault to the first packet from the other
	// unit; -1 when no other unit sent anything.
	DetectionMs     float64 `json:"detection_ms"`
	GapMs           float64 `json:"gap_ms"`
	WorstGapMs      float64 `json:"worst_gap_ms"`
	Lost            int     `json:"lost"`
	Duplicates      int     `json:"duplicates"`
	Discontinuities int     `json:"discontinuities"`
	SSRCChanges     int     `json:"ssrc_changes"`
	TwoForwarderS   float64 `json:"two_forwarder_s"` // how long two units forwarded the same stream at once
	Pass            bool    `json:"pass"`
	Why             string  `json:"why,omitempty"` // why it failed
	Criteria        string  `json:"criteria"`
}

// worst is the worst stream of a run in every measure.
func worst(t *trial) StreamResult {
	w := StreamResult{Detection: -1}
	for _, r := range t.results {
		w.Detection = max(w.Detection, r.Detection)
		if r.Gap > w.Gap {
			w.Gap, w.GapAt, w.GapSent = r.Gap, r.GapAt, r.GapSent
		}
		w.Lost = max(w.Lost, r.Lost)
		w.Dups = max(w.Dups, r.Dups)
		w.Discontinuities = max(w.Discontinuities, r.Discontinuities)
		w.SSRCChanges = max(w.SSRCChanges, r.SSRCChanges)
		w.TwoForwarders = max(w.TwoForwarders, r.TwoForwarders)
	}
	return w
}

// streamGaps is the gap of every stream the fault moved (another unit sent
// it after the fault): the failover's gaps. A stream the fault did not
// touch shows only its own packet spacing, and with half of them in it a
// median falls between the two kinds. With none moved, every stream's.
func streamGaps(t *trial) []time.Duration {
	var moved, all []time.Duration
	for i, r := range t.results {
		all = append(all, r.Gap)
		owner := t.owners[streamName(i)]
		for _, from := range r.Senders {
			if owner.IsValid() && from != owner {
				moved = append(moved, r.Gap)
				break
			}
		}
	}
	if len(moved) > 0 {
		return moved
	}
	return all
}

// summarize makes a scenario's row from its runs and judges it.
func summarize(sc Scenario, mode string, streams int, runs []*trial) Row {
	row := Row{Scenario: sc.Name, Mode: mode, Runs: len(runs), Streams: streams, Criteria: sc.Criteria, DetectionMs: -1}
	var det, gap, two []time.Duration
	var lost, dups, disc, ssrc []int
	for _, t := range runs {
		w := worst(t)
		if w.Detection >= 0 {
			det = append(det, w.Detection)
		}
		gap = append(gap, streamGaps(t)...)
		row.WorstGapMs = max(row.WorstGapMs, ms(w.Gap))
		lost, dups, disc = append(lost, w.Lost), append(dups, w.Dups), append(disc, w.Discontinuities)
		ssrc, two = append(ssrc, w.SSRCChanges), append(two, w.TwoForwarders)
	}
	if len(det) > 0 {
		row.DetectionMs = ms(median(det))
	}
	row.GapMs = ms(median(gap))
	row.Lost, row.Duplicates, row.Discontinuities = median(lost), median(dups), median(disc)
	row.SSRCChanges, row.TwoForwarderS = median(ssrc), median(two).Seconds()
	row.Why = failed(runs)
	for _, c := range sc.checks {
		if row.Why != "" {
			break
		}
		row.Why = c(mode, streams, runs)
	}
	row.Pass = row.Why == "" && len(runs) > 0
	return row
}

// failedRow is a scenario that could not be run at all.
func failedRow(sc Scenario, mode string, streams, runs int, err error) Row {
	return Row{Scenario: sc.Name, Mode: mode, Runs: runs, Streams: streams, DetectionMs: -1, Criteria: sc.Criteria, Why: err.Error()}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// median is the middle value of v (the mean of the two middle ones for
// an even count); 0 for none.
func median[T ~int | ~int64](v []T) T {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// PrintTable writes the rows as a table, then why each failing row failed.
func PrintTable(w io.Writer, rows []Row) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tMODE\tRUNS\tSTREAMS\tDETECT_MS\tGAP_MS\tWORST_MS\tLOST\tDUP\tDISCONT\tSSRC_CHG\t2FWD_S\tRESULT")
	for _, r := range rows {
		det := "-"
		if r.DetectionMs >= 0 {
			det = fmt.Sprintf("%.1f", r.DetectionMs)
		}
		result := "pass"
		if !r.Pass {
			result = "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%.1f\t%.1f\t%d\t%d\t%d\t%d\t%.1f\t%s\n", r.Scenario, r.Mode, r.Runs, r.Streams, det, r.GapMs, r.WorstGapMs,
			r.Lost, r.Duplicates, r.Discontinuities, r.SSRCChanges, r.TwoForwarderS, result)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rows {
		if !r.Pass {
			fmt.Fprintf(w, "\n%s (%s) failed: %s\n  wanted: %s\n", r.Scenario, r.Mode, r.Why, r.Criteria)
		}
	}
	return nil
}

// PrintJSON writes the rows as one JSON array.
func PrintJSON(w io.Writer, rows []Row) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if rows == nil {
		rows = []Row{}
	}
	return enc.Encode(rows)
}

// AllPass says whether there is at least one row and every row passed.
func AllPass(rows []Row) bool {
	for _, r := range rows {
		if !r.Pass {
			return false
		}
	}
	return len(rows) > 0
}
