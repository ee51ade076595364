package config

import (
	"reflect"
	"sort"
)

// RestartNeeded names the settings that differ between old and cur and that
// only a restart applies, as dotted paths such as "media.workers", sorted.
// Streams are not among them: the media layer applies a new stream list to
// the running workers.
func RestartNeeded(old, cur *Config) []string {
	var names []string
	for _, s := range restartSettings {
		if !reflect.DeepEqual(s.get(old), s.get(cur)) {
			names = append(names, s.name)
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
	{"control.socket", func(c *Config) any { return c.Control.Socket }},
	{"media.workers", func(c *Config) any { return c.Media.Workers }},
	{"media.hang_timeout", func(c *Config) any { return c.Media.HangTimeout }},
	{"media.report_interval", func(c *Config) any { return c.Media.ReportInterval }},
	{"media.standby_ring", func(c *Config) any { return c.Media.StandbyRing }},
	{"media.output_alarm_after", func(c *Config) any { return c.Media.OutputAlarmAfter }},
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

// nilIfEmpty makes "links: []" and no links at all the same setting.
func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}
