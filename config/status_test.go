package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTokens(t *testing.T) {
	t.Parallel()
	noc, ci := sha256.Sum256([]byte("token-of-the-noc-0001")), sha256.Sum256([]byte("token-of-the-ci-0002"))
	c := mustParse(t, minimal+fmt.Sprintf("status:\n  tokens:\n    - %s\n    - %s\n", TokenLine("noc", noc), TokenLine("ci_bot", ci)))
	if len(c.Status.Tokens) != 2 || c.Status.Tokens[0] != (Token{Name: "noc", SHA256: noc}) || c.Status.Tokens[1] != (Token{Name: "ci_bot", SHA256: ci}) {
		t.Errorf("tokens: %v", c.Status.Tokens)
	}
	if got := c.Summary(); !strings.HasSuffix(got, ", 2 API tokens") {
		t.Errorf("summary %q does not count the tokens", got)
	}
	if d := mustParse(t, minimal+"status: {tokens: []}\n"); d.Status.Tokens != nil {
		t.Errorf("an empty list: %v", d.Status.Tokens)
	}

	// A token pasted where its hash belongs is refused without quoting it.
	secret := "Zq3vT9pLr8sKx2mNw7yBc4hJd6fGa1eU"
	hexSecret := strings.Repeat("ab", 32)
	empty := sha256.Sum256(nil)
	for _, tc := range []struct {
		src, want string
		line      int
	}{
		{fmt.Sprintf("    - {name: noc, sha256: %q}\n", secret), "the 64 hex digits `appliance token hash` prints", 5},
		{"    - {name: noc, sha256: 1234}\n", "the 64 hex digits", 5},
		{fmt.Sprintf("    - {name: noc, sha256: \"%x\"}\n", empty), "hash of an empty token", 5},
		{fmt.Sprintf("    - {name: Noc, sha256: %q}\n", hexSecret), "lowercase letters", 5},
		{"    - {name: noc}\n", `"sha256" is required`, 5},
		{fmt.Sprintf("    - {sha256: %q}\n", hexSecret), `"name" is required`, 5},
		{fmt.Sprintf("    - {name: noc, sha256: %q}\n    - {name: noc, sha256: \"%x\"}\n", hexSecret, noc), "already the name of tokens[0]", 6},
		{fmt.Sprintf("    - {name: a, sha256: %q}\n    - {name: b, sha256: %q}\n", hexSecret, hexSecret), "the same token as tokens[0]", 6},
		{"    - {name: noc, sha256: \"" + hexSecret + "\", token: x}\n", `unknown key "token"`, 5},
	} {
		ps := problems(t, minimal+"status:\n  tokens:\n"+tc.src)
		if len(ps) != 1 || !strings.Contains(ps[0].Msg, tc.want) || ps[0].Line != tc.line {
			t.Errorf("%q: %+v, want one problem on line %d saying %q", tc.src, ps, tc.line, tc.want)
		}
		for _, p := range ps {
			if strings.Contains(p.Msg, secret) || strings.Contains(p.Msg, hexSecret) {
				t.Errorf("a problem quotes the value: %s", p.Msg)
			}
		}
	}
	many := minimal + "status:\n  tokens:\n"
	for i := range MaxTokens + 1 {
		many += fmt.Sprintf("    - {name: t%d, sha256: \"%x\"}\n", i, sha256.Sum256(fmt.Append(nil, i)))
	}
	if ps := problems(t, many); len(ps) != 1 || !strings.Contains(ps[0].Msg, "at most 64") {
		t.Errorf("too many tokens: %+v", ps)
	}
}

// TestTokenHidden: printing or logging a config shows a token's name, never
// its hash.
func TestTokenHidden(t *testing.T) {
	t.Parallel()
	sum := sha256.Sum256([]byte("token-of-the-noc-0001"))
	hexSum := fmt.Sprintf("%x", sum)
	c := mustParse(t, minimal+"status:\n  tokens: ["+TokenLine("noc", sum)+"]\n")
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "status", c.Status, "token", c.Status.Tokens[0])
	for _, out := range []string{fmt.Sprintf("%v", c), fmt.Sprintf("%+v", c.Status), fmt.Sprintf("%#v", c.Status.Tokens), fmt.Sprintf("%x", c.Status.Tokens[0]), logged.String()} {
		if strings.Contains(out, hexSum) || strings.Contains(out, fmt.Sprint(sum[:4])) {
			t.Errorf("the hash shows: %s", out)
		}
		if !strings.Contains(out, "noc") {
			t.Errorf("the token's name does not show: %s", out)
		}
	}
}

func TestTLSSettings(t *testing.T) {
	t.Parallel()
	c := mustParse(t, minimal+"status: {tls: {cert: /etc/appliance/api.pem, key: /etc/appliance/api.key}}\n")
	if c.Status.TLS != (TLS{Cert: "/etc/appliance/api.pem", Key: "/etc/appliance/api.key"}) || !strings.Contains(c.Summary(), "(https)") {
		t.Errorf("tls: %+v, %s", c.Status.TLS, c.Summary())
	}
	if c := mustParse(t, minimal+"status: {tls: {cert: \"\", key: \"\"}}\n"); c.Status.TLS != (TLS{}) {
		t.Errorf("neither file: %+v", c.Status.TLS)
	}
	for _, tc := range []struct{ src, want string }{
		{"status:\n  tls: {cert: /a.pem}\n", "status: tls: cert is set but key is not; give the certificate's private key as status.tls.key"},
		{"status:\n  tls: {key: /a.key, cert: \"\"}\n", "status: tls: key is set but cert is not; give the certificate as status.tls.cert"},
		{"status:\n  tls: {cert: /a.pem, key: /a.key, ca: /c.pem}\n", `unknown key "ca"`},
	} {
		ps := problems(t, minimal+tc.src)
		if len(ps) != 1 || ps[0].Line != 4 || !strings.Contains(ps[0].Path+": "+ps[0].Msg, tc.want) {
			t.Errorf("%q: %+v, want %q", tc.src, ps, tc.want)
		}
	}
}

// TestTLSFiles: check (LoadEnv) loads the certificate and key as run does,
// and names the setting of a file it cannot use. Parse opens no file.
func TestTLSFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cert, key := writeCert(t, dir, "api")
	otherCert, _ := writeCert(t, dir, "other")
	load := func(c, k string) error {
		path := filepath.Join(dir, "unit.yaml")
		src := minimal + fmt.Sprintf("status:\n  tls: {cert: %q, key: %q}\n", c, k)
		if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadEnv(path, Env{})
		return err
	}
	if err := load(cert, key); err != nil {
		t.Fatalf("a good pair: %v", err)
	}
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cert, key string
		want      []string
	}{
		{filepath.Join(dir, "none.pem"), key, []string{":4:", "status.tls.cert", "none.pem does not exist"}},
		{cert, filepath.Join(dir, "none.key"), []string{":4:", "status.tls.key", "none.key does not exist"}},
		{dir, key, []string{"status.tls.cert", "a directory"}},
		{garbage, key, []string{"status.tls.cert", "do not load"}},
		{otherCert, key, []string{"do not load", "the key matching the certificate"}},
	} {
		err := load(tc.cert, tc.key)
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("cert %s, key %s: %v; want it to say %q", tc.cert, tc.key, err, w)
			}
		}
	}
	if _, err := Parse("t.yaml", []byte(minimal+"status: {tls: {cert: /nonexistent.pem, key: /nonexistent.key}}\n")); err != nil {
		t.Errorf("Parse opened the files: %v", err)
	}
}

// writeCert writes a self-signed certificate for 127.0.0.1 and its key.
func writeCert(t testing.TB, dir, name string) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}
