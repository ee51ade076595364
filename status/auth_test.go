package status

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// TestLogin: a form post with a configured token opens a session: an
// HttpOnly, SameSite=Strict cookie for the whole site, and the browser goes
// back where it came from. A wrong token is refused in the format asked for.
func TestLogin(t *testing.T) {
	r := newRig(t, nil)
	a := r.do(req{method: "POST", path: "/login", ctype: formType, body: url.Values{"token": {testToken}, "next": {"/streams/cam1?x=1"}}.Encode()})
	if a.code != 303 || a.header.Get("Location") != "/streams/cam1?x=1" {
		t.Fatalf("login: %d, Location %q", a.code, a.header.Get("Location"))
	}
	cookies := (&http.Response{Header: a.header}).Cookies()
	if len(cookies) != 1 {
		t.Fatalf("%d cookies", len(cookies))
	}
	c := cookies[0]
	if c.Name != sessionCookie || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Secure ||
		c.MaxAge != int(sessionTTL.Seconds()) || len(c.Value) != 43 {
		t.Errorf("the session cookie: %+v", c)
	}
	if _, c2 := r.login(); c2 == "" {
		t.Error("no CSRF token")
	}

	for _, tc := range []struct {
		accept, ctype string
	}{{"", "text/html"}, {"application/json", "application/json"}} {
		a := r.do(req{method: "POST", path: "/login", ctype: formType, body: "token=" + wrongToken, header: map[string]string{"Accept": tc.accept}})
		if a.code != 401 || !strings.HasPrefix(a.header.Get("Content-Type"), tc.ctype) || !strings.Contains(a.body, "not one of status.tokens") {
			t.Errorf("a wrong token, Accept %q: %d %s %s", tc.accept, a.code, a.header.Get("Content-Type"), a.body)
		}
		if len(a.header.Values("Set-Cookie")) != 0 {
			t.Error("a refused login set a cookie")
		}
	}
	for _, q := range []req{
		{method: "POST", path: "/login", ctype: jsonType, body: `{"token": "` + testToken + `"}`},
		{method: "POST", path: "/login", ctype: formType, body: "token=" + strings.Repeat("x", maxBody)},
	} {
		if a := r.do(q); a.code != 415 && a.code != 413 {
			t.Errorf("login with %s: %d %s", q.ctype, a.code, a.body)
		}
	}
	if !strings.Contains(r.logs.String(), `msg="api: login" by=noc`) || !strings.Contains(r.logs.String(), "api: login refused") {
		t.Errorf("logins are not logged:\n%s", r.logs.String())
	}
}

// TestPageForms: the page's forms act with the session and its CSRF token
// and send the browser back with the outcome; scripts that use the session
// send the token in a header and get JSON.
func TestPageForms(t *testing.T) {
	r := newRig(t, nil)
	cookie, csrf := r.login()
	if a := r.do(req{method: "GET", path: "/api/v1/session", cookie: cookie}); a.code != 200 || a.json["name"] != "noc" || a.json["csrf"] != csrf {
		t.Errorf("GET /api/v1/session: %d %s", a.code, a.body)
	}
	if a := r.do(req{method: "GET", path: "/api/v1/session"}); a.code != 401 {
		t.Errorf("GET /api/v1/session without a session: %d %s", a.code, a.body)
	}
	a := r.do(req{method: "POST", path: "/api/v1/streams/cam1/handover", cookie: cookie, ctype: formType,
		body: url.Values{"csrf": {csrf}, "next": {"/?filter=cam"}}.Encode()})
	loc, _ := url.Parse(a.header.Get("Location"))
	if a.code != 303 || loc.Path != "/" || loc.Query().Get("filter") != "cam" || loc.Query().Get("done") != "cam1 is now forwarded by unit-b (epoch 4)" {
		t.Errorf("a handover from the page: %d, Location %q", a.code, a.header.Get("Location"))
	}
	a = r.do(req{method: "POST", path: "/api/v1/drills", cookie: cookie, ctype: formType,
		body: url.Values{"csrf": {csrf}, "scenario": {"planned"}, "stream": {"cam1"}}.Encode()})
	if loc, _ := url.Parse(a.header.Get("Location")); a.code != 303 || !strings.HasPrefix(loc.Query().Get("done"), "drill planned: ok, 1 streams moved") {
		t.Errorf("a drill from the page: %d, Location %q", a.code, a.header.Get("Location"))
	}
	r.act.mu.Lock()
	r.act.err = errors.New("this unit is not paired: its config has no pair: section")
	r.act.mu.Unlock()
	a = r.do(req{method: "POST", path: "/api/v1/streams/cam1/restart", cookie: cookie, ctype: formType, body: "csrf=" + url.QueryEscape(csrf)})
	if loc, _ := url.Parse(a.header.Get("Location")); a.code != 303 || loc.Path != "/" || loc.Query().Get("error") != "this unit is not paired: its config has no pair: section" {
		t.Errorf("a failed restart from the page: %d, Location %q", a.code, a.header.Get("Location"))
	}
	a = r.do(req{method: "POST", path: "/api/v1/config/reload", cookie: cookie, header: map[string]string{csrfHeader: csrf}})
	if a.code != 409 || a.json["error"] == nil {
		t.Errorf("a session script: %d %s", a.code, a.body)
	}
	want := []string{"handover cam1", "drill planned cam1", "restart cam1", "reload"}
	if got := r.act.called(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("calls %q, want %q", got, want)
	}
	if !strings.Contains(r.logs.String(), "op=handover stream=cam1 scenario=\"\" by=noc via=session") {
		t.Errorf("a session's action does not name who logged in:\n%s", r.logs.String())
	}

	// Logging out needs the CSRF token too, then ends the session.
	if a := r.do(req{method: "POST", path: "/logout", cookie: cookie, ctype: formType}); a.code != 403 {
		t.Errorf("logout without the CSRF token: %d %s", a.code, a.body)
	}
	a = r.do(req{method: "POST", path: "/logout", cookie: cookie, ctype: formType, body: url.Values{"csrf": {csrf}, "next": {"/"}}.Encode()})
	cleared := (&http.Response{Header: a.header}).Cookies()
	if a.code != 303 || a.header.Get("Location") != "/" || len(cleared) != 1 || cleared[0].MaxAge >= 0 {
		t.Errorf("logout: %d %v", a.code, a.header)
	}
	if a := r.do(req{method: "POST", path: "/api/v1/config/reload", cookie: cookie, header: map[string]string{csrfHeader: csrf}}); a.code != 401 {
		t.Errorf("the session after logout: %d %s", a.code, a.body)
	}
	if n := len(r.act.called()); n != 4 {
		t.Errorf("%d calls after logout, want 4", n)
	}
}

func TestLocalPath(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":                      "/",
		"/":                     "/",
		"/streams/cam1?x=1":     "/streams/cam1?x=1",
		"//evil.example/":       "/",
		"/\\evil.example":       "/",
		"https://evil.example/": "/",
		"evil":                  "/",
		"/a\r\nSet-Cookie: x":   "/",
		"/%zz":                  "/",
		"/\x7f":                 "/",
		"javascript:alert(1)":   "/",
	} {
		if got := localPath(in); got != want {
			t.Errorf("localPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestSlowClients: a client that holds its headers open, or dribbles its
// body, is cut off by the server's timeouts and acts on nothing.
func TestSlowClients(t *testing.T) {
	r := newRig(t, func(o *Options) { o.headerTimeout, o.readTimeout = 200*time.Millisecond, 400*time.Millisecond })
	addr := strings.TrimPrefix(r.base, "http://")
	for _, tc := range []struct{ what, sent string }{
		{"headers held open", "POST /api/v1/config/reload HTTP/1.1\r\nHost: unit\r\nAuthorization: Bearer " + testToken + "\r\n"},
		{"a body dribbled", "POST /api/v1/drills HTTP/1.1\r\nHost: unit\r\nAuthorization: Bearer " + testToken +
			"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"scenario\":"},
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(c, tc.sent); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(c) // returns when the server closes
		held := time.Since(start)
		c.Close()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("%s: still open after %v", tc.what, held)
		}
		if s := string(got); s != "" && !strings.Contains(s, " 400 ") && !strings.Contains(s, " 408 ") {
			t.Errorf("%s: answered %q", tc.what, s)
		}
		t.Logf("%s: cut off after %v", tc.what, held.Round(time.Millisecond))
	}
	if calls := r.act.called(); len(calls) != 0 {
		t.Errorf("slow clients acted: %q", calls)
	}
}

// TestTLS: with status.tls the API speaks HTTPS only, and the session
// cookie is Secure.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeTestCert(t, dir)
	r := newRig(t, func(o *Options) { o.TLS = TLSFiles{Cert: cert, Key: key} })
	pool := x509.NewCertPool()
	pemBytes, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(pemBytes)
	client := &http.Client{
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	base := strings.Replace(r.base, "http://", "https://", 1)
	resp, err := client.PostForm(base+"/login", url.Values{"token": {testToken}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 303 || len(resp.Cookies()) != 1 || !resp.Cookies()[0].Secure {
		t.Errorf("login over HTTPS: %d %v", resp.StatusCode, resp.Header)
	}
	hr, _ := http.NewRequest("POST", base+"/api/v1/streams/cam1/restart", nil)
	hr.Header.Set("Authorization", "Bearer "+testToken)
	resp, err = client.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || len(r.act.called()) != 1 {
		t.Errorf("an action over HTTPS: %d, calls %q", resp.StatusCode, r.act.called())
	}
	if resp, err := http.Get(r.base + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plain HTTP is answered too")
		}
	}

	_, err = Listen("127.0.0.1:0", Options{MaxConnections: 4, IdleTimeout: time.Second, TLS: TLSFiles{Cert: filepath.Join(dir, "none.pem"), Key: key}},
		sample("running"), discard())
	if err == nil || !strings.Contains(err.Error(), "status.tls") {
		t.Errorf("a missing certificate: %v, want an error naming status.tls", err)
	}
}

// writeTestCert writes a self-signed certificate for 127.0.0.1 and its key.
func writeTestCert(t *testing.T, dir string) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "unit-a"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "api.pem"), filepath.Join(dir, "api.key")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// tokenLike is what a token in a body looks like: a long run of letters
// and digits, longer than any word of the messages.
var tokenLike = regexp.MustCompile(`[A-Za-z0-9_]{16,}`)

// FuzzParseBody: any body with any content type is read or refused with a
// message, never a panic; what is read fits the limits, and no message
// quotes the body.
func FuzzParseBody(f *testing.F) {
	f.Add(jsonType, []byte(`{"scenario": "planned", "stream": "cam1"}`))
	f.Add("application/json; charset=utf-8", []byte(`{"scenario": "overheat"}`))
	f.Add(jsonType, []byte(`{"scenario": "planned"} {"x": 1}`))
	f.Add(jsonType, []byte(`{"scenario": 7}`))
	f.Add(jsonType, []byte(`null`))
	f.Add(jsonType, []byte(`[`))
	f.Add("", []byte(""))
	f.Add("", []byte(`{"scenario": "planned"}`))
	f.Add(formType, []byte("csrf=abc&next=%2F&scenario=planned&stream=cam1"))
	f.Add(formType, []byte("token=secret-token-value&token=again"))
	f.Add(jsonType, []byte(`{"token": "secret-token-value-0123456789"}`))
	f.Add(jsonType, []byte(`{"scenario": secret-token-value-0123456789}`))
	f.Add(jsonType, []byte(`{"secret_token_value_0123456789": "x"}`))
	f.Add(formType, []byte("next=%zz"))
	f.Add("text/plain", []byte("planned"))
	f.Add("multipart/form-data; boundary=x", []byte("--x--"))
	f.Add("application/json; charset=\"", []byte("{}"))
	f.Fuzz(func(t *testing.T, ctype string, b []byte) {
		in, err := parseBody(ctype, b)
		if err != nil {
			msg := bodyRefusal(err).msg
			if msg == "" || !utf8.ValidString(msg) || len(msg) > 400 {
				t.Fatalf("message %q", msg)
			}
			for _, run := range tokenLike.FindAllString(string(b), -1) {
				if strings.Contains(msg, run) && !strings.Contains(ctype, run) {
					t.Fatalf("the message quotes %q of the body: %q", run, msg)
				}
			}
			if in != (body{}) {
				t.Fatalf("a refused body read as %+v", in)
			}
			return
		}
		if len(in.Scenario) > maxNameLen || len(in.Stream) > maxNameLen || len(in.Next) > maxNextLen ||
			len(in.CSRF) > tokenValueMax || len(in.Token) > tokenValueMax {
			t.Fatalf("read past the limits: %d %d %d %d %d", len(in.Scenario), len(in.Stream), len(in.Next), len(in.CSRF), len(in.Token))
		}
		if !in.form && (in.CSRF != "" || in.Next != "" || in.Token != "") {
			t.Fatalf("JSON read form fields: %+v", in)
		}
		if next := localPath(in.Next); next != "/" && next != in.Next {
			t.Fatalf("localPath(%q) = %q", in.Next, next)
		}
	})
}
