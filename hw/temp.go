package hw

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/shirou/gopsutil/v4/common"
	"github.com/shirou/gopsutil/v4/sensors"
)

// Temperature is one reading of a hwmon (or thermal zone) sensor.
type Temperature struct {
	Sensor  string  `json:"sensor"` // gopsutil's key: chip name and label, e.g. coretemp_package_id_0
	Celsius float64 `json:"celsius"`
	HighC   float64 `json:"high_c,omitempty"` // the chip's own limits, when it reports them
	CritC   float64 `json:"crit_c,omitempty"`
}

// TempReader reads every temperature sensor.
//
// It returns the good readings even when some sensors fail; the failures
// come back as a [SensorErrors] error. A tree without any hwmon device
// gives an error wrapping [ErrNoSensors]; a root that is missing or not a
// sysfs tree, one wrapping [ErrNoSysfs].
type TempReader interface {
	Temperatures(ctx context.Context) ([]Temperature, error)
}

// ErrNoSensors means sysfs has no hwmon device to read.
var ErrNoSensors = errors.New("no temperature sensors found")

// ErrNoSysfs means the sysfs root (hw.sysfs) does not exist or is not a
// sysfs tree, so nothing under it can be read: a configuration mistake, not
// a machine without sensors or power supplies.
var ErrNoSysfs = errors.New("no sysfs tree")

// checkSysfs says whether root looks like a mounted sysfs: every kernel has
// a class directory there, whatever its hardware.
func checkSysfs(root string) error {
	fi, err := os.Stat(root)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %s does not exist; set hw.sysfs to where sysfs is mounted (normally /sys)", ErrNoSysfs, root)
	case err != nil:
		return fmt.Errorf("%w: %s: %v; set hw.sysfs to where sysfs is mounted (normally /sys)", ErrNoSysfs, root, unwrapPath(err))
	case !fi.IsDir():
		return fmt.Errorf("%w: %s is not a directory; set hw.sysfs to where sysfs is mounted (normally /sys)", ErrNoSysfs, root)
	}
	if fi, err := os.Stat(filepath.Join(root, "class")); err != nil || !fi.IsDir() {
		return fmt.Errorf("%w: %s has no class directory, so it is not sysfs; set hw.sysfs to where sysfs is mounted (normally /sys)", ErrNoSysfs, root)
	}
	return nil
}

// minPlausibleC is the coldest reading taken as real. Drivers report
// -273 °C, or a large negative number, for a probe that is absent or
// broken; nothing inside a rack unit is colder than this.
const minPlausibleC = -40

// SensorError is one sensor whose reading could not be used.
type SensorError struct {
	Sensor string // the sensor key, when the chip name could be read
	Path   string // the file that could not be used
	Err    error
}

func (e *SensorError) Error() string {
	return fmt.Sprintf("cannot use %s: %v", e.Path, e.Err)
}

func (e *SensorError) Unwrap() error { return e.Err }

// SensorErrors lists the sensors a read had to skip.
type SensorErrors []*SensorError

func (es SensorErrors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

// Unwrap lets errors.Is and errors.As see each sensor's error.
func (es SensorErrors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// NewTempReader returns a TempReader for the sysfs tree at sysfs ("" means /sys).
// It reads through gopsutil, pointed at sysfs by its context key.
func NewTempReader(sysfs string) TempReader {
	if sysfs == "" {
		sysfs = "/sys"
	}
	return hwmonReader{sysfs: sysfs}
}

type hwmonReader struct{ sysfs string }

func (r hwmonReader) Temperatures(ctx context.Context) ([]Temperature, error) {
	env := common.EnvMap{}
	if prev, ok := ctx.Value(common.EnvKey).(common.EnvMap); ok {
		for k, v := range prev {
			env[k] = v
		}
	}
	env[common.HostSysEnvKey] = r.sysfs
	stats, err := sensors.TemperaturesWithContext(context.WithValue(ctx, common.EnvKey, env))

	var warns *sensors.Warnings
	if err != nil && !errors.As(err, &warns) {
		if serr := checkSysfs(r.sysfs); serr != nil {
			return nil, serr
		}
		return nil, fmt.Errorf("read temperatures under %s: %w", r.sysfs, err)
	}

	temps := make([]Temperature, 0, len(stats))
	implausible := false
	for _, s := range stats {
		if s.Temperature < minPlausibleC {
			implausible = true
			continue
		}
		temps = append(temps, Temperature{Sensor: s.SensorKey, Celsius: s.Temperature, HighC: s.High, CritC: s.Critical})
	}

	if warns != nil || implausible {
		// gopsutil drops a bad sensor with an error that often does not name
		// the file (a strconv error, say), so walk the tree again to say
		// which sensor and which file it was.
		bad := diagnoseSensors(r.sysfs)
		if len(bad) == 0 {
			// Fixed itself between the two reads; report what gopsutil said.
			bad = SensorErrors{{Path: filepath.Join(r.sysfs, "class", "hwmon"), Err: err}}
		}
		return temps, bad
	}

	if len(temps) == 0 {
		// gopsutil reads a root that is not there as one without sensors.
		if err := checkSysfs(r.sysfs); err != nil {
			return nil, err
		}
		dir := filepath.Join(r.sysfs, "class", "hwmon")
		if ents, err := os.ReadDir(dir); len(ents) == 0 && (err == nil || errors.Is(err, fs.ErrNotExist)) {
			return nil, fmt.Errorf("%w under %s", ErrNoSensors, dir)
		}
	}
	return temps, nil
}

// diagnoseSensors reads the sensor files as gopsutil does and returns every
// one that fails or reads implausibly cold.
func diagnoseSensors(sysfs string) SensorErrors {
	var bad SensorErrors
	inputs := hwmonInputs(sysfs)
	if len(inputs) > 0 {
		for _, in := range inputs {
			dir := filepath.Dir(in)
			base := filepath.Join(dir, strings.SplitN(filepath.Base(in), "_", 2)[0])
			name, err := os.ReadFile(filepath.Join(dir, "name"))
			if err != nil {
				bad = append(bad, &SensorError{Path: filepath.Join(dir, "name"), Err: unwrapPath(err)})
				continue
			}
			key := strings.TrimSpace(string(name))
			if raw, _ := os.ReadFile(base + "_label"); len(raw) > 0 {
				key += "_" + strings.ReplaceAll(strings.TrimSpace(strings.ToLower(string(raw))), " ", "_")
			}
			if err := checkReading(in, 1000); err != nil {
				bad = append(bad, &SensorError{Sensor: key, Path: in, Err: err})
			}
		}
		return bad
	}
	// No hwmon inputs: gopsutil fell back to thermal zones.
	zones, _ := filepath.Glob(filepath.Join(globEscape(sysfs), "class", "thermal", "thermal_zone*"))
	for _, z := range zones {
		raw, err := os.ReadFile(filepath.Join(z, "type"))
		if err != nil {
			bad = append(bad, &SensorError{Path: filepath.Join(z, "type"), Err: unwrapPath(err)})
			continue
		}
		if err := checkReading(filepath.Join(z, "temp"), 1000); err != nil {
			bad = append(bad, &SensorError{Sensor: strings.TrimSpace(string(raw)), Path: filepath.Join(z, "temp"), Err: err})
		}
	}
	return bad
}

// hwmonInputs lists the temp*_input files gopsutil reads, in its order.
func hwmonInputs(sysfs string) []string {
	root := globEscape(filepath.Join(sysfs, "class", "hwmon"))
	files, _ := filepath.Glob(filepath.Join(root, "hwmon*", "temp*_input"))
	if len(files) == 0 {
		files, _ = filepath.Glob(filepath.Join(root, "hwmon*", "device", "temp*_input"))
	}
	sort.Strings(files)
	return files
}

// checkReading reads a file of a temperature in units of 1/scale °C and
// says what is wrong with it, if anything.
func checkReading(path string, scale float64) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return unwrapPath(err)
	}
	c, err := parseMilliCelsius(raw, scale)
	if err != nil {
		return err
	}
	if c < minPlausibleC {
		return fmt.Errorf("reads %.1f °C, colder than %d °C: probe absent or broken", c, minPlausibleC)
	}
	return nil
}

// parseMilliCelsius parses a sysfs temperature (an integer, or a decimal,
// in units of 1/scale °C, with a trailing newline) into °C.
func parseMilliCelsius(raw []byte, scale float64) (float64, error) {
	s := strings.TrimSpace(string(raw))
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v != v || v > 1e12 || v < -1e12 {
		return 0, fmt.Errorf("not a temperature: %q", truncate(s, 32))
	}
	return v / scale, nil
}

// unwrapPath drops the *PathError wrapper, whose path the caller reports anyway.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// globEscape quotes the glob metacharacters in a literal path.
func globEscape(p string) string {
	var b strings.Builder
	for _, r := range p {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
