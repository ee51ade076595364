package hw

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"appliance/health"
)

func ptr[T any](v T) *T { return &v }

func TestReadPowerSupplies(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	writeTree(t, root, map[string]string{
		"class/power_supply/AC/type":       "Mains\n",
		"class/power_supply/AC/online":     "1\n",
		"class/power_supply/BAT0/type":     "Battery\n",
		"class/power_supply/BAT0/status":   "Not charging\n",
		"class/power_supply/BAT0/capacity": "87\n",
		"class/power_supply/usb/type":      "USB\n",
		"class/power_supply/usb/online":    "2\n", // online, programmable port
	})
	got, err := ReadPowerSupplies(root)
	if err != nil {
		t.Fatal(err)
	}
	want := []PowerSupply{
		{Name: "AC", Type: "Mains", Online: ptr(true)},
		{Name: "BAT0", Type: "Battery", Status: "Not charging", CapacityPct: ptr(87)},
		{Name: "usb", Type: "USB", Online: ptr(true)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %s, want %s", dump(got), dump(want))
	}
}

func TestReadPowerSuppliesNone(t *testing.T) {
	t.Parallel()
	got, err := ReadPowerSupplies(fakeSysfs(t))
	if got != nil || err != nil {
		t.Errorf("got %v, %v; want nil, nil", got, err)
	}
}

func TestReadPowerSuppliesNoSysfs(t *testing.T) {
	t.Parallel()
	for name, root := range notSysfs(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := ReadPowerSupplies(root)
			if !errors.Is(err, ErrNoSysfs) || got != nil {
				t.Fatalf("%v, %v; want ErrNoSysfs and no supplies", got, err)
			}
			if !strings.Contains(err.Error(), root) || !strings.Contains(err.Error(), "set hw.sysfs") {
				t.Errorf("%q does not name %s and say to set hw.sysfs", err, root)
			}
		})
	}
}

func TestReadPowerSuppliesBadFiles(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		file    string
		content string // "" with how
		how     string
		wantErr string
	}{
		{"garbage online", "online", "abc", "", `online: unexpected value "abc"`},
		{"negative online", "online", "-1", "", `online: unexpected value "-1"`},
		{"capacity over 100", "capacity", "250", "", `capacity: unexpected value "250"`},
		{"garbage status", "status", "\x00\xff", "", "status: unexpected value"},
		{"empty type", "type", "\n", "", `type: unexpected value ""`},
		{"type is a directory", "type", "", "dir", "type: is a directory"},
		{"online dangles", "online", "", "dangling", "online: dangling symbolic link"},
		{"no type", "type", "", "missing", "type: no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			dir := "class/power_supply/PSU1/"
			writeTree(t, root, map[string]string{dir + "type": "Mains\n", dir + "online": "1\n", dir + "capacity": "50\n"})
			if tc.how != "" {
				breakFile(t, filepath.Join(root, dir, tc.file), tc.how)
			} else {
				writeTree(t, root, map[string]string{dir + tc.file: tc.content})
			}
			got, err := ReadPowerSupplies(root)
			if err != nil || len(got) != 1 {
				t.Fatalf("got %v, %v; want one supply", got, err)
			}
			if !strings.Contains(got[0].Err, tc.wantErr) {
				t.Errorf("Err = %q, want it to contain %q", got[0].Err, tc.wantErr)
			}
		})
	}
}

func TestPowerConditions(t *testing.T) {
	t.Parallel()
	mains := func(name string, on bool) PowerSupply { return PowerSupply{Name: name, Type: "Mains", Online: ptr(on)} }
	batt := func(status string, pct int) PowerSupply {
		return PowerSupply{Name: "BAT0", Type: "Battery", Status: status, CapacityPct: ptr(pct)}
	}
	for _, tc := range []struct {
		name     string
		supplies []PowerSupply
		want     map[string]health.Severity
	}{
		{"nothing", nil, map[string]health.Severity{}},
		{"mains on, battery full", []PowerSupply{mains("AC", true), batt("Full", 100)}, map[string]health.Severity{}},
		{"mains lost, on battery", []PowerSupply{mains("AC", false), batt("Discharging", 80)},
			map[string]health.Severity{"power.mains-lost:AC": health.Critical, "power.on-battery": health.Critical}},
		{"mains lost, battery low", []PowerSupply{mains("AC", false), batt("Discharging", 19)},
			map[string]health.Severity{"power.mains-lost:AC": health.Critical, "power.on-battery": health.Critical, "power.battery-low": health.Critical}},
		{"battery at 20 is not low", []PowerSupply{mains("AC", false), batt("Discharging", 20)},
			map[string]health.Severity{"power.mains-lost:AC": health.Critical, "power.on-battery": health.Critical}},
		{"low but charging", []PowerSupply{mains("AC", true), batt("Charging", 5)}, map[string]health.Severity{}},
		{"discharging with mains on", []PowerSupply{mains("AC", true), batt("Discharging", 10)},
			map[string]health.Severity{"power.battery-low": health.Critical}},
		{"one of two PSUs failed", []PowerSupply{mains("PSU1", false), mains("PSU2", true)},
			map[string]health.Severity{"psu.failed:PSU1": health.Warning}},
		{"both PSUs failed", []PowerSupply{mains("PSU1", false), mains("PSU2", false)},
			map[string]health.Severity{"power.mains-lost:PSU1": health.Critical, "power.mains-lost:PSU2": health.Critical}},
		{"UPS without mains", []PowerSupply{{Name: "ups", Type: "UPS", Status: "Discharging"}},
			map[string]health.Severity{"power.on-battery": health.Critical}},
		{"mains that does not say", []PowerSupply{{Name: "AC", Type: "Mains"}}, map[string]health.Severity{}},
		{"unreadable supply", []PowerSupply{mains("AC", true), {Name: "PSU2", Type: "Mains", Err: "online: is a directory"}},
			map[string]health.Severity{"psu.unreadable:PSU2": health.Warning}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := map[string]health.Severity{}
			for _, c := range powerConditions(tc.supplies) {
				got[c.name] = c.sev
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// Through the monitor on a fake tree: raised, and cleared when the cause goes.
func TestPowerMonitor(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	m, tr, _ := newTestMonitor(t, Options{Sysfs: root})
	ctx := context.Background()
	set := func(files map[string]string) {
		writeTree(t, root, files)
		m.poll(ctx)
	}
	names := func() []string {
		var out []string
		for _, c := range tr.Active() {
			if !strings.HasPrefix(c.Name, "sensor.") {
				out = append(out, c.Name)
			}
		}
		sort.Strings(out)
		return out
	}

	set(map[string]string{
		"class/power_supply/AC/type": "Mains\n", "class/power_supply/AC/online": "1\n",
		"class/power_supply/BAT0/type": "Battery\n", "class/power_supply/BAT0/status": "Charging\n", "class/power_supply/BAT0/capacity": "90\n",
	})
	if n := names(); len(n) != 0 {
		t.Fatalf("on mains: %v", n)
	}
	set(map[string]string{"class/power_supply/AC/online": "0\n", "class/power_supply/BAT0/status": "Discharging\n"})
	if n := names(); !reflect.DeepEqual(n, []string{"power.mains-lost:AC", "power.on-battery"}) {
		t.Fatalf("mains lost: %v", n)
	}
	set(map[string]string{"class/power_supply/BAT0/capacity": "12\n"})
	if c, _ := tr.Get("power.battery-low"); !strings.Contains(c.Message, "BAT0 at 12%") {
		t.Fatalf("battery low: %+v", c)
	}
	set(map[string]string{"class/power_supply/AC/online": "1\n", "class/power_supply/BAT0/status": "Charging\n"})
	if n := names(); len(n) != 0 {
		t.Fatalf("back on mains: %v", n)
	}
	if s := m.Snapshot().PowerSupplies; len(s) != 2 || s[1].Status != "Charging" {
		t.Errorf("snapshot: %s", dump(s))
	}

	// A listing that fails keeps what was raised.
	set(map[string]string{"class/power_supply/AC/online": "0\n"})
	m.psus = func() ([]PowerSupply, error) { return nil, errors.New("list power supplies: boom") }
	m.poll(ctx)
	if n := names(); !reflect.DeepEqual(n, []string{"power.mains-lost:AC", "psu.unreadable:class/power_supply"}) {
		t.Fatalf("listing fails: %v", n)
	}
}

func dump(ps []PowerSupply) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "{%s %s %q", p.Name, p.Type, p.Status)
		if p.Online != nil {
			fmt.Fprintf(&b, " online=%v", *p.Online)
		}
		if p.CapacityPct != nil {
			fmt.Fprintf(&b, " capacity=%d", *p.CapacityPct)
		}
		if p.Err != "" {
			fmt.Fprintf(&b, " err=%q", p.Err)
		}
		b.WriteString("}")
	}
	return b.String()
}
