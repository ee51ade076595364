package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"appliance/config"
	"appliance/media"
	"appliance/status"
)

func cmdGen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("gen", stdout, stderr)
	to := fs.String("to", "", "send to `HOST:PORT` (required)")
	pps := fs.Int("pps", 1000, "send `N` packets a second")
	d := fs.Duration("duration", 10*time.Second, "send for `D`, e.g. 5s or 1m; 0 = until interrupted")
	ssrc := fs.String("ssrc", "", "the `SSRC`, decimal or 0x hex (default random)")
	size := fs.Int("size", 1328, "datagrams of `BYTES`, header included; 12+k*188 sends MPEG-TS (payload type 33)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	h, err := parseAddr(genTo, *to)
	if err != nil {
		return fs.usageError("%v", err)
	}
	if *pps <= 0 || *size < 12 || *size > media.MaxDatagram || *d < 0 {
		return fs.usageError("--pps must be at least 1, --size 12 to %d, --duration not negative", media.MaxDatagram)
	}
	g := &media.Generator{PPS: *pps, Size: *size, Duration: *d}
	if *ssrc != "" {
		v, err := strconv.ParseUint(*ssrc, 0, 32)
		if err != nil {
			return fs.usageError("--ssrc %q: want a 32-bit number, e.g. 0x1234", *ssrc)
		}
		g.SSRC = uint32(v)
	}
	if g.To, err = resolve(ctx, genTo, h); err != nil {
		return err
	}
	res, err := g.Run(ctx)
	if err != nil {
		return fmt.Errorf("--to %s: cannot send (%s); %s", h, netReason(err), sendCheck(g.To))
	}
	if *asJSON {
		if err := json.NewEncoder(stdout).Encode(res); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "sent %d packets to %v, ssrc 0x%08x, first seq %d, %d send errors\n", res.Sent, g.To, res.SSRC, res.FirstSeq, res.Errors)
	}
	return genOutcome(res, g.To)
}

// genOutcome fails a run in which every send failed: nothing reached the
// network, and a script must not take it for a stream.
func genOutcome(res media.GenResult, to netip.AddrPort) error {
	if res.Sent == 0 && res.Errors > 0 {
		return fmt.Errorf("every one of %d sends to %v failed (the last: %s); %s", res.Errors, to, res.LastError, sendCheck(to))
	}
	return nil
}

// sendCheck says what to check when packets to addr cannot be sent.
func sendCheck(to netip.AddrPort) string {
	if a := to.Addr(); a.Is6() && a.IsLinkLocalUnicast() && a.Zone() == "" {
		return fmt.Sprintf("a link-local address needs its interface, e.g. [%v%%eth0]:%d", a, to.Port())
	}
	return fmt.Sprintf("check that this machine has a route to %v (`ip route get %v`) and that no firewall drops it", to, to.Addr())
}

func cmdProbe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("probe", stdout, stderr)
	listen := fs.String("listen", "", "receive on `IP:PORT` (required)")
	d := fs.Duration("duration", 10*time.Second, "listen for `D`, e.g. 5s or 1m")
	rate := fs.Int("clock-rate", 90000, "the RTP clock rate in `HZ`, for jitter")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	h, err := parseAddr(probeListen, *listen)
	if err != nil {
		return fs.usageError("%v", err)
	}
	if *d <= 0 || *rate <= 0 {
		return fs.usageError("--duration and --clock-rate must be positive")
	}
	ap := netip.AddrPortFrom(h.ip, h.port)
	// Scripts wait for this line before they start sending.
	ready := func() { fmt.Fprintf(stderr, "probe: listening on %v\n", ap) }
	res, err := media.Probe(ctx, ap, *d, *rate, ready)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("--listen %v: another process receives on it (a unit's input? `make run` feeds its demo on 127.0.0.1:5004); give --listen a free port", ap)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Errorf("--listen %v: this machine has no address %v; give one of its addresses (`ip -brief addr`), or 0.0.0.0:%d for every one", ap, ap.Addr(), ap.Port())
	case err != nil:
		return fmt.Errorf("--listen %v: %w", ap, err)
	}
	if *asJSON {
		if err := json.NewEncoder(stdout).Encode(res); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "received\t%d\nlost\t%d\nduplicates\t%d\nreordered\t%d\nmax_gap_ms\t%.1f\nseq_discontinuities\t%d\nssrc_changes\t%d\njitter_ms\t%.3f\ncc_errors\t%d\nmalformed\t%d\nssrc\t0x%08x\n",
			res.Received, res.Lost, res.Duplicates, res.Reordered, res.MaxGapMs, res.SeqDiscontinuities, res.SSRCChanges, res.JitterMs, res.CCErrors, res.Malformed, res.SSRC)
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if res.Received == 0 && res.Malformed == 0 {
		return fmt.Errorf("received nothing on %v in %v: check that the stream is sent here (an output of the unit's config, or appliance gen --to %v), that the unit is running (appliance status), and that --listen is on the interface the packets arrive at", ap, *d, ap)
	}
	return nil
}

func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", stdout, stderr)
	def := config.Defaults().Status.Listen
	addr := fs.String("addr", def, "ask the unit at `HOST:PORT`, its status.listen")
	asJSON := fs.Bool("json", false, "print the raw JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	h, err := parseAddr(statusAddr, *addr)
	if err != nil {
		return fs.usageError("%v", err)
	}
	scheme := "http://"
	if h.scheme == "https://" {
		scheme = h.scheme
	}
	target := h.String()
	hint := fmt.Sprintf("is the unit running, and is %s its status.listen? (give it with --addr)", target)
	if *addr != def {
		hint = fmt.Sprintf("is the unit running, and is --addr %s its status.listen?", target)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+target+"/api/v1/status?pretty=1", nil)
	if err != nil {
		return fs.usageError("--addr %q: %v", *addr, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("no answer from %s (%v): %s", target, netReason(err), hint)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("reading the answer from %s: %v", target, netReason(err))
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s: %s (%s)", target, resp.Status, strings.TrimSpace(string(body)), hint)
	}
	if *asJSON {
		_, err := stdout.Write(body)
		return err
	}
	var rep status.Report
	if err := json.Unmarshal(body, &rep); err != nil {
		return fmt.Errorf("%s did not answer with a status report (%v): %s", target, err, hint)
	}
	printReport(stdout, rep)
	return nil
}

// netReason is the part of a client error an operator can act on
// ("connection refused"), without the URL and the dial wording around it.
func netReason(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		var sys *os.SyscallError
		if errors.As(op.Err, &sys) {
			return sys.Err.Error()
		}
		return op.Err.Error()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

func printReport(w io.Writer, rep status.Report) {
	fmt.Fprintf(w, "unit %s  version %s  %s  up %s\n\n", rep.Unit.Name, rep.Unit.Version, rep.Unit.State,
		(time.Duration(rep.Unit.UptimeS) * time.Second).String())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tSTATE\tROLE\tPID\tIN\tOUT\tKBIT/S\tLOST\tDUP\tREORD\tJITTER_MS\tCC_ERR\tMALFORMED\tRESTARTS")
	var trouble []string
	for _, s := range rep.Streams {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%.0f\t%d\t%d\t%d\t%.2f\t%d\t%d\t%d\n", s.Name, s.State, s.Role, s.WorkerPID,
			s.PacketsIn, s.PacketsOut, s.BitrateBps/1000, s.Lost, s.Duplicates, s.Reordered, s.JitterMs, s.CCErrors, s.Malformed, s.Restarts)
		if s.Error != "" {
			trouble = append(trouble, fmt.Sprintf("  %s: %s", s.Name, s.Error))
		}
		for _, o := range s.Outputs {
			if o.State != "ok" {
				trouble = append(trouble, fmt.Sprintf("  %s: output %s %s for %.1fs (%d errors): %s", s.Name, o.Address, o.State, o.FailingS, o.Errors, o.LastError))
			}
		}
	}
	_ = tw.Flush()
	if len(trouble) > 0 {
		fmt.Fprintln(w, "\nSTREAM TROUBLE")
		for _, l := range trouble {
			fmt.Fprintln(w, l)
		}
	}
	fmt.Fprintln(w, "\nSUPERVISION")
	var walk func(n status.Node, depth int)
	walk = func(n status.Node, depth int) {
		line := fmt.Sprintf("%s%s  %s  restarts %d", strings.Repeat("  ", depth), n.Name, n.State, n.Restarts)
		if n.PID != 0 {
			line += fmt.Sprintf("  pid %d", n.PID)
		}
		if n.LastExit != "" {
			line += "  last exit: " + n.LastExit
		}
		fmt.Fprintln(w, line)
		for _, c := range n.Children {
			walk(c, depth+1)
		}
	}
	walk(rep.Supervisor, 1)

	fmt.Fprintln(w, "\nHEALTH")
	if len(rep.Health) == 0 {
		fmt.Fprintln(w, "  ok: no active conditions")
	}
	for _, c := range rep.Health {
		fmt.Fprintf(w, "  %-8s  %s  %s  (since %s)\n", c.Severity, c.Name, c.Message, c.Since.Format("15:04:05"))
	}
	wd := rep.Watchdog
	device := wd.Device
	if device == "" {
		device = "none"
	}
	feeding := "feeding"
	if !wd.Feeding {
		feeding = "NOT feeding: " + wd.Reason
	}
	fmt.Fprintf(w, "\nWATCHDOG  device %s  armed %v  systemd %v  %s  boot %d  last reset: %s\n",
		device, wd.Armed, wd.Systemd, feeding, wd.BootCount, wd.LastResetReason)
	if len(rep.Events) > 0 {
		fmt.Fprintln(w, "\nRECENT EVENTS")
		for i, e := range rep.Events {
			if i == 10 {
				break
			}
			switch e.Source {
			case "health":
				fmt.Fprintf(w, "  %s  %s  %s %s  %s\n", e.Time.Format("15:04:05.000"), e.Condition, e.Kind, e.Severity, e.Message)
			default:
				fmt.Fprintf(w, "  %s  %s/%s  %s  %s\n", e.Time.Format("15:04:05.000"), e.Supervisor, e.Child, e.Kind, e.Reason)
			}
		}
	}
}
