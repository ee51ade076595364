package watchdog

import (
	"encoding/json"
	"testing"
)

// FuzzBootRecord feeds boot.json parser whatever a power loss or a bad disk
// might leave. What it accepts must survive a write and a read unchanged.
func FuzzBootRecord(f *testing.F) {
	f.Add([]byte(`{"boot_count": 3, "last_reset_reason": "clean", "last_boot": "2026-01-02T03:04:05Z", "clean_stop": true}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := parseBootRecord(data)
		if err != nil {
			return
		}
		if rec.BootCount < 0 {
			t.Fatalf("accepted a negative count: %+v", rec)
		}
		out, err := json.Marshal(rec)
		if err != nil {
			t.Fatalf("accepted a record it cannot write: %+v: %v", rec, err)
		}
		again, err := parseBootRecord(out)
		if err != nil {
			t.Fatalf("cannot read what it wrote: %s: %v", out, err)
		}
		if again.BootCount != rec.BootCount || again.LastResetReason != rec.LastResetReason ||
			again.CleanStop != rec.CleanStop || !again.LastBoot.Equal(rec.LastBoot) {
			t.Fatalf("round trip changed the record:\n%+v\n%+v", rec, again)
		}
	})
}
