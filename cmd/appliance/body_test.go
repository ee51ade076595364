package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"appliance/internal/testutil"
	"appliance/status"
)

// TestOverheatAndPower: the unit watches a (fake) sysfs tree; an overheating
// sensor raises a warning then a critical condition, clears with hysteresis,
// and a lost mains supply is critical. Each change is in the API and its
// event log.
func TestOverheatAndPower(t *testing.T) {
	skipShort(t)
	sys := t.TempDir()
	hwmon := filepath.Join(sys, "class/hwmon/hwmon0")
	ac := filepath.Join(sys, "class/power_supply/AC")
	for path, value := range map[string]string{
		filepath.Join(hwmon, "name"):        "coretemp",
		filepath.Join(hwmon, "temp1_label"): "Package id 0",
		filepath.Join(hwmon, "temp1_input"): "50000",
		filepath.Join(ac, "type"):           "Mains",
		filepath.Join(ac, "online"):         "1",
	} {
		writeSys(t, path, value)
	}
	ports := freeUDPPorts(t, 2)
	u := startUnit(t, streamsConfig(1, ports[:1], ports[1:], nil, "")+fmt.Sprintf(`hw:
  sysfs: %s
  temperature: {warn_c: 80, crit_c: 90, clear_margin_c: 5}
  poll_interval: 100ms
`, sys))

	var sensor string
	testutil.Eventually(t, 10*time.Second, "the sensor in the API", func() bool {
		rep := u.mustReport()
		if len(rep.Hardware.Temperatures) == 1 && rep.Hardware.Temperatures[0].Celsius == 50 {
			sensor = rep.Hardware.Temperatures[0].Sensor
		}
		return sensor != "" && len(rep.Hardware.PowerSupplies) == 1
	})
	cond := "temp:" + sensor
	severity := func() string {
		for _, c := range u.mustReport().Health {
			if c.Name == cond {
				return c.Severity.String()
			}
		}
		return "ok"
	}
	temp := filepath.Join(hwmon, "temp1_input")
	for _, step := range []struct {
		milli int
		want  string
	}{
		{82000, "warning"},
		{91000, "critical"},
		{87000, "critical"}, // within the clear margin of 90
		{84000, "warning"},  // 5 below 90
		{70000, "ok"},       // well below 80 - 5
	} {
		writeSys(t, temp, fmt.Sprint(step.milli))
		testutil.Eventually(t, 10*time.Second, fmt.Sprintf("%s %s at %d m°C", cond, step.want, step.milli), func() bool {
			rep := u.mustReport()
			return len(rep.Hardware.Temperatures) == 1 && rep.Hardware.Temperatures[0].Celsius == float64(step.milli)/1000
		})
		if got := severity(); got != step.want {
			t.Errorf("at %d m°C: %s is %s, want %s", step.milli, cond, got, step.want)
		}
	}
	want := []string{"raised warning", "changed critical", "changed warning", "cleared ok"}
	var got []string
	evs := u.mustReport().Events
	for i := len(evs) - 1; i >= 0; i-- {
		if e := evs[i]; e.Source == "health" && e.Condition == cond {
			got = append(got, e.Kind+" "+e.Severity)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("events of %s: %v, want %v", cond, got, want)
	}

	writeSys(t, filepath.Join(ac, "online"), "0")
	testutil.Eventually(t, 10*time.Second, "power.mains-lost:AC", func() bool {
		return hasCondition(u.mustReport(), "power.mains-lost:AC", "critical")
	})
	writeSys(t, filepath.Join(ac, "online"), "1")
	testutil.Eventually(t, 10*time.Second, "power.mains-lost:AC to clear", func() bool {
		return !hasCondition(u.mustReport(), "power.mains-lost:AC", "critical")
	})
}

func hasCondition(rep status.Report, name, severity string) bool {
	for _, c := range rep.Health {
		if c.Name == name && c.Severity.String() == severity {
			return true
		}
	}
	return false
}

// writeSys replaces a sysfs file the way the kernel presents a new value:
// whole, never half-written.
func writeSys(t *testing.T, path, value string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(value+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
