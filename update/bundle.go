package update

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

// A bundle is one file: the magic, the signed manifest's length (4 bytes,
// big-endian), the signed manifest (manifest.go), then each part's bytes
// in the manifest's order, and nothing after the last part.
const magic = "APPLIANCE-BUNDLE-1\n"

// Compatible is the hardware family this build's images are for; a bundle
// for another family is refused.
const Compatible = "appliance-x86_64"

// WriteBundle writes a bundle of the given parts (name to file) to w,
// signed with key. The manifest lists the parts in the order given.
func WriteBundle(w io.Writer, version string, names []string, files map[string]string, key ed25519.PrivateKey) error {
	m := Manifest{Version: version, Compatible: Compatible}
	for _, name := range names {
		f, err := os.Open(files[name])
		if err != nil {
			return err
		}
		h := sha256.New()
		n, err := io.Copy(h, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", files[name], err)
		}
		m.Parts = append(m.Parts, Part{Name: name, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))})
	}
	signed, err := Sign(m, key)
	if err != nil {
		return err
	}
	var hdr bytes.Buffer
	hdr.WriteString(magic)
	_ = binary.Write(&hdr, binary.BigEndian, uint32(len(signed)))
	hdr.Write(signed)
	if _, err := w.Write(hdr.Bytes()); err != nil {
		return err
	}
	for _, p := range m.Parts {
		f, err := os.Open(files[p.Name])
		if err != nil {
			return err
		}
		n, err := io.Copy(w, f)
		f.Close()
		if err != nil {
			return err
		}
		if n != p.Size {
			return fmt.Errorf("%s changed while the bundle was written", files[p.Name])
		}
	}
	return nil
}

// ReadHeader reads a bundle's magic and signed manifest from r, checks the
// signature against pub and returns the manifest and its signed bytes. r
// is then at the first part.
func ReadHeader(r io.Reader, pub ed25519.PublicKey) (Manifest, []byte, error) {
	head := make([]byte, len(magic)+4)
	if _, err := io.ReadFull(r, head); err != nil {
		return Manifest{}, nil, fmt.Errorf("not an update bundle (%v): use the .bundle file `make image` wrote", shortRead(err))
	}
	if string(head[:len(magic)]) != magic {
		return Manifest{}, nil, errors.New("not an update bundle (no bundle header): use the .bundle file `make image` wrote")
	}
	n := binary.BigEndian.Uint32(head[len(magic):])
	if n == 0 || n > MaxManifest {
		return Manifest{}, nil, fmt.Errorf("bundle: manifest length %d, want 1 to %d: not a bundle `make image` wrote", n, MaxManifest)
	}
	signed := make([]byte, n)
	if _, err := io.ReadFull(r, signed); err != nil {
		return Manifest{}, nil, fmt.Errorf("bundle: the manifest is cut short (%v): copy the bundle again", shortRead(err))
	}
	m, err := Open(signed, pub)
	if err != nil {
		return Manifest{}, nil, err
	}
	if m.Compatible != Compatible {
		return Manifest{}, nil, fmt.Errorf("bundle: built for %q, this unit is %q: use a bundle for this hardware; nothing was written", m.Compatible, Compatible)
	}
	return m, signed, nil
}

func shortRead(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return errors.New("the file ends early")
	}
	return err
}

// ErrHash is a part whose bytes do not match the signed manifest.
var ErrHash = errors.New("does not match the signed manifest: the bundle was damaged in transit or changed; copy it again")

// CheckParts reads every part from r (after ReadHeader) and checks its
// size and SHA-256, then that nothing follows the last part.
func CheckParts(r io.Reader, m Manifest, progress func(n int64)) error {
	for _, p := range m.Parts {
		if err := copyPart(io.Discard, r, p, progress); err != nil {
			return err
		}
	}
	var one [1]byte
	if n, _ := io.ReadFull(r, one[:]); n != 0 {
		return errors.New("bundle: data after the last part: not a bundle `make image` wrote; nothing was written")
	}
	return nil
}

// copyPart copies part p from r to w, hashing it, and checks size and hash.
func copyPart(w io.Writer, r io.Reader, p Part, progress func(n int64)) error {
	h := sha256.New()
	dst := io.MultiWriter(w, h)
	if progress != nil {
		dst = io.MultiWriter(dst, progressWriter(progress))
	}
	n, err := io.CopyBuffer(dst, io.LimitReader(r, p.Size), make([]byte, 1<<20))
	if err != nil {
		return fmt.Errorf("part %s: %w", p.Name, err)
	}
	if n != p.Size {
		return fmt.Errorf("part %s: %d bytes of %d: the bundle is cut short; copy it again", p.Name, n, p.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != p.SHA256 {
		return fmt.Errorf("part %s: SHA-256 %s %w", p.Name, got[:16]+"...", ErrHash)
	}
	return nil
}

type progressWriter func(int64)

func (p progressWriter) Write(b []byte) (int, error) { p(int64(len(b))); return len(b), nil }

// Source is where a bundle is read from. It is read twice: once to check
// it, once to write it, so it must give the same bytes both times.
type Source interface {
	Open(ctx context.Context) (io.ReadCloser, error)
	String() string
}

// SourceFor is a file path, or an http:// or https:// URL.
func SourceFor(where string) (Source, error) {
	switch {
	case strings.HasPrefix(where, "http://") || strings.HasPrefix(where, "https://"):
		return urlSource(where), nil
	case strings.HasPrefix(where, "/"):
		return fileSource(where), nil
	case where == "":
		return nil, errors.New("no bundle: give its absolute path on the unit or an http(s) URL")
	}
	return nil, fmt.Errorf("bundle %q: give an absolute path on the unit or an http(s) URL", where)
}

type fileSource string

func (f fileSource) String() string { return string(f) }
func (f fileSource) Open(context.Context) (io.ReadCloser, error) {
	return os.Open(string(f))
}

type urlSource string

func (u urlSource) String() string { return string(u) }
func (u urlSource) Open(ctx context.Context) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, string(u), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", string(u), resp.Status)
	}
	return resp.Body, nil
}

// ReadPublicKey reads an ed25519 public key, PEM (PKIX).
func ReadPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: not a PEM public key", path)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an ed25519 key", path)
	}
	return pub, nil
}

// ReadPrivateKey reads an ed25519 private key, PEM (PKCS #8, as
// `openssl genpkey -algorithm ed25519` writes it).
func ReadPrivateKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: not a PEM private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an ed25519 key", path)
	}
	return key, nil
}

// PEMKeys returns key and its public half as PEM.
func PEMKeys(key ed25519.PrivateKey) (private, public []byte, err error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	pder, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pder}), nil
}
