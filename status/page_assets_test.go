package status

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Every asset the page links is served with its type, a year of caching
// and its hash; a browser that has it gets 304.
func TestAssetsServed(t *testing.T) {
	_, _, base := pageServer(t, &fixed{syntheticReport(3, 1, 3)}, testOpts)
	_, _, page := pageFetch(t, "GET", base+"/")
	links := regexp.MustCompile(`(?:href|src)="(/assets/[^"]+)"`).FindAllStringSubmatch(page, -1)
	if len(links) != 3 {
		t.Fatalf("the page links %d assets, want the CSS, the icon and the script", len(links))
	}
	for _, l := range links {
		u := l[1]
		if !regexp.MustCompile(`^/assets/[a-z]+\.[0-9a-f]{10}\.(css|js|svg)$`).MatchString(u) {
			t.Errorf("%s carries no content hash", u)
		}
		code, h, body := pageFetch(t, "GET", base+u)
		if code != 200 || len(body) == 0 {
			t.Errorf("GET %s: %d, %d bytes", u, code, len(body))
		}
		if cc := h.Get("Cache-Control"); cc != "public, max-age=31536000, immutable" {
			t.Errorf("%s: Cache-Control %q", u, cc)
		}
		wantType := map[string]string{".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}[u[strings.LastIndex(u, "."):]]
		if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, wantType) {
			t.Errorf("%s: type %q, want %s", u, ct, wantType)
		}
		req, _ := http.NewRequest("GET", base+u, nil)
		req.Header.Set("If-None-Match", h.Get("ETag"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 304 {
			t.Errorf("%s with its ETag: %d, want 304", u, resp.StatusCode)
		}
	}
	if code, _, _ := pageFetch(t, "POST", base+links[0][1]); code != 405 {
		t.Errorf("POST to an asset: %d, want 405", code)
	}
}

// rawGet sends a request line as written, so that no client cleans the
// path first, and returns the status code and body.
func rawGet(t *testing.T, addr, target string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET "+target+" HTTP/1.1\r\nHost: unit\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// The asset handler serves the embedded set and nothing else, however the
// path is spelled. Redirects (the router cleaning dot segments) are
// followed to where they lead.
func TestAssetsPathTraversal(t *testing.T) {
	s, _, _ := pageServer(t, &fixed{syntheticReport(3, 1, 3)}, testOpts)
	addr := s.Addr().String()
	css := assetNames["page.css"]
	for _, target := range []string{
		"/assets/../status.go",
		"/assets/../../status/status.go",
		"/assets/%2e%2e/status.go",
		"/assets/%2E%2E%2Fstatus.go",
		"/assets/..%2fstatus.go",
		"/assets/..%5cstatus.go",
		"/assets/%252e%252e%252fstatus.go",
		"/assets//etc/passwd",
		"/assets/%2fetc%2fpasswd",
		"/assets/assets/static/page.css",
		"/assets/page.css",
		"/assets/templates/layout.html",
		"/assets/static/../templates/layout.html",
		"/assets/" + strings.TrimPrefix(css, "/assets/") + "/../../status.go",
		"/assets/" + strings.TrimPrefix(css, "/assets/") + "%00",
		"/assets/.",
		"/assets/",
		"http://unit/assets/../status.go",
		"/status/status.go",
		"/etc/passwd",
		"//etc/passwd",
	} {
		code, body := rawGet(t, addr, target)
		for hops := 0; code >= 300 && code < 400 && hops < 3; hops++ {
			loc := regexp.MustCompile(`href="([^"]+)"`).FindStringSubmatch(body)
			if loc == nil {
				break
			}
			code, body = rawGet(t, addr, loc[1])
		}
		if code == 200 || strings.Contains(body, "package status") || strings.Contains(body, "root:") || strings.Contains(body, "{{define") {
			t.Errorf("GET %s: %d, %.80q", target, code, body)
		}
	}
	// The real name still works through the same raw path.
	if code, _ := rawGet(t, addr, css); code != 200 {
		t.Errorf("GET %s: %d", css, code)
	}
}
