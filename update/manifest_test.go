package update

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// A fixed key, so that the fuzz corpus's seeds are signed by it.
var testKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

func goodManifest() Manifest {
	return Manifest{Version: "1.4.0", Compatible: "appliance-x86_64", Parts: []Part{
		{Name: "rootfs", Size: 1 << 30, SHA256: strings.Repeat("ab", 32)},
		{Name: "vmlinuz", Size: 8 << 20, SHA256: strings.Repeat("cd", 32)},
		{Name: "initrd", Size: 40 << 20, SHA256: strings.Repeat("ef", 32)},
	}}
}

func pub() ed25519.PublicKey { return testKey.Public().(ed25519.PublicKey) }

func TestSignOpen(t *testing.T) {
	file, err := Sign(goodManifest(), testKey)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Open(file, pub())
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != "1.4.0" || len(m.Parts) != 3 || m.Parts[0] != goodManifest().Parts[0] {
		t.Errorf("opened %+v, want what was signed", m)
	}
}

func TestOpenRefusesChanges(t *testing.T) {
	file, err := Sign(goodManifest(), testKey)
	if err != nil {
		t.Fatal(err)
	}
	var s signed
	if err := json.Unmarshal(file, &s); err != nil {
		t.Fatal(err)
	}
	// A part's hash changed after signing.
	s.Manifest = bytes.Replace(s.Manifest, []byte(strings.Repeat("ab", 32)), []byte(strings.Repeat("00", 32)), 1)
	changed, _ := json.Marshal(s)
	if _, err := Open(changed, pub()); !errors.Is(err, ErrSignature) {
		t.Errorf("a changed manifest: %v, want ErrSignature", err)
	}
	// Another key.
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, ed25519.SeedSize))
	if _, err := Open(file, other.Public().(ed25519.PublicKey)); !errors.Is(err, ErrSignature) {
		t.Errorf("another key: %v, want ErrSignature", err)
	}
}

func TestOpenBadInput(t *testing.T) {
	for _, tc := range []struct {
		name, file, want string
	}{
		{"empty", "", "not a signed manifest"},
		{"not JSON", "PK\x03\x04", "not a signed manifest"},
		{"unknown field", `{"manifest":"e30=","signature":"AA==","x":1}`, "not a signed manifest"},
		{"no signature", `{"manifest":"e30="}`, "manifest or signature missing"},
		{"short signature", `{"manifest":"e30=","signature":"AA=="}`, "signature does not match"},
		{"trailing data", `{"manifest":"e30=","signature":"AA=="} {}`, "data after"},
		{"too large", strings.Repeat(" ", MaxManifest+1), "not a bundle manifest"},
	} {
		_, err := Open([]byte(tc.file), pub())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Manifest)
		want   string
	}{
		{"no version", func(m *Manifest) { m.Version = "" }, "version"},
		{"version with a slash", func(m *Manifest) { m.Version = "../x" }, "version"},
		{"no compatible", func(m *Manifest) { m.Compatible = "" }, "compatible"},
		{"unknown part", func(m *Manifest) { m.Parts[0].Name = "bootloader" }, `name "bootloader"`},
		{"part twice", func(m *Manifest) { m.Parts[1].Name = "rootfs" }, "listed twice"},
		{"part missing", func(m *Manifest) { m.Parts = m.Parts[:2] }, "initrd is missing"},
		{"zero size", func(m *Manifest) { m.Parts[0].Size = 0 }, "size 0"},
		{"huge size", func(m *Manifest) { m.Parts[0].Size = MaxPartSize + 1 }, "size"},
		{"short hash", func(m *Manifest) { m.Parts[0].SHA256 = "ab" }, "64 lower-case hex"},
		{"upper-case hash", func(m *Manifest) { m.Parts[0].SHA256 = strings.Repeat("AB", 32) }, "64 lower-case hex"},
	} {
		m := goodManifest()
		tc.change(&m)
		err := m.Check()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
		if _, err := Sign(m, testKey); err == nil {
			t.Errorf("%s: signed a manifest that does not check", tc.name)
		}
	}
	if err := goodManifest().Check(); err != nil {
		t.Errorf("good manifest: %v", err)
	}
}

// FuzzOpen: whatever a bundle's manifest file holds, Open returns a manifest
// that checks or an error, never a panic; a manifest it accepts was signed.
func FuzzOpen(f *testing.F) {
	good, err := Sign(goodManifest(), testKey)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"manifest":"e30=","signature":"AA=="}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Add(bytes.Replace(good, []byte(`"signature"`), []byte(`"sig"`), 1))
	f.Fuzz(func(t *testing.T, file []byte) {
		m, err := Open(file, pub())
		if err != nil {
			return
		}
		if err := m.Check(); err != nil {
			t.Fatalf("Open accepted a manifest that does not check: %v", err)
		}
		var s signed
		if json.Unmarshal(file, &s) != nil || !ed25519.Verify(pub(), s.Manifest, s.Signature) {
			t.Fatal("Open accepted a manifest whose signature does not check")
		}
	})
}
