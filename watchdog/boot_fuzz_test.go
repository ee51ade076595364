package watchdog

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

// FuzzBootRecordPadded feeds the boot.json parser what a torn in-place
// write, padding and foreign records can leave, and checks what the unit
// does with a record it accepts: the next count never overflows, the next
// reason says nothing the record does not support, and the record goes
// back over a file of recordSize bytes, or of the same size as the one it
// came from, and reads back the same.
func FuzzBootRecordPadded(f *testing.F) {
	f.Add([]byte("{\n  \"boot_count\": 3,\n  \"clean_stop\": true\n}\n      \n"))
	f.Add([]byte("{\"boot_count\": 9223372036854775807}\n"))
	f.Add([]byte("{\"boot_count\": 3}\n\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := parseBootRecord(data)
		if err != nil {
			return
		}
		next := nextRecord(rec, true, false, 0, false, time.Unix(0, 0))
		if next.BootCount < 1 || next.BootCount < rec.BootCount {
			t.Fatalf("count %d after %d", next.BootCount, rec.BootCount)
		}
		if want := map[bool]string{true: ReasonClean, false: ReasonUnknown}[rec.CleanStop]; next.LastResetReason != want {
			t.Fatalf("reason %q after clean_stop %v", next.LastResetReason, rec.CleanStop)
		}
		if _, err := encodeRecord(next, recordSize); err != nil {
			t.Fatalf("the next record %+v does not fit in %d bytes: %v", next, recordSize, err)
		}
		compact, err := json.Marshal(rec)
		if err != nil {
			t.Fatalf("accepted a record it cannot write: %+v: %v", rec, err)
		}
		for _, size := range []int{recordSize, len(data)} {
			out, err := encodeRecord(rec, size)
			if errors.Is(err, errNoRoom) && len(compact)+1 > size {
				continue
			}
			if err != nil {
				t.Fatalf("encoding %+v in %d bytes: %v", rec, size, err)
			}
			if len(out) != size {
				t.Fatalf("encoded in %d bytes, want %d", len(out), size)
			}
			again, err := parseBootRecord(out)
			if err != nil {
				t.Fatalf("cannot read what it wrote: %q: %v", out, err)
			}
			if again.BootCount != rec.BootCount || again.LastResetReason != rec.LastResetReason ||
				again.CleanStop != rec.CleanStop || !again.LastBoot.Equal(rec.LastBoot) {
				t.Fatalf("round trip through %d bytes changed the record:\n%+v\n%+v", size, rec, again)
			}
		}
	})
}
