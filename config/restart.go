package config

import (
	"reflect"
	"sort"
)

// RestartNeeded names the settings that differ between old and cur and that
// only a restart applies, as dotted paths such as "media.workers", sorted.
// Streams are not among them, their pair settings included: the media layer
// applies a new stream list to the running workers. A pair section added or
// removed is named "pair", and new contents of the key file "pair.key".
func RestartNeeded(old, cur *Config) []string {
	var names []string
	for _, s := range restartSettings {
		if !reflect.DeepEqual(s.get(old), s.get(cur)) {
			names = append(names, s.name)
		}
	}
	switch {
	case (old.Pair == nil) != (cur.Pair == nil):
		names = append(names, "pair")
	case old.Pair != nil:
		for _, s := range pairSettings {
			if !reflect.DeepEqual(s.get(old.Pair), s.get(cur.Pair)) {
				names = append(names, s.name)
			}
		}
	}
	sort.Strings(names)
	return names
}

// restartSettings is every setting but streams. A test walks Config so that
// a new field cannot be left out.
var restartSettings = []struct {
	name string
	get  func(*Config) any
}{
	{"version", func(c *Config) any { return c.Version }},
	{"unit.name", func(c *Config) any { return c.Unit.Name }},
	{"unit.state_dir", func(c *Config) any { return c.Unit.StateDir }},
	{"status.listen", func(c *Config) any { return c.Status.Listen }},
	{"status.max_connections", func(c *Config) any { return c.Status.MaxConnections }},
	{"status.idle_timeout", func(c *Config) any { return c.Status.IdleTimeout }},
	{"status.tokens", func(c *Config) any { return nilIfEmpty(c.Status.Tokens) }},
	{"status.tls.cert", func(c *Config) any { return c.Status.TLS.Cert }},
	{"status.tls.key", func(c *Config) any { return c.Status.TLS.Key }},
	{"control.socket", func(c *Config) any { return c.Control.Socket }},
	{"media.workers", func(c *Config) any { return c.Media.Workers }},
	{"media.hang_timeout", func(c *Config) any { return c.Media.HangTimeout }},
	{"media.report_interval", func(c *Config) any { return c.Media.ReportInterval }},
	{"media.standby_ring", func(c *Config) any { return c.Media.StandbyRing }},
	{"media.output_alarm_after", func(c *Config) any { return c.Media.OutputAlarmAfter }},
	{"media.progress_interval", func(c *Config) any { return c.Media.ProgressInterval }},
	{"media.batch_window", func(c *Config) any { return c.Media.BatchWindow }},
	{"media.restart.intensity", func(c *Config) any { return c.Media.Restart.Intensity }},
	{"media.restart.period", func(c *Config) any { return c.Media.Restart.Period }},
	{"media.restart.backoff", func(c *Config) any { return c.Media.Restart.Backoff }},
	{"media.restart.backoff_max", func(c *Config) any { return c.Media.Restart.BackoffMax }},
	{"test_sources", func(c *Config) any { return nilIfEmpty(c.TestSources) }},
	{"hw.sysfs", func(c *Config) any { return c.HW.Sysfs }},
	{"hw.temperature.warn_c", func(c *Config) any { return c.HW.Temperature.WarnC }},
	{"hw.temperature.crit_c", func(c *Config) any { return c.HW.Temperature.CritC }},
	{"hw.temperature.clear_margin_c", func(c *Config) any { return c.HW.Temperature.ClearMarginC }},
	{"hw.links", func(c *Config) any { return nilIfEmpty(c.HW.Links) }},
	{"hw.link_debounce", func(c *Config) any { return c.HW.LinkDebounce }},
	{"hw.poll_interval", func(c *Config) any { return c.HW.PollInterval }},
	{"watchdog.device", func(c *Config) any { return c.Watchdog.Device }},
	{"watchdog.timeout", func(c *Config) any { return c.Watchdog.Timeout }},
}

// pairSettings is every setting of the pair section. The pair is set up
// once, at start: its sockets, its timers and the peer's view of this unit.
var pairSettings = []struct {
	name string
	get  func(*Pair) any
}{
	{"pair.peer_name", func(p *Pair) any { return p.PeerName }},
	{"pair.paths", func(p *Pair) any { return nilIfEmpty(p.Paths) }},
	{"pair.key_file", func(p *Pair) any { return p.KeyFile }},
	{"pair.key", func(p *Pair) any { return nilIfEmpty(p.Key) }},
	{"pair.heartbeat", func(p *Pair) any { return p.Heartbeat }},
	{"pair.detect_multiplier", func(p *Pair) any { return p.DetectMultiplier }},
	{"pair.witness", func(p *Pair) any { return p.Witness }},
	{"pair.preempt", func(p *Pair) any { return p.Preempt }},
	{"pair.preempt_hold", func(p *Pair) any { return p.PreemptHold }},
	{"pair.capacity.streams", func(p *Pair) any { return p.Capacity.Streams }},
	{"pair.capacity.bitrate_bps", func(p *Pair) any { return p.Capacity.BitrateBPS }},
}

// nilIfEmpty makes "links: []" and no links at all the same setting.
func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}
