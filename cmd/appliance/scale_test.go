package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"appliance/internal/testutil"
	"appliance/status"
)

// scaleConfig writes n streams on loopback inputs, all sent to one sink.
func scaleConfig(n, workers int, inputs []int, sink int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version: 1\nunit: {name: e2e}\nmedia: {workers: %d}\nstreams:\n", workers)
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  - {name: s%04d, input: \"udp://127.0.0.1:%d\", outputs: [\"udp://127.0.0.1:%d\"]}\n", i, inputs[i], sink)
	}
	return b.String()
}

// trickle sends one small RTP packet to every input, rounds times a second,
// until ctx ends.
func trickle(ctx context.Context, t *testing.T, inputs []int, rounds int) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Error(err)
		return
	}
	defer c.Close()
	tick := time.NewTicker(time.Second / time.Duration(rounds))
	defer tick.Stop()
	pkt := []byte{0x80, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 'x', 'y'}
	for seq := uint16(0); ; seq++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		pkt[2], pkt[3] = byte(seq>>8), byte(seq)
		for _, p := range inputs {
			_, _ = c.WriteToUDP(pkt, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p})
		}
	}
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(int(float64(len(s))*p), len(s)-1)]
}

// scaleSeconds is how long the control-plane load runs: 60 s, or
// APPLIANCE_SCALE_SECONDS for a quicker look while developing.
func scaleSeconds(t *testing.T) time.Duration {
	if v := os.Getenv("APPLIANCE_SCALE_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("APPLIANCE_SCALE_SECONDS=%q", v)
		}
		return time.Duration(n) * time.Second
	}
	return 60 * time.Second
}

// TestThousandStreamsUnderAPILoad: 1,000 streams at a low rate, 50 clients
// reading the full status document as fast as they can for a minute. No
// worker is killed as hung, nothing restarts, /healthz answers 200 every
// time, and fast (its p99 is logged; BenchmarkControlPlane holds it to the
// 10 ms target).
func TestThousandStreamsUnderAPILoad(t *testing.T) {
	skipShort(t)
	const streams, clients = 1000, 50
	ports := freeUDPPorts(t, streams+1)
	u := startUnit(t, scaleConfig(streams, 2, ports[:streams], ports[streams]))
	sink := newRx(t, ports[streams])

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go trickle(ctx, t, ports[:streams], 5)
	testutil.Eventually(t, 20*time.Second, "every stream running", func() bool {
		for _, s := range u.mustReport().Streams {
			if s.State != "running" {
				return false
			}
		}
		return true
	})

	d := scaleSeconds(t)
	// The clients are a process of their own, as they would be on the
	// operators' machines, so that this test's /healthz probe measures the
	// unit and not the clients' own scheduling.
	gen := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	gen.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d %d", loadgenEnv, u.api+"/api/v1/status", clients, d.Milliseconds()))
	var genOut strings.Builder
	gen.Stdout, gen.Stderr = &genOut, &genOut
	if err := gen.Start(); err != nil {
		t.Fatal(err)
	}
	loadCtx, stopLoad := context.WithTimeout(ctx, d)
	defer stopLoad()
	var lat []time.Duration
	bad := 0
	hc := &http.Client{Timeout: 10 * time.Second}
	for loadCtx.Err() == nil {
		start := time.Now()
		resp, err := hc.Get(u.api + "/healthz")
		took := time.Since(start)
		if err != nil || resp.StatusCode != http.StatusOK {
			bad++
		} else {
			lat = append(lat, took)
		}
		if resp != nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		time.Sleep(20 * time.Millisecond) // pacing the probe, not waiting for an event
	}
	if err := gen.Wait(); err != nil {
		t.Fatalf("load generator: %v: %s", err, genOut.String())
	}
	var docs int64
	var mb float64
	if _, err := fmt.Sscan(genOut.String(), &docs, &mb); err != nil {
		t.Fatalf("load generator said %q", genOut.String())
	}

	rep := u.mustReport()
	hung, restarts := 0, 0
	for _, e := range rep.Events {
		if strings.Contains(e.Reason, "hung") {
			hung++
		}
	}
	for _, s := range rep.Streams {
		restarts += s.Restarts
	}
	var gaps []string
	for _, w := range rep.Workers {
		gaps = append(gaps, fmt.Sprintf("%s %.0f ms", w.Name, w.MaxReportGapMs))
	}
	n, _ := sink.got()
	p50, p99, worst := percentile(lat, 0.5), percentile(lat, 0.99), percentile(lat, 1)
	t.Logf("%v of %d clients: %d status documents (%.1f MB as sent), %d /healthz probes: p50 %v p99 %v max %v, %d not 200; hung kills %d, stream restarts %d; longest report gap: %s; sink got %d packets",
		d, clients, docs, mb, len(lat), p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond),
		worst.Round(10*time.Microsecond), bad, hung, restarts, strings.Join(gaps, ", "), n)
	if hung != 0 || restarts != 0 {
		t.Errorf("API load cost %d hung kills and %d stream restarts; want none", hung, restarts)
	}
	if bad != 0 || rep.Unit.State != "running" {
		t.Errorf("/healthz failed %d times; unit %s", bad, rep.Unit.State)
	}
	// The 10 ms target is measured by `make bench` on a quiet machine
	// (BenchmarkControlPlane); here, beside the rest of the suite, only a
	// bound that the old behaviour (seconds) would break.
	if p99 > 100*time.Millisecond {
		t.Errorf("/healthz p99 %v under API load, want well under 100 ms", p99)
	}
	if docs < int64(clients) {
		t.Errorf("only %d status documents served", docs)
	}
}

// TestIdleConnectionsLeaveRoomForRestarts: with 1,024 file descriptors and
// 2,000 idle API connections open, a killed worker still restarts: the API
// holds at most status.max_connections of them, and the rest wait in the
// kernel's queue.
func TestIdleConnectionsLeaveRoomForRestarts(t *testing.T) {
	skipShort(t)
	ports := freeUDPPorts(t, 8)
	cfg := streamsConfig(2, ports[:4], ports[4:], nil, "")
	dir := t.TempDir()
	cfg = withPrivateState(cfg, dir)
	path := filepath.Join(dir, "unit.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	api := freeTCPAddr(t)
	noDemoPorts(t, cfg, api)
	logs := &testutil.SyncBuffer{}
	cmd := exec.Command("sh", "-c", `ulimit -n 1024 && exec "$0" run --config "$1" --listen "$2"`, bin, path, api)
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	u := &unitProc{t: t, cmd: cmd, api: "http://" + api, logs: logs, waited: waited, dir: dir, config: path}
	t.Cleanup(func() {
		u.stop()
		if t.Failed() {
			t.Logf("appliance output:\n%s", logs.String())
		}
	})
	testutil.Eventually(t, 15*time.Second, "the unit", func() bool {
		rep, err := u.report()
		return err == nil && len(rep.Streams) == 4 && rep.Streams[0].WorkerPID != 0
	})
	pid := u.stream("s0").WorkerPID

	// 2,000 connections: each sends a request and then sits idle on its
	// keep-alive connection, or just connects and says nothing.
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < 2000; i++ {
		c, err := net.Dial("tcp", api)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
		if i%2 == 0 {
			_, _ = c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
		}
	}
	open := func() int {
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", cmd.Process.Pid))
		return len(ents)
	}
	t.Logf("2000 idle connections open; the unit holds %d descriptors", open())

	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var rep status.Report
	testutil.Eventually(t, 20*time.Second, "a new worker after the kill", func() bool {
		var err error
		rep, err = u.report()
		if err != nil {
			return false
		}
		for _, s := range rep.Streams {
			if s.Name == "s0" {
				return s.WorkerPID != 0 && s.WorkerPID != pid && s.State != "restarting"
			}
		}
		return false
	})
	if rep.Unit.State != "running" {
		t.Errorf("unit state %s after the kill", rep.Unit.State)
	}
	if strings.Contains(logs.String(), "too many open files") {
		t.Errorf("the unit ran out of descriptors:\n%s", logs.String())
	}
	t.Logf("worker restarted; the unit holds %d descriptors", open())
}

// loadgenEnv makes the test binary a load generator: "URL CLIENTS MILLISECONDS".
const loadgenEnv = "APPLIANCE_TEST_LOADGEN"

// loadgen runs clients that GET url back to back, each on a keep-alive
// connection, for the duration, and prints how many documents they read
// and how many megabytes came over the wire.
func loadgen(spec string) int {
	var url string
	var clients int
	var ms int64
	if _, err := fmt.Sscanf(spec, "%s %d %d", &url, &clients, &ms); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(ms)*time.Millisecond)
	defer cancel()
	var docs, wire atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Compressed, as a browser or curl --compressed asks; read, not inflated.
			client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableCompression: true}}
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				req.Header.Set("Accept-Encoding", "gzip")
				resp, err := client.Do(req)
				if err != nil {
					continue
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					docs.Add(1)
					wire.Add(n)
				}
			}
		}()
	}
	wg.Wait()
	fmt.Println(docs.Load(), float64(wire.Load())/1e6)
	return 0
}
