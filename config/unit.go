package config

import (
	"errors"
	"io/fs"
)

// Choice is the config a unit runs on when it has two files: the image's
// default (read-only, the same on every unit) and the unit's own (on the
// data partition: its name, addresses, streams, peer).
type Choice struct {
	Config *Config
	Path   string // the file Config was read from
	// UnitErr says why the unit's own file was not used although it is
	// there: it cannot be read, or it has problems (a *Error listing every
	// one with its line). nil when the unit's file was used or is absent.
	UnitErr error
}

// Fallback reports whether the unit's own file is there but unusable, so
// the unit runs on the default instead.
func (c Choice) Fallback() bool { return c.UnitErr != nil }

// LoadUnit chooses between the default config at defaultPath and the unit's
// own at unitPath, both checked against env:
//
//   - the default must be good, whatever the unit's file: it is what the
//     unit falls back on, so a default with problems is an error;
//   - no file at unitPath (or unitPath empty): the default;
//   - a good file at unitPath: that file;
//   - a file at unitPath that cannot be read or has problems: the default,
//     with UnitErr saying why, so that a damaged or mistyped unit config
//     leaves a unit that boots, answers and says what is wrong, instead of
//     one that does not start.
//
// `run` and `check` both choose through it, so check refuses what run would.
func LoadUnit(defaultPath, unitPath string, env Env) (Choice, error) {
	def, err := LoadEnv(defaultPath, env)
	if err != nil {
		return Choice{}, err
	}
	fallback := Choice{Config: def, Path: defaultPath}
	if unitPath == "" {
		return fallback, nil
	}
	own, err := LoadEnv(unitPath, env)
	var problems *Error
	switch {
	case err == nil:
		return Choice{Config: own, Path: unitPath}, nil
	case !errors.As(err, &problems) && errors.Is(err, fs.ErrNotExist):
		return fallback, nil
	default:
		fallback.UnitErr = err
		return fallback, nil
	}
}
