// Package update reads and writes the signed manifest of an update bundle:
// which image version the bundle carries and the size and SHA-256 of each
// of its parts (docs/image.md, "Update and rollback"). A manifest is trusted
// only once its ed25519 signature checks against the key built into the
// image; nothing of a bundle is written to a slot before that.
package update

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
)

// MaxManifest is the largest signed manifest Open reads.
const MaxManifest = 64 << 10

// MaxPartSize bounds a part's declared size (a root slot is 1 GiB).
const MaxPartSize = 4 << 30

// Part names a bundle may carry: the root file system image for the
// inactive slot, and the kernel and initrd for its boot entry.
var partNames = map[string]bool{"rootfs": true, "vmlinuz": true, "initrd": true}

// Manifest says what a bundle carries.
type Manifest struct {
	Version    string `json:"version"`    // the image version, as `make image` was given it
	Compatible string `json:"compatible"` // the hardware family the image is for, e.g. "appliance-x86_64"
	Parts      []Part `json:"parts"`
}

// Part is one file of the bundle.
type Part struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // lower-case hex
}

// signed is the file on disk: the manifest's exact bytes and their signature.
type signed struct {
	Manifest  []byte `json:"manifest"`  // base64 in JSON
	Signature []byte `json:"signature"` // base64 in JSON, ed25519 over Manifest
}

var versionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}$`)

// Check reports everything wrong with m, joined, or nil.
func (m Manifest) Check() error {
	var errs []error
	if !versionRE.MatchString(m.Version) {
		errs = append(errs, fmt.Errorf("version %q: want 1-64 characters of letters, digits and ._+~-", m.Version))
	}
	if !versionRE.MatchString(m.Compatible) {
		errs = append(errs, fmt.Errorf("compatible %q: want 1-64 characters of letters, digits and ._+~-", m.Compatible))
	}
	seen := map[string]bool{}
	for i, p := range m.Parts {
		switch {
		case !partNames[p.Name]:
			errs = append(errs, fmt.Errorf("part %d: name %q: want rootfs, vmlinuz or initrd", i, p.Name))
		case seen[p.Name]:
			errs = append(errs, fmt.Errorf("part %d: %s is listed twice", i, p.Name))
		}
		seen[p.Name] = true
		if p.Size <= 0 || p.Size > MaxPartSize {
			errs = append(errs, fmt.Errorf("part %s: size %d: want 1 to %d bytes", p.Name, p.Size, int64(MaxPartSize)))
		}
		if b, err := hex.DecodeString(p.SHA256); err != nil || len(b) != 32 || hex.EncodeToString(b) != p.SHA256 {
			errs = append(errs, fmt.Errorf("part %s: sha256 %q: want 64 lower-case hex digits", p.Name, p.SHA256))
		}
	}
	for _, name := range []string{"rootfs", "vmlinuz", "initrd"} {
		if !seen[name] {
			errs = append(errs, fmt.Errorf("part %s is missing: a bundle carries rootfs, vmlinuz and initrd", name))
		}
	}
	return errors.Join(errs...)
}

// Sign checks m and returns the signed manifest file.
func Sign(m Manifest, key ed25519.PrivateKey) ([]byte, error) {
	if err := m.Check(); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("signing key: %d bytes, want an ed25519 private key of %d", len(key), ed25519.PrivateKeySize)
	}
	body, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return json.MarshalIndent(signed{Manifest: body, Signature: ed25519.Sign(key, body)}, "", "  ")
}

// ErrSignature is returned by Open when the signature does not check: the
// bundle was not made by the holder of the image's key, or was changed.
var ErrSignature = errors.New("the manifest's signature does not match the image's update key: the bundle was not signed for this image or was changed; nothing was written")

// Open checks the signed manifest file against pub and returns the
// manifest. The signature is checked before the manifest is parsed.
func Open(file []byte, pub ed25519.PublicKey) (Manifest, error) {
	var m Manifest
	if len(file) > MaxManifest {
		return m, fmt.Errorf("manifest: %d bytes, more than %d: not a bundle manifest", len(file), MaxManifest)
	}
	if len(pub) != ed25519.PublicKeySize {
		return m, fmt.Errorf("update key: %d bytes, want an ed25519 public key of %d", len(pub), ed25519.PublicKeySize)
	}
	var s signed
	dec := json.NewDecoder(bytes.NewReader(file))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return m, fmt.Errorf("manifest: not a signed manifest (%v): use the manifest `make image` wrote next to the bundle", err)
	}
	if dec.More() {
		return m, errors.New("manifest: data after the signed manifest: use the manifest `make image` wrote")
	}
	if len(s.Manifest) == 0 || len(s.Signature) == 0 {
		return m, errors.New("manifest: manifest or signature missing: use the manifest `make image` wrote")
	}
	if len(s.Signature) != ed25519.SignatureSize || !ed25519.Verify(pub, s.Manifest, s.Signature) {
		return m, ErrSignature
	}
	dec = json.NewDecoder(bytes.NewReader(s.Manifest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, fmt.Errorf("manifest: signed, but not readable by this release (%v): update through an intermediate release", err)
	}
	if err := m.Check(); err != nil {
		return Manifest{}, fmt.Errorf("manifest: signed, but %w", err)
	}
	return m, nil
}
