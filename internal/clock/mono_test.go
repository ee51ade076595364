package clock

import (
	"bufio"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestMonoMovesWithGoMonotonicClock(t *testing.T) {
	t.Parallel()
	a, start := Mono(), time.Now()
	if a <= 0 {
		t.Fatalf("Mono() = %v, want a positive reading", a)
	}
	for time.Since(start) < 20*time.Millisecond {
	}
	b, elapsed := Mono(), time.Since(start)
	if d := b - a; d < elapsed-time.Millisecond || d > elapsed+time.Millisecond {
		t.Errorf("Mono() moved %v while Go's monotonic clock moved %v", d, elapsed)
	}
	if r := Real().Mono(); r < b {
		t.Errorf("Real().Mono() = %v is behind Mono() = %v read before it", r, b)
	}
}

// The packet path reads Mono per packet.
func TestMonoDoesNotAllocate(t *testing.T) {
	if n := testing.AllocsPerRun(1000, func() { _ = Mono() }); n != 0 {
		t.Errorf("Mono allocates %v times per call", n)
	}
	c := Real()
	if n := testing.AllocsPerRun(1000, func() { _ = c.Mono() }); n != 0 {
		t.Errorf("Real().Mono allocates %v times per call", n)
	}
}

const monoChildEnv = "CLOCK_TEST_PRINT_MONO"

// A reading taken in another process falls between two taken here: the
// origin is the machine's, so readings can cross a process boundary.
func TestMonoSameOriginAcrossProcesses(t *testing.T) {
	if os.Getenv(monoChildEnv) == "1" {
		os.Stdout.WriteString(strconv.FormatInt(int64(Mono()), 10) + "\n")
		os.Exit(0)
	}
	if !monoIsMachineWide {
		t.Skip("the monotonic clock is per process on this system")
	}
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestMonoSameOriginAcrossProcesses$")
	cmd.Env = append(os.Environ(), monoChildEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	before := Mono()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, rerr := bufio.NewReader(out).ReadString('\n')
	after := Mono()
	if err := cmd.Wait(); err != nil || rerr != nil {
		t.Fatalf("child: %v, reading its output: %v", err, rerr)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
	if err != nil {
		t.Fatalf("child printed %q", line)
	}
	// A microsecond of slack for the gap between the two reads that anchor
	// each process's reading.
	if child := time.Duration(n); child < before-time.Microsecond || child > after+time.Microsecond {
		t.Errorf("the child read %v, outside [%v, %v] read here around it", child, before, after)
	}
}

func BenchmarkMono(b *testing.B) {
	for b.Loop() {
		_ = Mono()
	}
}

func BenchmarkTimeNow(b *testing.B) {
	for b.Loop() {
		_ = time.Now()
	}
}
