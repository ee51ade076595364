package status

import (
	"bytes"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzPageQuery feeds the page's query string (the filter, the page, the
// flash messages, a stream for /live) from outside bytes: the answer is a
// page or a clear refusal, never a crash, and nothing from the query comes
// back unescaped.
func FuzzPageQuery(f *testing.F) {
	for _, seed := range []string{
		"", "q=channel&page=2", "page=0", "page=-1", "page=1e9", "page=99999999999999999999",
		"q=%3Cscript%3Ealert(1)%3C%2Fscript%3E", "q=critical+warning", "q=" + strings.Repeat("x", 300),
		"done=%22%3E%3Cimg", "error=%00%ff", "q=%zz", "stream=channel-0001", "stream=..%2F..", "page=2&page=3",
	} {
		f.Add(seed)
	}
	rep := syntheticReport(120, 1, 10)
	// What the page says by itself, with every optional part shown: a
	// string found here may appear in any page without coming from the query.
	var natural bytes.Buffer
	for _, p := range []pageParams{{Page: 1}, {Q: "x", Page: 2}} {
		base := mainView(&rep, rep.Unit.Started, p, nil, Session{}, false)
		base.Flash = flash{Done: "x", Error: "x"}
		if err := pageTmpl.ExecuteTemplate(&natural, "main", base); err != nil {
			f.Fatal(err)
		}
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, _ := url.ParseQuery(raw) // as the server reads it: what cannot be parsed is dropped
		p, err := parseParams(q)
		if err != nil {
			if !strings.Contains(err.Error(), "page") && !strings.Contains(err.Error(), "filter") {
				t.Fatalf("%q: an error that does not say what to fix: %v", raw, err)
			}
			return
		}
		if p.Page < 1 || len(p.Q) > maxQuery {
			t.Fatalf("%q: %+v", raw, p)
		}
		v := mainView(&rep, rep.Unit.Started, p, nil, Session{}, false)
		v.Flash = readFlash(q)
		var b bytes.Buffer
		if err := pageTmpl.ExecuteTemplate(&b, "main", v); err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		for _, in := range []string{p.Q, v.Flash.Done, v.Flash.Error} {
			if strings.ContainsAny(in, `<>"`) && strings.Contains(b.String(), in) && !strings.Contains(natural.String(), in) {
				t.Fatalf("%q: %q comes back unescaped", raw, in)
			}
		}
		if v.Streams.Page < 1 || v.Streams.Page > v.Streams.Pages || len(v.Streams.Rows) > pageSize {
			t.Fatalf("%q: page %d of %d, %d rows", raw, v.Streams.Page, v.Streams.Pages, len(v.Streams.Rows))
		}
		s := &Server{page: newPageState(testOpts, discard())}
		req := httptest.NewRequest("GET", "/live", nil)
		req.URL.RawQuery = raw
		if _, err := s.liveView(req); err != nil && !strings.Contains(err.Error(), "stream") && !strings.Contains(err.Error(), "page") && !strings.Contains(err.Error(), "filter") {
			t.Fatalf("%q: /live refuses with %v", raw, err)
		}
	})
}
