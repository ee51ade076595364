package image

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"appliance/internal/testutil"
	"appliance/update"
)

// TestImageUpdate: the image updated under QEMU, every case of
// docs/image.md's "Update and rollback" in two runs of the VM. A full
// bundle crosses QEMU's user network at a few MB/s under TCG, twice per
// update (the check, then the write): the two updates that must boot carry
// the full root, so they come from a disk of bundles, as from a USB stick
// (updateFromDisk); the others, small or refused early, over HTTP.
//
//  1. slot A boots; a bundle signed by another key, and one with a byte of
//     its root image changed, are refused and slot B's bytes stay as they
//     were; then QEMU is killed in the middle of writing a bundle (a small
//     one: its root image is 64 MiB that would never boot).
//  2. the same disk boots A again, the API saying the update was
//     interrupted; a bundle whose appliance cannot start is written to B,
//     tried once, and the unit comes back on A by itself, the API saying
//     why; then the good bundle is written, B is tried, healthy and
//     committed, and the API shows its version.
func TestImageUpdate(t *testing.T) {
	needRig(t, append(imageTools, testutil.Tool{Name: "resize2fs", Package: "e2fsprogs"})...)
	for _, f := range []struct{ path, pkg string }{
		{ovmfCode, "ovmf"},
		{"/usr/lib/systemd/boot/efi/systemd-bootx64.efi", "systemd-boot-efi"},
	} {
		if _, err := os.Stat(f.path); err != nil {
			t.Fatalf("%s is missing: apt-get install -y --no-install-recommends %s", f.path, f.pkg)
		}
	}
	dir := t.TempDir()
	key, keyFile := updateKey(t, dir)
	img := filepath.Join(dir, "appliance.img")
	buildWith(t, img, "VERSION=update-a", "UPDATE_KEY="+keyFile)

	// The bundles: the build's parts under other versions.
	parts := bundleParts(t, filepath.Join(dir, "appliance-update-a.bundle"), key.Public().(ed25519.PublicKey), dir)
	good := writeBundle(t, dir, "update-b", parts, key)
	brokenParts := map[string]string{"vmlinuz": parts["vmlinuz"], "initrd": parts["initrd"], "rootfs": brokenRoot(t, dir, parts["rootfs"])}
	broken := writeBundle(t, dir, "update-broken", brokenParts, key)
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	badSig := writeBundle(t, dir, "update-badsig", parts, otherKey)
	badHash := filepath.Join(dir, "update-badhash.bundle")
	// The kernel's first byte: the test's bundles carry the kernel first,
	// and a part's hash is known only at its end (update's own tests
	// change the last byte of the last part: refused all the same, after
	// reading it all; here that would be one more pass of the whole root).
	if err := exec.Command("cp", good, badHash).Run(); err != nil {
		t.Fatal(err)
	}
	if f, err := os.OpenFile(badHash, os.O_RDWR, 0); err != nil {
		t.Fatal(err)
	} else {
		off := headerSize(t, good)
		one := []byte{0}
		_, _ = f.ReadAt(one, off)
		one[0] ^= 0xff
		if _, err := f.WriteAt(one, off); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	junk := filepath.Join(dir, "junk.rootfs")
	if err := os.WriteFile(junk, bytes.Repeat([]byte("never boots "), 64<<20/12), 0o644); err != nil {
		t.Fatal(err)
	}
	small := writeBundle(t, dir, "update-small", map[string]string{"rootfs": junk, "vmlinuz": parts["vmlinuz"], "initrd": parts["initrd"]}, key)
	fi, _ := os.Stat(good)
	t.Logf("bundle: %.0f MiB", float64(fi.Size())/(1<<20))

	srv := serveBundles(t, dir)
	token, cred := unitWithToken(t)
	disk := filepath.Join(dir, "disk.img")
	vars := filepath.Join(dir, "vars.fd")
	for _, c := range [][]string{{"cp", "--sparse=always", img, disk}, {"cp", ovmfVars, vars}} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", c, err, out)
		}
	}
	slotB := slotRegion(t, disk, "root-b")
	journalToConsole(t, disk)
	bundles := updateFromDisk(t, disk, dir, good, broken)
	guest := []string{"-smbios", "type=11,value=" + cred,
		"-drive", "file=" + bundles + ",format=raw,if=virtio,readonly=on"}

	// 1. Slot A.
	vm := startVM(t, disk, vars, guest...)
	s := vm.waitFor(t, 5*time.Minute, "slot a running, committed", func(s updateStatus) bool {
		return s.Slots != nil && s.Slots.Running == "a" && s.slot("a").Committed && s.slot("a").Version == "update-a"
	})
	t.Logf("booted: %s", s.summary())
	before := slotB.hash(t)
	var prev time.Time
	for _, tc := range []struct{ bundle, want string }{
		{badSig, "signature does not match"},
		{badHash, "part vmlinuz: SHA-256"},
	} {
		vm.update(t, token, srv.url(tc.bundle))
		s := vm.waitFor(t, 5*time.Minute, "the update refused", func(s updateStatus) bool {
			return s.Slots.Update == nil && s.Slots.LastUpdate != nil && s.Slots.LastUpdate.Outcome == update.Failed &&
				!s.Slots.LastUpdate.Started.Equal(prev)
		})
		prev = s.Slots.LastUpdate.Started
		if !strings.Contains(s.Slots.LastUpdate.Reason, tc.want) {
			t.Errorf("%s: refused with %q, want %q", filepath.Base(tc.bundle), s.Slots.LastUpdate.Reason, tc.want)
		}
		if h := slotB.hash(t); h != before {
			t.Errorf("%s: refused, but slot B's bytes changed", filepath.Base(tc.bundle))
		}
		t.Logf("%s refused in %v: %s", filepath.Base(tc.bundle), time.Since(vm.lastPost).Round(time.Second), s.Slots.LastUpdate.Reason)
	}

	// Power cut in the middle of writing the slot.
	half := srv.killAfter(small, 2, 0.7, vm.kill) // the second read (the write), into the root image
	vm.update(t, token, srv.url(small))
	select {
	case <-half:
	case <-time.After(8 * time.Minute):
		t.Fatal("the write never got halfway")
	}
	vm.wait(t)
	// What the guest wrote may still have been in its page cache: the
	// record on the data partition (below) is what says the write began.
	t.Logf("killed mid-write; slot B's bytes on the disk changed: %v", slotB.hash(t) != before)

	// 2. The same disk: slot A boots, the write was interrupted.
	vm = startVM(t, disk, vars, guest...)
	s = vm.waitFor(t, 5*time.Minute, "slot a after the power cut", func(s updateStatus) bool {
		return s.Slots.Running == "a" && s.Slots.LastUpdate != nil
	})
	if s.Slots.LastUpdate.Outcome != update.Interrupted || s.slot("b").Version != "" {
		t.Errorf("after a power cut mid-write: %s, want slot a running, the update interrupted, slot b without an entry", s.summary())
	}
	// The boot partition was checked on the way up (fsck.fat, pass 2 in
	// fstab): what the cut-off write left is given back.
	if fsck := linesWith(vm.serial(t), "systemd-fsck["); !strings.Contains(fsck, "fsck.fat") {
		t.Errorf("the boot after the power cut did not check the boot partition with fsck.fat; systemd-fsck said:\n%s", fsck)
	} else {
		t.Logf("the boot after the power cut checked the boot partition:\n%s", fsck)
	}

	// The broken bundle: written, tried, rolled back by itself.
	start := time.Now()
	vm.update(t, token, onDisk(broken))
	s = vm.waitFor(t, 15*time.Minute, "back on slot a after the broken slot's trial", func(s updateStatus) bool {
		return s.Slots.Running == "a" && s.Slots.LastUpdate != nil && s.Slots.LastUpdate.Version == "update-broken" &&
			s.Slots.LastUpdate.Outcome == update.RolledBack
	})
	t.Logf("rolled back %v after the update was asked for: %s", time.Since(start).Round(time.Second), s.Slots.LastUpdate.Reason)
	if r := s.Slots.LastUpdate.Reason; !strings.Contains(r, "appliance.service") {
		t.Errorf("rolled back, reason %q: want what the trial boot saw of appliance.service", r)
	}
	if b := s.slot("b"); !b.Bad || b.Version != "update-broken" || !s.slot("a").Committed {
		t.Errorf("slots after the rollback: %s", s.summary())
	}
	if !strings.Contains(vm.serial(t), "appliance.slot=b") {
		t.Errorf("the serial console shows no boot of slot b")
	}

	// The good bundle: written, tried, committed.
	start = time.Now()
	vm.update(t, token, onDisk(good))
	s = vm.waitFor(t, 15*time.Minute, "slot b committed", func(s updateStatus) bool {
		return s.Slots.Running == "b" && s.slot("b").Committed && s.Slots.LastUpdate != nil && s.Slots.LastUpdate.Outcome == update.Committed
	})
	t.Logf("update to committed: %v: %s", time.Since(start).Round(time.Second), s.summary())
	// The good bundle carries the build's binary (version update-a) under
	// the bundle version update-b.
	if s.Unit.Version != "update-a" || s.slot("b").Version != "update-b" || s.Slots.LastUpdate.Version != "update-b" || s.slot("a").Running {
		t.Errorf("after the update: %s", s.summary())
	}
}

// journalToConsole adds systemd.journald.forward_to_console=1 to slot A's
// boot entry on the test's disk: the journal, the appliance's log among
// it, goes to the serial console that a failed test prints. An update
// copies the running entry's options, so slot B's entry has it too.
func journalToConsole(t *testing.T, disk string) {
	t.Helper()
	esp := slotRegion(t, disk, "esp")
	img := fmt.Sprintf("%s@@%d", disk, esp.start)
	entry := "::loader/entries/appliance-a.conf"
	out, err := exec.Command("mtype", "-i", img, entry).Output()
	if err != nil {
		t.Fatalf("mtype %s: %v", entry, err)
	}
	body := strings.Replace(string(out), " appliance.slot=a", " systemd.journald.forward_to_console=1 appliance.slot=a", 1)
	tmp := filepath.Join(t.TempDir(), "appliance-a.conf")
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mcopy", "-o", "-i", img, tmp, entry).CombinedOutput(); err != nil {
		t.Fatalf("mcopy: %v\n%s", err, out)
	}
}

// bundleMount is where slot A mounts the test's disk of bundles.
const bundleMount = "/srv/bundles"

// onDisk is a bundle's path in the guest, on the disk updateFromDisk made.
func onDisk(bundle string) string { return bundleMount + "/" + filepath.Base(bundle) }

// updateFromDisk makes an ext4 disk (label bundles) holding the bundles,
// and has slot A of the test's disk mount it read-only at bundleMount, as an
// operator's USB stick: the guest reads a bundle from it somewhat faster
// than over QEMU's user network (hashing under TCG sets the pace of both).
// Only slot A mounts it (an update writes slot B from the bundle's
// root image); the boots that install from it run on A.
func updateFromDisk(t *testing.T, disk, dir string, bundles ...string) string {
	t.Helper()
	src := filepath.Join(dir, "bundles")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	var size int64 = 64 << 20
	for _, b := range bundles {
		if err := os.Link(b, filepath.Join(src, filepath.Base(b))); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(b)
		if err != nil {
			t.Fatal(err)
		}
		size += fi.Size() + fi.Size()/16
	}
	out := filepath.Join(dir, "bundles.ext4")
	if b, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", "bundles", "-d", src, out, fmt.Sprintf("%dk", size>>10)).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 bundles: %v\n%s", err, b)
	}
	root := slotRegion(t, disk, "root-a")
	fs := fmt.Sprintf("%s?offset=%d", disk, root.start)
	fstab, err := exec.Command("debugfs", "-R", "cat /etc/fstab", fs).Output()
	if err != nil || !bytes.Contains(fstab, []byte("/var/lib/appliance")) {
		t.Fatalf("slot A's /etc/fstab: %v: %q", err, fstab)
	}
	fstab = append(fstab, "LABEL=bundles "+bundleMount+" ext4 ro,noload,nodev,nosuid,noexec,nofail 0 0\n"...)
	tmp := filepath.Join(dir, "fstab")
	if err := os.WriteFile(tmp, fstab, 0o644); err != nil {
		t.Fatal(err)
	}
	cmds := filepath.Join(dir, "fstab.debugfs")
	if err := os.WriteFile(cmds, []byte("mkdir "+bundleMount+"\nrm /etc/fstab\nwrite "+tmp+" /etc/fstab\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("debugfs", "-w", "-f", cmds, fs).CombinedOutput(); err != nil {
		t.Fatalf("debugfs: %v\n%s", err, b)
	}
	if b, _ := exec.Command("debugfs", "-R", "cat /etc/fstab", fs).Output(); !bytes.Contains(b, []byte(bundleMount)) {
		t.Fatalf("slot A's /etc/fstab was not changed: %q", b)
	}
	return out
}

// linesWith is the lines of s that contain sub.
func linesWith(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return strings.Join(out, "\n")
}

// headerSize is where a bundle's first part starts.
func headerSize(t *testing.T, bundle string) int64 {
	t.Helper()
	f, err := os.Open(bundle)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, len("APPLIANCE-BUNDLE-1\n")+4)
	if _, err := io.ReadFull(f, head); err != nil {
		t.Fatal(err)
	}
	n := int64(head[len(head)-4])<<24 | int64(head[len(head)-3])<<16 | int64(head[len(head)-2])<<8 | int64(head[len(head)-1])
	return int64(len(head)) + n
}

// updateKey makes the test's signing key: never a secret of the repository.
func updateKey(t *testing.T, dir string) (ed25519.PrivateKey, string) {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	priv, _, err := update.PEMKeys(key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "update-key.pem")
	if err := os.WriteFile(path, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	return key, path
}

func buildWith(t *testing.T, img string, env ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(repoRoot(t), "image/build.sh"), img)
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("image/build.sh: %v\n%s", err, tail(out.String(), 4000))
	}
	t.Logf("image and bundle built in %v: %s", time.Since(start).Round(time.Second), strings.TrimSpace(lastLine(out.String())))
}

// bundleParts takes a bundle apart into files in dir. (The test's own
// bundles carry the kernel and initrd first.)
func bundleParts(t *testing.T, bundle string, pub ed25519.PublicKey, dir string) map[string]string {
	t.Helper()
	f, err := os.Open(bundle)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, _, err := update.ReadHeader(f, pub)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range m.Parts {
		out[p.Name] = filepath.Join(dir, "part."+p.Name)
		w, err := os.Create(out[p.Name])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(w, f, p.Size); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}
	return out
}

func writeBundle(t *testing.T, dir, version string, parts map[string]string, key ed25519.PrivateKey) string {
	t.Helper()
	path := filepath.Join(dir, version+".bundle")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := update.WriteBundle(f, version, []string{"vmlinuz", "initrd", "rootfs"}, parts, key); err != nil {
		t.Fatal(err)
	}
	return path
}

// brokenRoot is the root image with an appliance.service that cannot
// start: its config file does not exist, so `appliance run` refuses to.
func brokenRoot(t *testing.T, dir, rootfs string) string {
	t.Helper()
	out := filepath.Join(dir, "broken.ext4")
	dropin := filepath.Join(dir, "zz-broken.conf")
	if err := os.WriteFile(dropin, []byte("[Service]\nExecStart=\nExecStart=/usr/bin/appliance run --config /etc/appliance/missing.yaml\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmds := filepath.Join(dir, "broken.debugfs")
	if err := os.WriteFile(cmds, []byte("cd /etc/systemd/system/appliance.service.d\nwrite "+dropin+" zz-broken.conf\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{
		{"cp", "--sparse=always", rootfs, out},
		{"truncate", "-s", "+16M", out}, // the build shrank it to its minimum: room for one file
		{"resize2fs", out},
		{"debugfs", "-w", "-f", cmds, out},
	} {
		if b, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", c, err, b)
		}
	}
	if b, _ := exec.Command("debugfs", "-R", "cat /etc/systemd/system/appliance.service.d/zz-broken.conf", out).Output(); !bytes.Contains(b, []byte("missing.yaml")) {
		t.Fatalf("the broken root has no broken drop-in: %q", b)
	}
	return out
}

// unitWithToken is the image's default config with an API token, as the
// SMBIOS credential the first boot copies onto the data partition.
func unitWithToken(t *testing.T) (token, cred string) {
	t.Helper()
	cfg, err := os.ReadFile(filepath.Join(repoRoot(t), "image/appliance.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, 16)
	_, _ = rand.Read(raw)
	token = hex.EncodeToString(raw)
	sum := sha256.Sum256([]byte(token))
	line := `listen: "0.0.0.0:8080"`
	if !bytes.Contains(cfg, []byte(line)) {
		t.Fatalf("image/appliance.yaml has no %s line to add the token after", line)
	}
	cfg = bytes.Replace(cfg, []byte(line), []byte(line+"\n  tokens: [{name: rig, sha256: \""+hex.EncodeToString(sum[:])+"\"}]"), 1)
	return token, "io.systemd.credential.binary:appliance.config=" + base64.StdEncoding.EncodeToString(cfg)
}

// region is a partition of a disk image, found by its GPT name.
type region struct {
	disk        string
	start, size int64
}

func slotRegion(t *testing.T, disk, name string) region {
	t.Helper()
	out, err := exec.Command("sfdisk", "--json", disk).Output()
	if err != nil {
		t.Fatal(err)
	}
	var pt struct {
		PartitionTable struct {
			Partitions []struct {
				Start, Size int64
				Name        string
			}
		}
	}
	if err := json.Unmarshal(out, &pt); err != nil {
		t.Fatal(err)
	}
	for _, p := range pt.PartitionTable.Partitions {
		if p.Name == name {
			return region{disk, p.Start * 512, p.Size * 512}
		}
	}
	t.Fatalf("no partition %s in %s", name, disk)
	return region{}
}

func (r region) hash(t *testing.T) string {
	t.Helper()
	f, err := os.Open(r.disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, r.start, r.size)); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// bundleServer serves the bundles to the guest (QEMU's user network
// reaches the host's loopback as 10.0.2.2).
type bundleServer struct {
	dir  string
	port int
	mu   sync.Mutex
	gets map[string]int
	kill *killer
}

type killer struct {
	name     string
	nth      int
	fraction float64
	do       func()
	done     chan struct{}
}

func serveBundles(t *testing.T, dir string) *bundleServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &bundleServer{dir: dir, port: ln.Addr().(*net.TCPAddr).Port, gets: map[string]int{}}
	srv := &http.Server{Handler: http.HandlerFunc(s.serve)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *bundleServer) url(path string) string {
	return fmt.Sprintf("http://10.0.2.2:%d/%s", s.port, filepath.Base(path))
}

// killAfter calls do once the nth GET of bundle has served fraction of it.
func (s *bundleServer) killAfter(bundle string, nth int, fraction float64, do func()) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kill = &killer{name: filepath.Base(bundle), nth: nth, fraction: fraction, do: do, done: make(chan struct{})}
	return s.kill.done
}

func (s *bundleServer) serve(w http.ResponseWriter, r *http.Request) {
	name := filepath.Base(r.URL.Path)
	f, err := os.Open(filepath.Join(s.dir, name))
	if err != nil || !strings.HasSuffix(name, ".bundle") {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	fi, _ := f.Stat()
	s.mu.Lock()
	s.gets[name]++
	n, k := s.gets[name], s.kill
	s.mu.Unlock()
	w.Header().Set("Content-Length", fmt.Sprint(fi.Size()))
	if k == nil || k.name != name || k.nth != n {
		_, _ = io.Copy(w, f)
		return
	}
	limit := int64(float64(fi.Size()) * k.fraction)
	_, _ = io.CopyN(w, f, limit)
	if fl, ok := w.(http.Flusher); ok {
		fl.Flush()
	}
	k.do()
	close(k.done)
}

// qemuVM is the image running in QEMU on a disk that outlives it.
type qemuVM struct {
	port     int
	serialF  string
	cmd      *exec.Cmd
	exited   chan struct{}
	once     sync.Once
	killed   atomic.Bool
	lastPost time.Time
}

func startVM(t *testing.T, disk, vars string, extra ...string) *qemuVM {
	t.Helper()
	v := &qemuVM{port: freePort(t), serialF: filepath.Join(t.TempDir(), "serial.log"), exited: make(chan struct{})}
	args := append(uefiGuest(disk, vars),
		"-serial", "file:"+v.serialF, "-monitor", "none",
		"-nic", fmt.Sprintf("user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:%d-:8080", v.port))
	v.cmd = exec.Command("qemu-system-x86_64", append(args, extra...)...)
	v.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // no guest outlives the test
	var qout testutil.SyncBuffer
	v.cmd.Stdout, v.cmd.Stderr = &qout, &qout
	if err := v.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = v.cmd.Wait(); close(v.exited) }()
	t.Cleanup(func() {
		v.kill()
		<-v.exited
		if t.Failed() {
			t.Logf("qemu: %s\nserial console:\n%s", qout.String(), tail(v.serial(t), 60000))
		}
	})
	return v
}

func (v *qemuVM) kill() { v.once.Do(func() { v.killed.Store(true); _ = v.cmd.Process.Kill() }) }

func (v *qemuVM) wait(t *testing.T) {
	t.Helper()
	select {
	case <-v.exited:
	case <-time.After(time.Minute):
		t.Fatal("QEMU did not exit")
	}
}

func (v *qemuVM) serial(t *testing.T) string {
	b, _ := os.ReadFile(v.serialF)
	return string(b)
}

type updateStatus struct {
	imageStatus
	Slots *struct {
		Running string     `json:"running"`
		Slots   []slotView `json:"slots"`
		Update  *struct {
			State     string `json:"state"`
			DoneBytes int64  `json:"done_bytes"`
		} `json:"update"`
		LastUpdate *struct {
			Version string    `json:"version"`
			Outcome string    `json:"outcome"`
			Reason  string    `json:"reason"`
			Started time.Time `json:"started"`
		} `json:"last_update"`
	} `json:"slots"`
}

type slotView struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	Running   bool   `json:"running"`
	Committed bool   `json:"committed"`
	TriesLeft *int   `json:"tries_left"`
	Bad       bool   `json:"bad"`
}

func (s updateStatus) slot(name string) slotView {
	if s.Slots != nil {
		for _, sl := range s.Slots.Slots {
			if sl.Name == name {
				return sl
			}
		}
	}
	return slotView{}
}

func (s updateStatus) summary() string {
	b, _ := json.Marshal(s.Slots)
	return fmt.Sprintf("unit %s version %s, slots %s", s.Unit.State, s.Unit.Version, b)
}

func (v *qemuVM) status() (updateStatus, error) {
	var s updateStatus
	return s, getStatus(v.port, &s)
}

// waitFor polls the API until cond holds of a running unit.
func (v *qemuVM) waitFor(t *testing.T, within time.Duration, what string, cond func(updateStatus) bool) updateStatus {
	t.Helper()
	var s updateStatus
	last := ""
	testutil.Eventually(t, within, what, func() bool {
		select {
		case <-v.exited:
			t.Fatalf("QEMU exited while waiting for %s", what)
		default:
		}
		got, err := v.status()
		if err != nil {
			return false
		}
		key := got
		if got.Slots != nil && got.Slots.Update != nil {
			sl, u := *got.Slots, *got.Slots.Update
			u.DoneBytes = 0 // progress is not news
			sl.Update, key.Slots = &u, &sl
		}
		if sum := key.summary(); sum != last {
			t.Logf("%s", sum)
			last = sum
		}
		s = got
		return got.Unit.State == "running" && got.Slots != nil && cond(got)
	})
	return s
}

// update asks the unit for an update, as an operator's script would.
func (v *qemuVM) update(t *testing.T, token, bundle string) {
	t.Helper()
	v.lastPost = time.Now()
	body := fmt.Sprintf(`{"bundle": %q}`, bundle)
	req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/api/v1/update", v.port), strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	c := http.Client{Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST /api/v1/update: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("POST /api/v1/update %s: %s %s", bundle, resp.Status, b)
	}
}
