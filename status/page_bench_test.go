package status

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"appliance/internal/clock"
)

// BenchmarkPage measures the page at 1,000 streams (2 outputs each, 200
// events, a pair): "view" judges and sorts every stream and cuts the
// first page of 50; "render" is that and the whole HTML; "served" is a GET
// / that finds no fresh report, so it asks for one and builds the page; "stream" is a stream's page with five
// minutes of history; "live" is one live client's sections for a frame.
func BenchmarkPage(b *testing.B) {
	rep := pairedReport()
	h := newHistory()
	for range historyLen + 1 {
		for i := range rep.Streams {
			rep.Streams[i].PacketsIn += 1500
		}
		h.add(&rep)
	}
	recent := h.recentAll()
	p := pageParams{Page: 1}
	var page bytes.Buffer
	if err := pageTmpl.ExecuteTemplate(&page, "main", mainView(&rep, rep.Unit.Started, p, recent, Session{}, false)); err != nil {
		b.Fatal(err)
	}

	b.Run("view", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			mainView(&rep, rep.Unit.Started, p, recent, Session{}, false)
		}
	})
	b.Run("render", func(b *testing.B) {
		b.SetBytes(int64(page.Len()))
		b.ReportAllocs()
		var out bytes.Buffer
		for b.Loop() {
			out.Reset()
			if err := pageTmpl.ExecuteTemplate(&out, "main", mainView(&rep, rep.Unit.Started, p, recent, Session{}, false)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("served", func(b *testing.B) {
		s := &Server{src: &fixed{rep}, log: discard(), page: newPageState(testOpts, discard())}
		s.page.hist = h
		fake := s.page.clk.(*clock.Fake)
		req := httptest.NewRequest("GET", "/", nil)
		w := &nullWriter{h: http.Header{}}
		b.SetBytes(int64(page.Len()))
		b.ReportAllocs()
		for b.Loop() {
			fake.Advance(reuseFor) // the report of the last request is too old
			s.mainPage(w, req)
		}
	})
	b.Run("stream", func(b *testing.B) {
		b.ReportAllocs()
		var out bytes.Buffer
		for b.Loop() {
			out.Reset()
			v, _ := streamPageView(&rep, rep.Unit.Started, "channel-0500", recent, h, Session{}, false)
			if err := pageTmpl.ExecuteTemplate(&out, "stream", v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("live", func(b *testing.B) {
		b.ReportAllocs()
		f := &frame{rep: &rep, at: rep.Unit.Started, recent: recent}
		sent := map[string]uint64{}
		for b.Loop() {
			secs, err := renderSections(mainView(f.rep, f.at, p, f.recent, Session{}, false), mainSections)
			if err != nil {
				b.Fatal(err)
			}
			clear(sent)
			changed(secs, sent)
		}
	})
}
