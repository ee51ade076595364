package hw

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"appliance/health"
)

// hwmonTree is a coretemp chip with two sensors, as a real one lays out.
func hwmonTree(core0, core1 string) map[string]string {
	return map[string]string{
		"class/hwmon/hwmon0/name":        "coretemp\n",
		"class/hwmon/hwmon0/temp1_input": core0,
		"class/hwmon/hwmon0/temp1_label": "Core 0\n",
		"class/hwmon/hwmon0/temp1_max":   "80000\n",
		"class/hwmon/hwmon0/temp1_crit":  "100000\n",
		"class/hwmon/hwmon0/temp2_input": core1,
		"class/hwmon/hwmon0/temp2_label": "Core 1\n",
	}
}

func TestTempReaderReads(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	writeTree(t, root, hwmonTree("45000\n", "47500\n"))
	got, err := NewTempReader(root).Temperatures(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []Temperature{
		{Sensor: "coretemp_core_0", Celsius: 45, HighC: 80, CritC: 100},
		{Sensor: "coretemp_core_1", Celsius: 47.5},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("reading %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// A broken sensor is reported with its file; the good one is still read.
func TestTempReaderBadSensor(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		brk        func(t *testing.T, root string)
		wantSensor string // "" when the chip's name itself is unusable
		wantFile   string
		wantErr    string
	}{
		{"garbage", func(t *testing.T, root string) {
			writeTree(t, root, map[string]string{"class/hwmon/hwmon0/temp1_input": "abc\n"})
		}, "coretemp_core_0", "temp1_input", `not a temperature: "abc"`},
		{"negative", func(t *testing.T, root string) {
			writeTree(t, root, map[string]string{"class/hwmon/hwmon0/temp1_input": "-273000\n"})
		}, "coretemp_core_0", "temp1_input", "-273.0 °C"},
		{"directory", func(t *testing.T, root string) {
			breakFile(t, filepath.Join(root, "class/hwmon/hwmon0/temp1_input"), "dir")
		}, "coretemp_core_0", "temp1_input", "is a directory"},
		{"dangling symlink", func(t *testing.T, root string) {
			breakFile(t, filepath.Join(root, "class/hwmon/hwmon0/temp1_input"), "dangling")
		}, "coretemp_core_0", "temp1_input", "no such file"},
		{"missing name", func(t *testing.T, root string) {
			writeTree(t, root, map[string]string{"class/hwmon/hwmon1/temp1_input": "30000\n"})
		}, "", "hwmon1/name", "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			writeTree(t, root, hwmonTree("45000\n", "47500\n"))
			tc.brk(t, root)
			got, err := NewTempReader(root).Temperatures(context.Background())
			var bad SensorErrors
			if !errors.As(err, &bad) || len(bad) != 1 {
				t.Fatalf("err = %v, want one SensorError", err)
			}
			e := bad[0]
			if e.Sensor != tc.wantSensor || !strings.HasSuffix(e.Path, tc.wantFile) || !strings.Contains(e.Error(), tc.wantErr) {
				t.Errorf("got sensor %q path %q err %q, want %q, ...%s, %q", e.Sensor, e.Path, e.Error(), tc.wantSensor, tc.wantFile, tc.wantErr)
			}
			if tc.name != "missing name" {
				if len(got) != 1 || got[0].Sensor != "coretemp_core_1" {
					t.Errorf("good readings = %+v, want coretemp_core_1 only", got)
				}
			}
		})
	}
}

func TestTempReaderNoSensors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		files map[string]string
		none  bool
	}{
		{"no class/hwmon", map[string]string{"class/net/lo/operstate": "unknown\n"}, true},
		{"class/hwmon with an entry", map[string]string{"class/hwmon/.keep": ""}, false},
		{"fans only", map[string]string{"class/hwmon/hwmon0/name": "nct6775\n", "class/hwmon/hwmon0/fan1_input": "1200\n"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			writeTree(t, root, tc.files)
			got, err := NewTempReader(root).Temperatures(context.Background())
			if errors.Is(err, ErrNoSensors) != tc.none || (!tc.none && err != nil) {
				t.Fatalf("err = %v, want ErrNoSensors: %v", err, tc.none)
			}
			if len(got) != 0 {
				t.Errorf("readings = %+v, want none", got)
			}
			if tc.none && !strings.Contains(err.Error(), "no temperature sensors found under "+filepath.Join(root, "class/hwmon")) {
				t.Errorf("message %q does not say where it looked", err)
			}
		})
	}
}

// fakeSysfs returns a sysfs tree with no devices: just the class directory
// every kernel has.
func fakeSysfs(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "class"), 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

// notSysfs lists roots that hw.sysfs may be set to by mistake, none of
// them a sysfs tree.
func notSysfs(t *testing.T) map[string]string {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	writeTree(t, dir, map[string]string{"file": "x", "etc/hostname": "u1\n", "class": "not a directory"})
	if err := os.Mkdir(filepath.Join(dir, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"missing":                  filepath.Join(dir, "missing"),
		"a file":                   file,
		"an empty mount point":     filepath.Join(dir, "empty"),
		"another tree":             filepath.Join(dir, "etc"),
		"class is not a directory": dir,
		"below a file":             filepath.Join(file, "sys"),
	}
}

// A root that is not sysfs is a configuration mistake, said as one: not a
// machine without sensors.
func TestTempReaderNoSysfs(t *testing.T) {
	t.Parallel()
	for name, root := range notSysfs(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := NewTempReader(root).Temperatures(context.Background())
			if !errors.Is(err, ErrNoSysfs) || errors.Is(err, ErrNoSensors) || len(got) != 0 {
				t.Fatalf("%+v, %v; want ErrNoSysfs and no readings", got, err)
			}
			if !strings.Contains(err.Error(), root) || !strings.Contains(err.Error(), "set hw.sysfs") {
				t.Errorf("%q does not name %s and say to set hw.sysfs", err, root)
			}
		})
	}
}

// Through the monitor: a wrong root raises a condition that says so, and
// never sensor.none.
func TestMonitorNoSysfs(t *testing.T) {
	t.Parallel()
	root := filepath.Join(t.TempDir(), "sys")
	m, tr, _ := newTestMonitor(t, Options{Sysfs: root})
	m.poll(context.Background())
	a := active(tr)
	if _, ok := a["sensor.none"]; ok {
		t.Errorf("a missing sysfs root reads as a machine without sensors: %v", a)
	}
	said := false
	for _, c := range a {
		said = said || strings.Contains(c.Message, root) && strings.Contains(c.Message, "set hw.sysfs")
	}
	if !said {
		t.Errorf("no condition names %s and says to set hw.sysfs: %v", root, a)
	}
}

func TestTempReaderEmptyHwmonDir(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	breakFile(t, filepath.Join(root, "class/hwmon"), "dir")
	if _, err := NewTempReader(root).Temperatures(context.Background()); !errors.Is(err, ErrNoSensors) {
		t.Fatalf("err = %v, want ErrNoSensors", err)
	}
}

// Thresholds and hysteresis, step by step: warning at 80, critical at 90,
// each lowered once 5 °C below its threshold.
func TestTempConditions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		temps []float64
		want  []health.Severity // of temp:cpu after each reading
	}{
		{"cool", []float64{40, 79.9}, []health.Severity{health.OK, health.OK}},
		{"warm", []float64{80, 84}, []health.Severity{health.Warning, health.Warning}},
		{"straight to critical", []float64{95}, []health.Severity{health.Critical}},
		{"raise at 90, clear at 85", []float64{90, 89, 86, 85, 80, 76, 75},
			[]health.Severity{health.Critical, health.Critical, health.Critical, health.Warning, health.Warning, health.Warning, health.OK}},
		{"hover at threshold", []float64{79, 80, 79, 80, 79}, []health.Severity{health.OK, health.Warning, health.Warning, health.Warning, health.Warning}},
		{"escalate and fall", []float64{81, 91, 70}, []health.Severity{health.Warning, health.Critical, health.OK}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			temps := &fakeTemps{}
			m, tr, _ := newTestMonitor(t, Options{Temps: temps, WarnC: 80, CritC: 90, ClearMarginC: 5})
			for i, c := range tc.temps {
				temps.set(nil, Temperature{Sensor: "cpu", Celsius: c})
				m.poll(context.Background())
				got := active(tr)["temp:cpu"].Severity
				if got != tc.want[i] {
					t.Fatalf("after %v °C (reading %d): severity %v, want %v", c, i, got, tc.want[i])
				}
				if s := m.Snapshot().Temperatures; len(s) != 1 || s[0].Severity != got || s[0].Celsius != c || s[0].CritC != 90 {
					t.Fatalf("snapshot %+v does not match", s)
				}
			}
		})
	}
}

// Through the real reader on a fake tree: an overheat is raised with a
// message naming the sensor, and a broken file is a warning, not a crash.
func TestTempMonitorSysfs(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	writeTree(t, root, hwmonTree("45000\n", "47000\n"))
	m, tr, _ := newTestMonitor(t, Options{Sysfs: root, WarnC: 80, CritC: 90, ClearMarginC: 5})
	ctx := context.Background()
	input := filepath.Join(root, "class/hwmon/hwmon0/temp1_input")

	m.poll(ctx)
	if a := active(tr); len(a) != 0 {
		t.Fatalf("conditions at 45 °C: %v", a)
	}

	writeTree(t, root, map[string]string{"class/hwmon/hwmon0/temp1_input": "91000\n"})
	m.poll(ctx)
	c, ok := tr.Get("temp:coretemp_core_0")
	if !ok || c.Severity != health.Critical || c.Message != "coretemp_core_0 at 91.0 °C (critical at 90)" {
		t.Fatalf("at 91 °C: %+v %v", c, ok)
	}

	// The probe breaks while hot: a warning names the file, and the
	// overheat stays raised rather than vanishing with the reading.
	breakFile(t, input, "dir")
	m.poll(ctx)
	a := active(tr)
	u, ok := a["sensor.unreadable:coretemp_core_0"]
	if !ok || u.Severity != health.Warning || !strings.Contains(u.Message, input) {
		t.Fatalf("unreadable sensor: %+v (all: %v)", u, a)
	}
	if a["temp:coretemp_core_0"].Severity != health.Critical {
		t.Errorf("overheat cleared by a broken probe: %v", a)
	}

	// Fixed and cool: both clear.
	breakFile(t, input, "missing")
	writeTree(t, root, map[string]string{"class/hwmon/hwmon0/temp1_input": "40000\n"})
	m.poll(ctx)
	if a := active(tr); len(a) != 0 {
		t.Errorf("conditions after repair: %v", a)
	}

	// The chip disappears altogether.
	breakFile(t, filepath.Join(root, "class/hwmon"), "missing")
	m.poll(ctx)
	n, ok := tr.Get("sensor.none")
	if !ok || n.Severity != health.Warning || n.Message != "no temperature sensors found under "+filepath.Join(root, "class/hwmon") {
		t.Fatalf("sensor.none = %+v %v", n, ok)
	}
}

func TestTempMonitorBadFiles(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"garbage", "negative", "dir", "dangling"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			writeTree(t, root, hwmonTree("45000\n", "95000\n"))
			input := filepath.Join(root, "class/hwmon/hwmon0/temp1_input")
			switch how {
			case "garbage":
				writeTree(t, root, map[string]string{"class/hwmon/hwmon0/temp1_input": "abc"})
			case "negative":
				writeTree(t, root, map[string]string{"class/hwmon/hwmon0/temp1_input": "-273000"})
			default:
				breakFile(t, input, how)
			}
			m, tr, _ := newTestMonitor(t, Options{Sysfs: root})
			m.poll(context.Background())
			a := active(tr)
			if c := a["sensor.unreadable:coretemp_core_0"]; c.Severity != health.Warning || !strings.Contains(c.Message, input) {
				t.Errorf("sensor.unreadable = %+v, want a warning naming %s", c, input)
			}
			if a["temp:coretemp_core_1"].Severity != health.Critical {
				t.Errorf("the good sensor at 95 °C was not judged: %v", a)
			}
			if len(a) != 2 {
				t.Errorf("conditions: %v", a)
			}
		})
	}
}

// A sensor that cannot be told from another keeps its own hysteresis.
func TestTempDuplicateKeys(t *testing.T) {
	t.Parallel()
	temps := &fakeTemps{}
	m, tr, _ := newTestMonitor(t, Options{Sysfs: fakeSysfs(t), Temps: temps})
	temps.set(nil, Temperature{Sensor: "nvme", Celsius: 95}, Temperature{Sensor: "nvme", Celsius: 30})
	m.poll(context.Background())
	m.poll(context.Background())
	a := active(tr)
	if a["temp:nvme"].Severity != health.Critical || len(a) != 1 {
		t.Errorf("conditions: %v", a)
	}
	if s := m.Snapshot().Temperatures; len(s) != 2 || s[1].Sensor != "nvme_2" {
		t.Errorf("snapshot: %+v", s)
	}
}

func TestTempReadFailureKeepsState(t *testing.T) {
	t.Parallel()
	temps := &fakeTemps{}
	m, tr, _ := newTestMonitor(t, Options{Sysfs: fakeSysfs(t), Temps: temps})
	temps.set(nil, Temperature{Sensor: "cpu", Celsius: 95})
	m.poll(context.Background())
	temps.set(errors.New("read temperatures: boom"))
	m.poll(context.Background())
	a := active(tr)
	if a["temp:cpu"].Severity != health.Critical || a["sensor.unreadable:class/hwmon"].Severity != health.Warning {
		t.Errorf("conditions: %v", a)
	}
	temps.set(nil)
	m.poll(context.Background())
	if a := active(tr); len(a) != 0 {
		t.Errorf("a sensor that is gone keeps conditions: %v", a)
	}
}
