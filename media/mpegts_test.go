package media

import "testing"

func tsPayload(pid uint16, ccs ...uint8) []byte {
	b := make([]byte, 0, len(ccs)*tsPacketSize)
	for _, cc := range ccs {
		p := make([]byte, tsPacketSize)
		fillTSPacket(p, pid, cc)
		b = append(b, p...)
	}
	return b
}

func TestTSChecker(t *testing.T) {
	t.Parallel()
	adaptOnly := func(pid uint16, cc uint8, disc bool) []byte {
		p := make([]byte, tsPacketSize)
		fillTSPacket(p, pid, cc)
		p[3] = 0x20 | cc
		p[4] = 183
		if disc {
			p[5] = 0x80
		}
		return p
	}
	withDisc := func(pid uint16, cc uint8) []byte {
		p := make([]byte, tsPacketSize)
		fillTSPacket(p, pid, cc)
		p[3] = 0x30 | cc
		p[4] = 1
		p[5] = 0x80
		return p
	}
	cat := func(bs ...[]byte) []byte {
		var out []byte
		for _, b := range bs {
			out = append(out, b...)
		}
		return out
	}
	tests := []struct {
		name     string
		payloads [][]byte
		cc, sync uint64
	}{
		{"continuous with wrap", [][]byte{tsPayload(0x100, 13, 14, 15, 0, 1)}, 0, 0},
		{"one lost packet", [][]byte{tsPayload(0x100, 1, 2, 4)}, 1, 0},
		{"one repeat allowed", [][]byte{tsPayload(0x100, 1, 2, 2, 3)}, 0, 0},
		{"second repeat is an error", [][]byte{tsPayload(0x100, 1, 2, 2, 2)}, 1, 0},
		{"pids are independent", [][]byte{cat(tsPayload(0x100, 1), tsPayload(0x101, 7), tsPayload(0x100, 2), tsPayload(0x101, 8))}, 0, 0},
		{"null packets ignored", [][]byte{cat(tsPayload(0x100, 1), tsPayload(tsNullPID, 9), tsPayload(0x100, 2))}, 0, 0},
		{"adaptation only keeps counter", [][]byte{cat(tsPayload(0x100, 1), adaptOnly(0x100, 1, false), tsPayload(0x100, 2))}, 0, 0},
		{"discontinuity indicator", [][]byte{cat(tsPayload(0x100, 1), withDisc(0x100, 9), tsPayload(0x100, 10))}, 0, 0},
		{"across rtp packets", [][]byte{tsPayload(0x100, 1, 2), tsPayload(0x100, 5)}, 1, 0},
		{"not whole packets", [][]byte{make([]byte, 100)}, 0, 1},
		{"bad sync byte", [][]byte{make([]byte, tsPacketSize)}, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var c TSChecker
			for _, p := range tt.payloads {
				c.Check(p)
			}
			if c.CCErrors != tt.cc || c.SyncErrors != tt.sync {
				t.Fatalf("cc %d sync %d, want cc %d sync %d", c.CCErrors, c.SyncErrors, tt.cc, tt.sync)
			}
		})
	}
}
