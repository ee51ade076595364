package media

import "testing"

func TestSeqTracker(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		seqs []uint16
		want SeqStats
	}{
		{"in order", []uint16{1, 2, 3, 4}, SeqStats{Received: 4}},
		{"wraps", []uint16{65534, 65535, 0, 1}, SeqStats{Received: 4}},
		{"gap is loss", []uint16{1, 2, 5, 6}, SeqStats{Received: 4, Lost: 2}},
		{"late packet fills gap", []uint16{1, 3, 2, 4}, SeqStats{Received: 4, Reordered: 1}},
		{"duplicate of last", []uint16{1, 2, 2, 3}, SeqStats{Received: 4, Duplicates: 1}},
		{"duplicate inside window", []uint16{1, 2, 3, 2}, SeqStats{Received: 4, Duplicates: 1}},
		{"duplicate of a late packet", []uint16{1, 3, 2, 2}, SeqStats{Received: 4, Reordered: 1, Duplicates: 1}},
		{"late across wrap", []uint16{65534, 0, 65535, 1}, SeqStats{Received: 4, Reordered: 1}},
		{"jump forward restarts", []uint16{1, 2, 10000, 10001}, SeqStats{Received: 4, Discontinuity: 1}},
		{"jump back restarts", []uint16{5000, 5001, 100, 101}, SeqStats{Received: 4, Discontinuity: 1}},
		{"largest gap still loss", []uint16{0, maxDropout}, SeqStats{Received: 2, Lost: maxDropout - 1}},
		// Joined mid-flight: packets from before the first one seen are late,
		// not filled gaps, so loss never goes below zero.
		{"late from before the first", []uint16{1000, 999, 998, 997, 996, 995, 994, 993, 992, 991, 990}, SeqStats{Received: 11, Reordered: 10}},
		{"before the first, then a real gap filled", []uint16{1000, 998, 1003, 1001}, SeqStats{Received: 4, Lost: 1, Reordered: 2}},
		{"before the first after a restart", []uint16{5000, 5001, 100, 99, 98}, SeqStats{Received: 5, Reordered: 2, Discontinuity: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var tr SeqTracker
			for _, s := range tt.seqs {
				tr.Observe(s)
			}
			if tr.SeqStats != tt.want {
				t.Errorf("got %+v, want %+v", tr.SeqStats, tt.want)
			}
		})
	}
}

func TestSeqTrackerGapMarksAreCleared(t *testing.T) {
	t.Parallel()
	// A sequence number seen a full window ago must not be taken for a
	// duplicate when it turns up late after a gap that skipped over it.
	var tr SeqTracker
	for s := 0; s < seqWindow+10; s++ {
		tr.Observe(uint16(s))
	}
	tr.Observe(uint16(seqWindow + 20)) // skips seqWindow+10 .. +19: 10 lost
	tr.Observe(uint16(seqWindow + 15)) // late, fills one
	if tr.Duplicates != 0 || tr.Reordered != 1 || tr.Lost != 9 {
		t.Fatalf("got %+v", tr.SeqStats)
	}
}

func TestJitterSteadyStreamIsZero(t *testing.T) {
	t.Parallel()
	j := NewJitter(90000)
	for i := 0; i < 100; i++ {
		j.Observe(int64(i)*int64(1e6), uint32(i*90))
	}
	if j.Millis() > 1e-9 {
		t.Fatalf("jitter %v on a perfectly paced stream", j.Millis())
	}
	// Alternate on time and 1 ms late: |D| is 1 ms every step, and J converges to it.
	j = NewJitter(90000)
	for i := 0; i < 2000; i++ {
		off := int64(0)
		if i%2 == 1 {
			off = 1e6
		}
		j.Observe(int64(i)*10e6+off, uint32(i*900))
	}
	if got := j.Millis(); got < 0.95 || got > 1.05 {
		t.Fatalf("jitter %.3f ms, want about 1", got)
	}
}

// TestSeqLostNeverNegative: whatever order numbers arrive in, loss is never
// negative and every packet is counted once as in order, late or duplicate.
func TestSeqLostNeverNegative(t *testing.T) {
	t.Parallel()
	rnd := uint32(12345)
	next := func() uint32 { rnd = rnd*1664525 + 1013904223; return rnd >> 8 }
	for run := 0; run < 200; run++ {
		var tr SeqTracker
		seq := uint16(next())
		for i := 0; i < 500; i++ {
			switch next() % 8 {
			case 0:
				seq -= uint16(next() % 40) // late, possibly from before the first
			case 1:
				seq += uint16(next() % 40) // a gap
			default:
				seq++
			}
			tr.Observe(seq)
			if tr.Lost < 0 {
				t.Fatalf("run %d, packet %d: lost %d", run, i, tr.Lost)
			}
		}
	}
}
