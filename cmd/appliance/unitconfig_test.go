package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"appliance/health"
	"appliance/status"
)

// One image, every unit: `run --config DEFAULT --unit-config OWN` runs on
// the unit's own file when it is there and good, on the default when it is
// absent, and on the default with unit-config.invalid raised when it is
// there but unusable: the unit is up, answers, feeds its watchdog and says
// exactly what is wrong with the file.
func TestUnitConfig(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	own := filepath.Join(dir, "own.yaml")
	defaultCfg := withPrivateState("version: 1\nunit: {name: e2e}\nmedia: {workers: 1}\nstreams: []\n", dir)
	ports := freeUDPPorts(t, 2)
	good := fmt.Sprintf(`version: 1
unit: {name: edge-a, state_dir: %s}
control: {socket: %s}
media: {workers: 1}
streams:
  - {name: cam1, input: "udp://127.0.0.1:%d", outputs: ["udp://127.0.0.1:%d"]}
`, filepath.Join(dir, "state"), filepath.Join(dir, "control.sock"), ports[0], ports[1])
	// A mistyped key on line 6, as a hand edit or a bad provisioning
	// template leaves it.
	mistyped := strings.Replace(good, "outputs:", "outptus:", 1)
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(own, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	condition := func(rep status.Report) *health.Condition {
		for i, c := range rep.Health {
			if c.Name == health.UnitConfigInvalid.Name {
				return &rep.Health[i]
			}
		}
		return nil
	}

	t.Run("unusable: the default, and the API says why", func(t *testing.T) {
		write(mistyped)
		u := startUnitArgs(t, dir, defaultCfg, "--unit-config", own)
		rep := u.mustReport()
		if rep.Unit.Name != "e2e" || rep.Unit.State != "running" || len(rep.Streams) != 0 {
			t.Errorf("unit %q %s with %d streams: want the default's unit e2e, running, carrying nothing", rep.Unit.Name, rep.Unit.State, len(rep.Streams))
		}
		c := condition(rep)
		if c == nil {
			t.Fatalf("health %+v: want %s", rep.Health, health.UnitConfigInvalid.Name)
		}
		for _, want := range []string{own + ":6:", "outptus", "runs on the default " + u.config,
			"appliance check --config " + u.config + " --unit-config " + own, "restart"} {
			if !strings.Contains(c.Message, want) {
				t.Errorf("the condition's message lacks %q:\n%s", want, c.Message)
			}
		}
		if c.Severity != health.Critical {
			t.Errorf("severity %v, want critical: the unit carries none of its streams", c.Severity)
		}
		if !rep.Watchdog.Feeding {
			t.Errorf("watchdog %+v: want it fed, the unit is alive", rep.Watchdog)
		}

		// Fixed and reloaded: the unit's streams are carried, the condition clears.
		write(good)
		out, err := exec.Command(bin, "reload", "--socket", u.socket).CombinedOutput()
		if err != nil {
			t.Fatalf("reload: %v\n%s", err, out)
		}
		rep = u.mustReport()
		if len(rep.Streams) != 1 || rep.Streams[0].Name != "cam1" || condition(rep) != nil {
			t.Errorf("after the fix and a reload: streams %v, health %+v; want cam1 and no %s", rep.Streams, rep.Health, health.UnitConfigInvalid.Name)
		}
		if !strings.Contains(string(out), "restart the service to apply: unit.name") {
			t.Errorf("reload says:\n%s\nwant it to name unit.name as needing a restart", out)
		}

		// Broken again: a reload changes nothing and says why.
		write(mistyped)
		out, err = exec.Command(bin, "reload", "--socket", u.socket).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "outptus") {
			t.Errorf("reload of a broken unit config: %v\n%s\nwant a failure naming the problem", err, out)
		}
		if rep := u.mustReport(); len(rep.Streams) != 1 {
			t.Errorf("a failed reload changed the streams: %v", rep.Streams)
		}
	})

	t.Run("good: the unit's own", func(t *testing.T) {
		write(good)
		rep := startUnitArgs(t, dir, defaultCfg, "--unit-config", own).mustReport()
		if rep.Unit.Name != "edge-a" || len(rep.Streams) != 1 || condition(rep) != nil {
			t.Errorf("unit %q, streams %v, health %+v: want edge-a carrying cam1, no condition", rep.Unit.Name, rep.Streams, rep.Health)
		}
	})

	t.Run("absent: the default, nothing raised", func(t *testing.T) {
		if err := os.Remove(own); err != nil {
			t.Fatal(err)
		}
		rep := startUnitArgs(t, dir, defaultCfg, "--unit-config", own).mustReport()
		if rep.Unit.Name != "e2e" || len(rep.Streams) != 0 || condition(rep) != nil {
			t.Errorf("unit %q, streams %v, health %+v: want the default's e2e, no condition", rep.Unit.Name, rep.Streams, rep.Health)
		}
	})
}

// check refuses what run would not use: a bad unit config fails check
// (run would fall back), a bad default fails both, whatever the unit's file.
func TestCheckUnitConfig(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	file := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	def := file("default.yaml", "version: 1\nunit: {name: image-default}\n")
	good := file("good.yaml", "version: 1\nunit: {name: edge-b}\n")
	bad := file("bad.yaml", "version: 1\nunit: {name: edge-b, colour: red}\n")
	badDefault := file("bad-default.yaml", "version: 1\nunit: {nmae: x}\n")
	absent := filepath.Join(dir, "absent.yaml")
	for _, tc := range []struct {
		args   []string
		code   int
		stdout string
		stderr []string
	}{
		{args: []string{"check", "--config", def, "--unit-config", good}, stdout: "ok: unit edge-b"},
		{args: []string{"check", "--config", def, "--unit-config", absent}, stdout: "ok: no " + absent + "; run uses " + def + ": unit image-default"},
		{args: []string{"check", "--config", def, "--unit-config", bad}, code: 1,
			stderr: []string{bad + ":2:", "colour", "run --unit-config would start on " + def}},
		{args: []string{"check", "--config", badDefault, "--unit-config", good}, code: 1, stderr: []string{badDefault + ":2:", "nmae"}},
		{args: []string{"run", "--config", badDefault, "--unit-config", good}, code: 1, stderr: []string{badDefault + ":2:", "nmae"}},
		{args: []string{"run", "--unit-config", good}, code: 2, stderr: []string{"--unit-config FILE needs --config FILE"}},
	} {
		cmd := exec.Command(bin, tc.args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.code || !strings.Contains(stdout.String(), tc.stdout) {
			t.Errorf("%v: exit %d, stdout %q; want exit %d and %q\nstderr: %s", tc.args, code, stdout.String(), tc.code, tc.stdout, stderr.String())
		}
		for _, want := range tc.stderr {
			if !strings.Contains(stderr.String(), want) {
				t.Errorf("%v: stderr lacks %q:\n%s", tc.args, want, stderr.String())
			}
		}
	}
}
