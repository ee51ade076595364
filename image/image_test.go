package image

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"appliance/internal/testutil"
	"appliance/update"
)

// The image itself: image/build.sh (what `make image` runs) builds the disk,
// and QEMU boots it the way a unit boots: UEFI firmware (OVMF), systemd-boot,
// slot A read-only, the data partition, the emulated i6300esb watchdog.

const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	// imageVersion is what the tests' builds are given as VERSION.
	imageVersion = "image-test"
)

// imageTools are the programs image/build.sh and the boot need.
var imageTools = []testutil.Tool{
	{Name: "qemu-system-x86_64", Package: "qemu-system-x86"},
	{Name: "mkfs.ext4", Package: "e2fsprogs"},
	{Name: "debugfs", Package: "e2fsprogs"},
	{Name: "mkfs.vfat", Package: "dosfstools"},
	{Name: "mcopy", Package: "mtools"},
	{Name: "sfdisk", Package: "fdisk"},
}

var (
	builtOnce sync.Once
	builtDir  string // removed by TestMain
	builtImg  string
	builtErr  error
)

// theImage is the image the tests boot: with $APPLIANCE_IMAGE set (`make
// image-test`), that image, built by `make image`; otherwise one built
// by image/build.sh once per test run, at imageVersion. version is "" for
// $APPLIANCE_IMAGE (whatever make image was given).
func theImage(t *testing.T) (img, version string) {
	t.Helper()
	if img := os.Getenv("APPLIANCE_IMAGE"); img != "" {
		if _, err := os.Stat(img); err != nil {
			t.Fatalf("APPLIANCE_IMAGE: %v (run make image first)", err)
		}
		return img, ""
	}
	builtOnce.Do(func() {
		builtDir, builtErr = testutil.BuildDir("appliance-image-test")
		if builtErr == nil {
			builtImg = filepath.Join(builtDir, "appliance.img")
			builtErr = buildImage(t, builtImg)
		}
	})
	if builtErr != nil {
		t.Fatal(builtErr)
	}
	return builtImg, imageVersion
}

// sourceDateEpoch is the SOURCE_DATE_EPOCH of every build in a run: the
// commit's time when the run began, as make image takes it, read once so
// that a commit made during the run does not make two builds differ.
var sourceDateEpoch = sync.OnceValue(func() string {
	if e := os.Getenv("SOURCE_DATE_EPOCH"); e != "" {
		return e
	}
	out, err := exec.Command("git", "-C", "..", "log", "-1", "--format=%ct").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
})

// buildImage runs image/build.sh into img at imageVersion and
// sourceDateEpoch.
func buildImage(t *testing.T, img string) error {
	t.Helper()
	for _, f := range []struct{ path, pkg string }{
		{ovmfCode, "ovmf"},
		{"/usr/lib/systemd/boot/efi/systemd-bootx64.efi", "systemd-boot-efi"},
	} {
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("%s is missing: apt-get install -y --no-install-recommends %s", f.path, f.pkg)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(repoRoot(t), "image/build.sh"), img)
	cmd.Dir = repoRoot(t)
	key, err := runUpdateKey()
	if err != nil {
		return err
	}
	cmd.Env = append(os.Environ(), "VERSION="+imageVersion, "UPDATE_KEY="+key)
	if e := sourceDateEpoch(); e != "" {
		cmd.Env = append(cmd.Env, "SOURCE_DATE_EPOCH="+e)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("image/build.sh: %v\n%s", err, tail(out.String(), 4000))
	}
	t.Logf("image built in %v: %s", time.Since(start).Round(time.Second), strings.TrimSpace(lastLine(out.String())))
	return nil
}

// runUpdateKey is the update key every build of a run signs with (its public
// half is in the image), made once in the run's build directory: a build
// without UPDATE_KEY makes a development key of its own, and two builds
// would then differ by it.
var runUpdateKey = sync.OnceValues(func() (string, error) {
	if builtDir == "" {
		return "", errors.New("the run's build directory is not made yet (theImage makes it)")
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	priv, _, err := update.PEMKeys(key)
	if err != nil {
		return "", err
	}
	path := filepath.Join(builtDir, "update-key.pem")
	return path, os.WriteFile(path, priv, 0o600)
})

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// vm is the image booted in QEMU: its API forwarded to a host port, and a
// host UDP port forwarded to the guest's stream input.
type vm struct {
	port    int    // the API, on 127.0.0.1
	rtpPort int    // 127.0.0.1 UDP, forwarded to the guest's port 5004
	serial  string // the console, ttyS0
	rig     string // a unix socket on the guest's ttyS1: the rig's trigger (rigFreeze)
	started time.Time
	exited  chan struct{} // closed when QEMU has exited
	qout    *testutil.SyncBuffer
	qmp     string // QEMU's machine protocol socket
	// watchdogFired receives the time of each WATCHDOG event QEMU
	// reports: the i6300esb expired and QEMU acted (-action watchdog=reset).
	watchdogFired chan time.Time
}

// uefiGuest is the machine every image test boots: QEMU under TCG (KVM
// cannot boot a stock kernel here), OVMF with its own copy of the variable
// store, the image as a virtio disk, an entropy source, and the i6300esb
// watchdog that resets the guest.
func uefiGuest(disk, vars string) []string {
	return []string{"-accel", "tcg", "-m", "1024", "-smp", "2",
		"-nodefaults", "-no-user-config", "-display", "none",
		"-drive", "if=pflash,format=raw,readonly=on,file=" + ovmfCode,
		"-drive", "if=pflash,format=raw,file=" + vars,
		"-drive", "file=" + disk + ",format=raw,if=virtio",
		// Entropy for the guest: without it, a loaded host once left udev
		// waiting 208 s in getrandom.
		"-device", "virtio-rng-pci",
		"-device", "i6300esb", "-action", "watchdog=reset"}
}

// bootImage boots a copy of disk (the caller's own copy, see copyImage)
// with the unit config cfg as the appliance.config credential (none if nil).
func bootImage(t *testing.T, disk string, cfg []byte) *vm {
	t.Helper()
	dir := t.TempDir()
	vars := filepath.Join(dir, "vars.fd")
	if out, err := exec.Command("cp", ovmfVars, vars).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	v := &vm{port: freePort(t), rtpPort: freeUDPPort(t), serial: filepath.Join(dir, "serial.log"), rig: filepath.Join(dir, "rig.sock"),
		qmp: filepath.Join(dir, "qmp.sock"), watchdogFired: make(chan time.Time, 4)}
	args := append(uefiGuest(disk, vars),
		"-serial", "file:"+v.serial,
		"-chardev", "socket,id=rig,path="+v.rig+",server=on,wait=off", "-serial", "chardev:rig",
		"-monitor", "none", "-qmp", "unix:"+v.qmp+",server=on,wait=off",
		"-nic", fmt.Sprintf("user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:%d-:8080,hostfwd=udp:127.0.0.1:%d-:5004", v.port, v.rtpPort))
	if cfg != nil {
		// A system credential (SMBIOS type 11), as a factory would pass it
		// on the first boot; appliance-firstboot.service puts it on the
		// data partition.
		args = append(args, "-smbios", "type=11,value=io.systemd.credential.binary:appliance.config="+base64.StdEncoding.EncodeToString(cfg))
	}
	for _, a := range []string{disk, dir} {
		if strings.Contains(a, ",") {
			t.Fatalf("%s: QEMU takes a comma as the end of a path: name the test without one", a)
		}
	}
	qemu := exec.Command("qemu-system-x86_64", args...)
	v.qout, v.exited = &testutil.SyncBuffer{}, make(chan struct{})
	qemu.Stdout, qemu.Stderr = v.qout, v.qout
	// QEMU goes with the test, even one killed before its cleanup.
	qemu.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	v.started = time.Now()
	if err := qemu.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = qemu.Wait(); close(v.exited) }()
	go v.watchEvents()
	t.Cleanup(func() {
		_ = qemu.Process.Kill()
		<-v.exited
		if t.Failed() {
			t.Logf("qemu: %s\nserial console:\n%s", v.qout.String(), tail(v.console(), 8000))
		}
	})
	return v
}

// watchEvents reads QEMU's events (QMP) until QEMU exits, and passes each
// WATCHDOG event on, timed as it arrives.
func (v *vm) watchEvents() {
	var c net.Conn
	for c == nil {
		select {
		case <-v.exited:
			return
		case <-time.After(100 * time.Millisecond): // the socket appears once QEMU has started
		}
		c, _ = net.Dial("unix", v.qmp)
	}
	go func() { <-v.exited; c.Close() }()
	if _, err := c.Write([]byte(`{"execute":"qmp_capabilities"}` + "\n")); err != nil {
		return
	}
	dec := json.NewDecoder(c)
	for {
		var msg struct {
			Event string `json:"event"`
		}
		if err := dec.Decode(&msg); err != nil {
			return
		}
		if msg.Event == "WATCHDOG" {
			select {
			case v.watchdogFired <- time.Now():
			default:
			}
		}
	}
}

// alive fails the test at once when QEMU has exited.
func (v *vm) alive(t *testing.T) {
	t.Helper()
	select {
	case <-v.exited:
		t.Fatalf("QEMU exited: %s", v.qout.String())
	default:
	}
}

// console is what the guest wrote on its serial console, without the
// colours systemd gives its status lines.
func (v *vm) console() string {
	b, _ := os.ReadFile(v.serial)
	return ansiColour.ReplaceAllString(string(b), "")
}

var ansiColour = regexp.MustCompile(`\x1b\[[0-9;]*m`)

// copyImage copies img into the test's directory: every boot writes to
// its disk (the data partition), and a rig may change it.
func copyImage(t *testing.T, img string) string {
	t.Helper()
	disk := filepath.Join(t.TempDir(), "disk.img")
	if out, err := exec.Command("cp", "--sparse=always", img, disk).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	return disk
}

type imageStatus struct {
	Unit struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		State   string `json:"state"`
	} `json:"unit"`
	Streams []struct {
		Name    string `json:"name"`
		State   string `json:"state"`
		Input   string `json:"input"`
		Outputs []struct {
			Address string `json:"address"`
			Packets uint64 `json:"packets"`
		} `json:"outputs"`
	} `json:"streams"`
	Health []struct {
		Name     string `json:"name"`
		Severity string `json:"severity"`
		Message  string `json:"message"`
	} `json:"health"`
	Watchdog struct {
		Identity        string `json:"identity"`
		Armed           bool   `json:"armed"`
		Feeding         bool   `json:"feeding"`
		DeviceFeeds     uint64 `json:"device_feeds"`
		LastResetReason string `json:"last_reset_reason"`
		BootCount       int    `json:"boot_count"`
	} `json:"watchdog"`
}

func (v *vm) status() (imageStatus, bool) {
	var s imageStatus
	return s, getStatus(v.port, &s) == nil
}

// getStatus reads a guest's status report, through the forwarded port,
// into s (the fields the test looks at).
func getStatus(port int, s any) error {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/api/v1/status", port))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(s)
}

// ready waits for the API to answer with the unit running, the watchdog
// armed and cond true, and for systemd to have appliance.service active.
func (v *vm) ready(t *testing.T, what string, cond func(imageStatus) bool) imageStatus {
	t.Helper()
	var s imageStatus
	testutil.Eventually(t, 5*time.Minute, what, func() bool {
		v.alive(t)
		var ok bool
		s, ok = v.status()
		return ok && s.Unit.State == "running" && s.Watchdog.Armed && cond(s)
	})
	t.Logf("%s: %v after QEMU started", what, time.Since(v.started).Round(100*time.Millisecond))
	// systemd itself says the service is active (Type=notify: READY=1
	// received), through the rig's report on the console (rigReport).
	testutil.Eventually(t, 2*time.Minute, "systemd to have appliance.service active (READY=1 sent) on every boot", func() bool {
		log := v.console()
		return strings.Count(log, "rig: appliance.service active") >= strings.Count(log, "Linux version")
	})
	return s
}

func (s imageStatus) condition(name string) (severity, message string, ok bool) {
	for _, c := range s.Health {
		if c.Name == name {
			return c.Severity, c.Message, true
		}
	}
	return "", "", false
}

// unitConfig is a unit's own config: its name, and one stream from the
// guest's port 5004 to the host (10.0.2.2 in QEMU's user network) at out.
func unitConfig(name string, out int, ssrc uint32) []byte {
	return []byte(fmt.Sprintf(`version: 1
unit: {name: %s, state_dir: /var/lib/appliance}
status: {listen: "0.0.0.0:8080"}
control: {socket: /run/appliance/control.sock}
media: {workers: 1}
streams:
  - {name: cam1, input: "udp://0.0.0.0:5004", outputs: ["udp://10.0.2.2:%d"], rewrite: {ssrc: %#x}}
watchdog: {device: /dev/watchdog, timeout: 10s}
`, name, out, ssrc))
}

// The rig adds units of its own to its copy of slot A (addRig): the image
// has no shell login, and the test must see inside the guest.
//
// rigReport says on the console when systemd has appliance.service active:
// for a Type=notify service, once the appliance sent READY=1.
const rigReport = `[Unit]
Description=rig: report appliance.service active on the console
After=appliance.service

[Service]
ExecStart=/bin/sh -c 'until systemctl is-active -q appliance; do sleep 1; done; echo "rig: appliance.service active" > /dev/console'
`

// rigFreeze, when the test writes a line to the guest's second serial
// port, puts the unit config the rig staged on the data partition
// (rig-next.yaml, see addRig) in place of the unit's own, and stops the
// appliance (SIGSTOP), once (the mark is on the data partition); it says so
// on the console. The boot after the reset is then another unit. With it,
// systemd's watchdog is off in the rig's copy (rigNoSystemdWatchdog), so
// that the hardware watchdog's rung is the one exercised (systemd's rung is
// TestSystemd's): nothing feeds the i6300esb, and QEMU resets the guest.
const rigFreeze = `[Unit]
Description=rig: freeze the appliance when the test asks
After=appliance.service
ConditionPathExists=!/var/lib/appliance/rig-froze
RequiresMountsFor=/var/lib/appliance

[Service]
ExecStart=/bin/sh -c 'stty -F /dev/ttyS1 clocal -echo; read -r word < /dev/ttyS1; cd /var/lib/appliance; install -m 0640 -g appliance rig-next.yaml appliance.yaml.tmp && mv appliance.yaml.tmp appliance.yaml; touch rig-froze; sync; kill -STOP $(systemctl show -p MainPID --value appliance); echo "rig: appliance frozen" > /dev/console'
`

const rigNoSystemdWatchdog = "[Service]\nWatchdogSec=0\n"

// addRig writes rigReport, enabled, into slot A of disk, in place (debugfs
// on the partition's offset). With next, it also writes rigFreeze, enabled,
// and rigNoSystemdWatchdog, and stages next on the data partition as
// rig-next.yaml: the unit config of the boot after the freeze.
func addRig(t *testing.T, disk string, next []byte) {
	t.Helper()
	out, err := exec.Command("sfdisk", "-J", disk).Output()
	if err != nil {
		t.Fatalf("sfdisk -J: %v", err)
	}
	var table struct {
		PartitionTable struct {
			SectorSize int `json:"sectorsize"`
			Partitions []struct {
				Start int64  `json:"start"`
				Name  string `json:"name"`
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal(out, &table); err != nil {
		t.Fatal(err)
	}
	offset := map[string]int64{}
	for _, p := range table.PartitionTable.Partitions {
		offset[p.Name] = p.Start * int64(table.PartitionTable.SectorSize)
	}
	if offset["root-a"] == 0 || offset["appliance-data"] == 0 {
		t.Fatalf("no root-a or appliance-data partition in %s", out)
	}
	dir := t.TempDir()
	debugfs := func(partition string, script []string) string {
		t.Helper()
		cmdFile := filepath.Join(dir, partition+".debugfs")
		writeFile(t, cmdFile, []byte(strings.Join(script, "\n")+"\n"), 0o644)
		part := fmt.Sprintf("%s?offset=%d", disk, offset[partition])
		if out, err := exec.Command("debugfs", "-w", "-f", cmdFile, part).CombinedOutput(); err != nil {
			t.Fatalf("debugfs: %v\n%s", err, out)
		}
		return part
	}
	var script []string
	enable := func(name, text string) {
		local := filepath.Join(dir, name)
		writeFile(t, local, []byte(text), 0o644)
		script = append(script, "write "+local+" /etc/systemd/system/"+name,
			"symlink /etc/systemd/system/multi-user.target.wants/"+name+" /etc/systemd/system/"+name)
	}
	enable("rig-report.service", rigReport)
	if next != nil {
		enable("rig-freeze.service", rigFreeze)
		dropIn := filepath.Join(dir, "rig.conf")
		writeFile(t, dropIn, []byte(rigNoSystemdWatchdog), 0o644)
		script = append(script, "mkdir /etc/systemd/system/appliance.service.d",
			"write "+dropIn+" /etc/systemd/system/appliance.service.d/rig.conf")
	}
	part := debugfs("root-a", script)
	check, _ := exec.Command("debugfs", "-R", "ls -l /etc/systemd/system/multi-user.target.wants", part).Output()
	if !bytes.Contains(check, []byte("rig-report.service")) || next != nil && !bytes.Contains(check, []byte("rig-freeze.service")) {
		t.Fatalf("the rig's units are not enabled in slot A:\n%s", check)
	}
	if next != nil {
		local := filepath.Join(dir, "rig-next.yaml")
		writeFile(t, local, next, 0o644)
		part := debugfs("appliance-data", []string{"write " + local + " /rig-next.yaml"})
		if got, _ := exec.Command("debugfs", "-R", "cat /rig-next.yaml", part).Output(); !bytes.Equal(got, next) {
			t.Fatalf("rig-next.yaml on the data partition reads %q", got)
		}
	}
}

// freeze asks rigFreeze to stop the appliance, and returns when the console
// says it did. The line is sent again until then: a byte that reaches the
// port before the guest opened it may be dropped.
func (v *vm) freeze(t *testing.T) time.Time {
	t.Helper()
	c, err := net.Dial("unix", v.rig)
	if err != nil {
		t.Fatalf("the rig's serial port: %v", err)
	}
	defer c.Close()
	var at, sent time.Time
	testutil.Eventually(t, 2*time.Minute, "the rig to freeze the appliance", func() bool {
		if strings.Contains(v.console(), "rig: appliance frozen") {
			at = time.Now()
			return true
		}
		if time.Since(sent) > 5*time.Second {
			_, _ = c.Write([]byte("freeze\n"))
			sent = time.Now()
		}
		return false
	})
	return at
}

// rtpRoundTrip sends n RTP packets to the guest's stream input through the
// forwarded port and checks that all come back from the stream's output on
// recv: every one, with the stream's SSRC and consecutive sequence numbers.
func rtpRoundTrip(t *testing.T, v *vm, recv *net.UDPConn, n int, ssrc uint32) {
	t.Helper()
	send, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: v.rtpPort})
	if err != nil {
		t.Fatal(err)
	}
	defer send.Close()
	got := make(chan []byte, n)
	go func() {
		buf := make([]byte, 2048)
		for {
			_ = recv.SetReadDeadline(time.Now().Add(20 * time.Second))
			k, err := recv.Read(buf)
			if err != nil {
				close(got)
				return
			}
			got <- append([]byte(nil), buf[:k]...)
		}
	}()
	pkt := make([]byte, 12+160)
	tick := time.NewTicker(10 * time.Millisecond) // 100 packets a second, paced
	defer tick.Stop()
	for i := 0; i < n; i++ {
		<-tick.C
		pkt[0], pkt[1] = 0x80, 96 // RTP version 2, payload type 96
		binary.BigEndian.PutUint16(pkt[2:], uint16(1000+i))
		binary.BigEndian.PutUint32(pkt[4:], uint32(i*160))
		binary.BigEndian.PutUint32(pkt[8:], 0x5eed)
		if _, err := send.Write(pkt); err != nil {
			t.Fatal(err)
		}
	}
	var seqs []uint16
	for len(seqs) < n {
		p, ok := <-got
		if !ok {
			break
		}
		if len(p) < 12 || p[0]>>6 != 2 {
			t.Errorf("not RTP from the stream: % x", p[:min(len(p), 12)])
			continue
		}
		if s := binary.BigEndian.Uint32(p[8:]); s != ssrc {
			t.Errorf("SSRC %#x, want the stream's %#x", s, ssrc)
		}
		seqs = append(seqs, binary.BigEndian.Uint16(p[2:]))
	}
	recv.SetReadDeadline(time.Now()) // ends the reader
	if len(seqs) != n {
		t.Fatalf("%d of %d RTP packets came back out of the stream", len(seqs), n)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Fatalf("sequence numbers %d then %d: want them consecutive", seqs[i-1], seqs[i])
		}
	}
	t.Logf("RTP: %d packets sent to 127.0.0.1:%d came back from the stream, SSRC %#x, sequence %d..%d", n, v.rtpPort, ssrc, seqs[0], seqs[len(seqs)-1])
}

func listenUDP(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// TestImageBoots boots the image as three units, three boots in two
// guests at once (each slot A with the rig's units, addRig):
//
//   - edge-a, its config from a credential: the API answers from the host,
//     RTP sent from the host through the forwarded port comes back out of
//     its stream. Then the rig puts a corrupt unit config (a mistyped key)
//     on the data partition and freezes the appliance; the watchdog resets
//     the guest. The second boot reports the reset and a higher boot count,
//     and runs on the image's default: carrying nothing, feeding the
//     watchdog, the API saying what is wrong with the file.
//   - edge-b, at the same time: another name, other addresses, from the
//     same image.
func TestImageBoots(t *testing.T) {
	needRig(t, imageTools...)
	img, version := theImage(t)

	t.Run("edge-a RTP freeze reset corrupt", func(t *testing.T) {
		t.Parallel()
		disk := copyImage(t, img)
		corrupt := bytes.Replace(unitConfig("edge-c", 9, 0xc3), []byte("outputs:"), []byte("outptus:"), 1)
		addRig(t, disk, corrupt)
		recv := listenUDP(t)
		const ssrc = 0xa1
		v := bootImage(t, disk, unitConfig("edge-a", recv.LocalAddr().(*net.UDPAddr).Port, ssrc))
		first := v.ready(t, "edge-a: API up, unit running, watchdog armed, stream bound", func(s imageStatus) bool {
			return len(s.Streams) == 1 && (s.Streams[0].State == "idle" || s.Streams[0].State == "running") // bound, with a worker
		})
		if first.Unit.Name != "edge-a" || (version != "" && first.Unit.Version != version) {
			t.Errorf("unit %q version %q, want edge-a (from its credential) at %q", first.Unit.Name, first.Unit.Version, version)
		}
		if first.Watchdog.Identity != "i6300ESB timer" || first.Watchdog.BootCount != 1 || first.Watchdog.LastResetReason != "first boot" {
			t.Errorf("watchdog %+v: want the i6300ESB armed on the first boot", first.Watchdog)
		}
		wantOut := fmt.Sprintf("udp://10.0.2.2:%d", recv.LocalAddr().(*net.UDPAddr).Port)
		if s := first.Streams[0]; s.Input != "udp://0.0.0.0:5004" || len(s.Outputs) != 1 || s.Outputs[0].Address != wantOut {
			t.Errorf("stream %+v: want edge-a's input udp://0.0.0.0:5004 and output %s", s, wantOut)
		}
		rtpRoundTrip(t, v, recv, 100, ssrc)

		frozeAt := v.freeze(t)
		var resetAfter time.Duration
		select {
		case at := <-v.watchdogFired:
			resetAfter = at.Sub(frozeAt)
		case <-time.After(2 * time.Minute):
			t.Fatal("no watchdog reset within 2 minutes of the freeze (QEMU reported no WATCHDOG event)")
		}
		second := v.ready(t, "after the reset: API up with a higher boot count, unit-config.invalid raised", func(s imageStatus) bool {
			_, _, raised := s.condition("unit-config.invalid")
			return s.Watchdog.BootCount > first.Watchdog.BootCount && raised
		})
		t.Logf("freeze to watchdog reset: %v (watchdog.timeout 10s); freeze to API up again: %v",
			resetAfter.Round(100*time.Millisecond), time.Since(frozeAt).Round(100*time.Millisecond))
		if second.Watchdog.LastResetReason != "watchdog" || second.Watchdog.BootCount != first.Watchdog.BootCount+1 {
			t.Errorf("after the reset: last_reset_reason %q, boot_count %d; want watchdog and %d", second.Watchdog.LastResetReason, second.Watchdog.BootCount, first.Watchdog.BootCount+1)
		}

		// The corrupt unit config: the image's default, carrying nothing,
		// alive, and the API says what is wrong and what to do.
		sev, msg, _ := second.condition("unit-config.invalid")
		if second.Unit.Name != "appliance" || len(second.Streams) != 0 || sev != "critical" {
			t.Errorf("unit %q with %d streams, condition %s: want the image's default unit, carrying nothing, critical", second.Unit.Name, len(second.Streams), sev)
		}
		for _, want := range []string{"/var/lib/appliance/appliance.yaml:7:", "outptus", "runs on the default /etc/appliance/appliance.yaml", "appliance check"} {
			if !strings.Contains(msg, want) {
				t.Errorf("the condition's message lacks %q: %s", want, msg)
			}
		}
		t.Logf("unit-config.invalid: %s", msg)
		feeds := second.Watchdog.DeviceFeeds
		testutil.Eventually(t, time.Minute, "the watchdog fed on", func() bool {
			s, ok := v.status()
			return ok && s.Watchdog.Feeding && s.Watchdog.DeviceFeeds > feeds
		})
	})

	t.Run("edge-b", func(t *testing.T) {
		t.Parallel()
		disk := copyImage(t, img)
		addRig(t, disk, nil)
		out := freeUDPPort(t)
		v := bootImage(t, disk, unitConfig("edge-b", out, 0xb2))
		s := v.ready(t, "edge-b: API up, unit running, watchdog armed", func(s imageStatus) bool { return len(s.Streams) == 1 })
		wantOut := fmt.Sprintf("udp://10.0.2.2:%d", out)
		if s.Unit.Name != "edge-b" || len(s.Streams[0].Outputs) != 1 || s.Streams[0].Outputs[0].Address != wantOut {
			t.Errorf("unit %q, streams %+v: want edge-b sending to %s", s.Unit.Name, s.Streams, wantOut)
		}
	})
}

// TestImageReproducible: two builds from the same tree give the same bytes.
func TestImageReproducible(t *testing.T) {
	needRig(t, imageTools...)
	if os.Getenv("APPLIANCE_IMAGE") != "" {
		t.Skip("APPLIANCE_IMAGE is set: this test compares two builds of its own")
	}
	first, _ := theImage(t)
	second := filepath.Join(t.TempDir(), "appliance.img")
	if err := buildImage(t, second); err != nil {
		t.Fatal(err)
	}
	a, b := sha256File(t, first), sha256File(t, second)
	if a != b {
		t.Fatalf("two builds from the same tree differ: SHA-256 %s and %s (cmp -l the two images to see where; docs/image.md, Reproducible)", a, b)
	}
	t.Logf("two builds, one image: SHA-256 %s", a)
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
