package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"appliance/media"
	"appliance/status"
)

// parseHostPort takes "HOST:PORT" or "udp://HOST:PORT" with an IP literal.
func parseHostPort(flagName, s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(strings.TrimPrefix(s, "udp://"))
	if err != nil || ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("--%s %q: want IP:PORT, e.g. 127.0.0.1:5004", flagName, s)
	}
	return ap, nil
}

func cmdGen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("gen", stderr)
	to := fs.String("to", "", "destination IP:PORT (required)")
	pps := fs.Int("pps", 1000, "packets per second")
	d := fs.Duration("duration", 10*time.Second, "how long to send (0 = until interrupted)")
	ssrc := fs.String("ssrc", "", "SSRC, decimal or 0x hex (default random)")
	size := fs.Int("size", 1328, "datagram size in bytes; 12+k*188 sends MPEG-TS (payload type 33)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ap, err := parseHostPort("to", *to)
	if err != nil {
		fmt.Fprintln(stderr, "appliance gen:", err)
		return errUsage
	}
	g := &media.Generator{To: ap, PPS: *pps, Size: *size, Duration: *d}
	if *ssrc != "" {
		v, err := strconv.ParseUint(*ssrc, 0, 32)
		if err != nil {
			fmt.Fprintf(stderr, "appliance gen: --ssrc %q: want a 32-bit number\n", *ssrc)
			return errUsage
		}
		g.SSRC = uint32(v)
	}
	res, err := g.Run(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(res)
	}
	fmt.Fprintf(stdout, "sent %d packets to %v, ssrc 0x%08x, first seq %d, %d send errors\n", res.Sent, ap, res.SSRC, res.FirstSeq, res.Errors)
	return nil
}

func cmdProbe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("probe", stderr)
	listen := fs.String("listen", "", "IP:PORT to receive on (required)")
	d := fs.Duration("duration", 10*time.Second, "how long to listen")
	rate := fs.Int("clock-rate", 90000, "RTP clock rate in Hz, for jitter")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ap, err := parseHostPort("listen", *listen)
	if err != nil {
		fmt.Fprintln(stderr, "appliance probe:", err)
		return errUsage
	}
	if *d <= 0 || *rate <= 0 {
		fmt.Fprintln(stderr, "appliance probe: --duration and --clock-rate must be positive")
		return errUsage
	}
	// Scripts wait for this line before they start sending.
	ready := func() { fmt.Fprintf(stderr, "probe: listening on %v\n", ap) }
	res, err := media.Probe(ctx, ap, *d, *rate, ready)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(res)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "received\t%d\nlost\t%d\nduplicates\t%d\nreordered\t%d\nmax_gap_ms\t%.1f\nseq_discontinuities\t%d\nssrc_changes\t%d\njitter_ms\t%.3f\ncc_errors\t%d\nmalformed\t%d\nssrc\t0x%08x\n",
		res.Received, res.Lost, res.Duplicates, res.Reordered, res.MaxGapMs, res.SeqDiscontinuities, res.SSRCChanges, res.JitterMs, res.CCErrors, res.Malformed, res.SSRC)
	return tw.Flush()
}

func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", stderr)
	addr := fs.String("addr", "http://127.0.0.1:8080", "base URL of the unit's status API")
	asJSON := fs.Bool("json", false, "print the raw JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(*addr, "/")+"/api/v1/status?pretty=1", nil)
	if err != nil {
		fmt.Fprintf(stderr, "appliance status: --addr %q: %v\n", *addr, err)
		return errUsage
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("no answer from %s: %w (is `appliance run` running? set --addr)", *addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("reading the answer from %s: %w", *addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s: %s", *addr, resp.Status, strings.TrimSpace(string(body)))
	}
	if *asJSON {
		_, err := stdout.Write(body)
		return err
	}
	var rep status.Report
	if err := json.Unmarshal(body, &rep); err != nil {
		return fmt.Errorf("%s did not answer with a status report: %w", *addr, err)
	}
	printReport(stdout, rep)
	return nil
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
