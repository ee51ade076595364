package hw

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"appliance/health"
)

// PowerSupply is one entry of sysfs class/power_supply.
type PowerSupply struct {
	Name        string `json:"name"`
	Type        string `json:"type"`             // Mains, Battery, UPS, USB, ...
	Online      *bool  `json:"online,omitempty"` // nil when the supply does not say
	Status      string `json:"status,omitempty"` // Charging, Discharging, Full, ...
	CapacityPct *int   `json:"capacity_pct,omitempty"`
	Err         string `json:"error,omitempty"` // what could not be read; the fields above hold what could
}

// Power supply types as the kernel spells them.
const (
	typeMains   = "Mains"
	typeBattery = "Battery"
	typeUPS     = "UPS"

	statusDischarging = "Discharging"
)

// ReadPowerSupplies reads every supply under sysfs/class/power_supply ("" means /sys).
// A sysfs tree without that directory has no supplies; a root that is
// missing or not a sysfs tree gives an error wrapping [ErrNoSysfs]. A supply
// whose files cannot be read or parsed comes back with Err set.
func ReadPowerSupplies(sysfs string) ([]PowerSupply, error) {
	if sysfs == "" {
		sysfs = "/sys"
	}
	dir := filepath.Join(sysfs, "class", "power_supply")
	ents, err := os.ReadDir(dir)
	if err != nil {
		// Checked only on failure: a wrong root is a listing that fails.
		if serr := checkSysfs(sysfs); serr != nil {
			return nil, serr
		}
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list power supplies: %w", err)
	}
	out := make([]PowerSupply, 0, len(ents))
	for _, e := range ents {
		name := e.Name()
		out = append(out, parsePowerSupply(name, func(file string) ([]byte, error) {
			return readSmall(filepath.Join(dir, name, file))
		}))
	}
	return out, nil
}

// parsePowerSupply builds a supply from its attribute files, read through
// read. A missing optional file leaves its field unset; anything else that
// is wrong is said in Err.
func parsePowerSupply(name string, read func(file string) ([]byte, error)) PowerSupply {
	ps := PowerSupply{Name: name}
	var problems []string
	field := func(file string, required bool, parse func(string) error) {
		raw, err := read(file)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && !required {
				return
			}
			problems = append(problems, fmt.Sprintf("%s: %v", file, unwrapPath(err)))
			return
		}
		if err := parse(strings.TrimSpace(string(raw))); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", file, err))
		}
	}
	field("type", true, func(s string) error {
		if !isWord(s, false) {
			return fmt.Errorf("unexpected value %q", truncate(s, 32))
		}
		ps.Type = s
		return nil
	})
	field("online", false, func(s string) error {
		// 0 offline; 1, or 2 for a programmable USB port, online.
		v, err := strconv.ParseUint(s, 10, 8)
		if err != nil {
			return fmt.Errorf("unexpected value %q (want 0 or 1)", truncate(s, 32))
		}
		on := v != 0
		ps.Online = &on
		return nil
	})
	field("status", false, func(s string) error {
		if !isWord(s, true) {
			return fmt.Errorf("unexpected value %q", truncate(s, 32))
		}
		ps.Status = s
		return nil
	})
	field("capacity", false, func(s string) error {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 || v > 100 {
			return fmt.Errorf("unexpected value %q (want a percentage 0-100)", truncate(s, 32))
		}
		ps.CapacityPct = &v
		return nil
	})
	ps.Err = strings.Join(problems, "; ")
	return ps
}

// isWord reports whether s looks like a sysfs enumeration value: short,
// ASCII letters, digits, '_' or '-', and spaces only when allowed
// ("Not charging").
func isWord(s string, spaces bool) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-':
		case r == ' ' && spaces:
		default:
			return false
		}
	}
	return true
}

var errDangling = errors.New("dangling symbolic link")

// readSmall reads a sysfs attribute, which is never more than a page.
func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if _, lerr := os.Lstat(path); errors.Is(err, fs.ErrNotExist) && lerr == nil {
			// There, but pointing nowhere: broken, not absent.
			return nil, &fs.PathError{Op: "open", Path: path, Err: errDangling}
		}
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return nil, &fs.PathError{Op: "read", Path: path, Err: unwrapPath(err)}
	}
	return b, nil
}

// cond is a condition a rule wants active.
type cond struct {
	name string
	sev  health.Severity
	msg  string
}

// powerConditions decides the power conditions from one reading of the supplies.
func powerConditions(supplies []PowerSupply) []cond {
	var out []cond
	var mains, mainsOnline int
	for _, ps := range supplies {
		if ps.Type == typeMains {
			mains++
			if ps.Online != nil && *ps.Online {
				mainsOnline++
			}
		}
	}
	for _, ps := range supplies {
		if ps.Err != "" {
			out = append(out, cond{health.PSUUnreadable.For(ps.Name), health.Warning, fmt.Sprintf("power supply %s: %s", ps.Name, ps.Err)})
		}
		if ps.Type == typeMains && ps.Online != nil && !*ps.Online {
			if mains >= 2 && mainsOnline > 0 {
				out = append(out, cond{health.PSUFailed.For(ps.Name), health.Warning,
					fmt.Sprintf("power supply %s is offline; %d of %d mains supplies left, no redundancy", ps.Name, mainsOnline, mains)})
			} else {
				out = append(out, cond{health.PowerMainsLost.For(ps.Name), health.Critical, fmt.Sprintf("mains supply %s is offline", ps.Name)})
			}
		}
	}
	var onBattery, low []string
	for _, ps := range supplies {
		if (ps.Type != typeBattery && ps.Type != typeUPS) || ps.Status != statusDischarging {
			continue
		}
		if mainsOnline == 0 {
			onBattery = append(onBattery, ps.Name)
		}
		if ps.CapacityPct != nil && *ps.CapacityPct < 20 {
			low = append(low, fmt.Sprintf("%s at %d%%", ps.Name, *ps.CapacityPct))
		}
	}
	if len(onBattery) > 0 {
		out = append(out, cond{health.PowerOnBattery.Name, health.Critical,
			fmt.Sprintf("no mains supply online, running on %s", strings.Join(onBattery, ", "))})
	}
	if len(low) > 0 {
		out = append(out, cond{health.PowerBatteryLow.Name, health.Critical,
			fmt.Sprintf("battery low and discharging: %s", strings.Join(low, ", "))})
	}
	return out
}
