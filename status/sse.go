package status

import (
	"bytes"
	"context"
	"encoding/json"
	"hash/fnv"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Live updates are server-sent events: each live client is sent, once per
// liveEvery, the sections of its page whose HTML changed, rendered by the
// same templates as the page. They need no lock of the report path: frames
// are built from the published report by one goroutine.
const (
	// liveWriteTimeout bounds each write to a live client: one that does
	// not read for this long is cut off.
	liveWriteTimeout = 5 * time.Second
	// liveMaxAge ends a live connection, which the page then opens again:
	// a client that vanished without a word holds its slot no longer.
	liveMaxAge = 10 * time.Minute
	// liveKeepAlive is a comment sent when nothing changed, so proxies
	// and the browser know the connection lives.
	liveKeepAlive = 15 * time.Second
)

// run samples the report into the history every historyEvery, and while
// live clients are connected publishes a frame every p.every, until ctx
// ends. It is the only goroutine that samples. The first sample is taken
// a tick after the start, when the unit has had time to report.
func (p *pageState) run(ctx context.Context, src Source) {
	defer close(p.done)
	t := p.clk.NewTicker(p.every)
	defer t.Stop()
	each := max(1, int(historyEvery/p.every))
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		p.mu.Lock()
		watched := p.subs > 0
		p.mu.Unlock()
		sample := n%each == 0
		if sample || watched {
			p.step(src, sample)
		}
	}
}

// step takes one report: into the history when sample is set, and to the
// live clients. A report that panics is logged and skipped: the page and
// its history must outlive it.
func (p *pageState) step(src Source, sample bool) {
	defer func() {
		if v := recover(); v != nil {
			p.log.Error("status: building the report for the page panicked", "panic", v)
		}
	}()
	rep, at := p.report(src)
	if sample {
		p.hist.add(rep)
	}
	p.publish(&frame{rep: rep, at: at, recent: p.hist.recentAll()})
}

func (p *pageState) publish(f *frame) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cur = f
	close(p.next)
	p.next = make(chan struct{})
}

// latest is the newest frame and the channel closed when a newer one comes.
func (p *pageState) latest() (*frame, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur, p.next
}

func (p *pageState) watch(d int) {
	p.mu.Lock()
	p.subs += d
	p.mu.Unlock()
}

// sectionsFunc renders the live sections of one page from a frame.
type sectionsFunc func(f *frame, sess Session, in bool) (map[string][]byte, error)

// live serves /live: the live updates of the main page (with the page's q
// and page) or of a stream's page (stream=NAME), as server-sent events.
func (s *Server) live(w http.ResponseWriter, r *http.Request) {
	if !getOnly(w, r) {
		return
	}
	render, err := s.liveView(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if r.Method == http.MethodHead {
		w.Header().Set("Content-Type", "text/event-stream")
		return
	}
	select {
	case s.page.slots <- struct{}{}:
		defer func() { <-s.page.slots }()
	default:
		w.Header().Set("Retry-After", "10")
		writeError(w, http.StatusServiceUnavailable, "too many live pages are open ("+strconv.Itoa(cap(s.page.slots))+
			"); close one, or use the page without live updates: reload it to see the latest")
		return
	}
	s.page.watch(1)
	defer s.page.watch(-1)

	rc := http.NewResponseController(w)
	// The server's read timeout would end the request's context mid-stream;
	// this one ends with the stream's longest life instead.
	_ = rc.SetReadDeadline(time.Now().Add(s.page.maxAge + time.Minute))
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	h.Set("X-Content-Type-Options", "nosniff")
	if err := liveWrite(rc, w, s.page.wait, []byte(": live\n\n")); err != nil {
		return
	}

	// The frame published before this client came may be older than the
	// page it just loaded; the next one is not.
	_, next := s.page.latest()
	sent := map[string]uint64{}
	end := time.NewTimer(s.page.maxAge)
	defer end.Stop()
	keep := time.NewTicker(liveKeepAlive)
	defer keep.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.page.done:
			return
		case <-end.C:
			_ = liveWrite(rc, w, s.page.wait, []byte("event: bye\ndata: {}\n\n"))
			return
		case <-keep.C:
			if liveWrite(rc, w, s.page.wait, []byte(": keep-alive\n\n")) != nil {
				return
			}
		case <-next:
			var f *frame
			f, next = s.page.latest()
			sess, in := s.session(r)
			secs, err := render(f, sess, in)
			if err != nil {
				s.log.Error("status: cannot render the live page", "err", err)
				return
			}
			msg := changed(secs, sent)
			if msg == nil {
				continue
			}
			if liveWrite(rc, w, s.page.wait, msg) != nil {
				return
			}
			keep.Reset(liveKeepAlive)
		}
	}
}

// liveView reads what a live client shows.
func (s *Server) liveView(r *http.Request) (sectionsFunc, error) {
	q := r.URL.Query()
	if name := q.Get("stream"); name != "" || q.Has("stream") {
		if !streamName.MatchString(name) {
			return nil, errBadStream(name)
		}
		return func(f *frame, sess Session, in bool) (map[string][]byte, error) {
			return f.sections(viewKey("stream="+name, sess, in), func() (map[string][]byte, error) {
				v, ok := streamPageView(f.rep, f.at, name, f.recent, s.page.hist, sess, in)
				if !ok {
					return map[string][]byte{"stream": []byte(`<p class="gone">This stream is no longer on the unit.</p>`)}, nil
				}
				return renderSections(v, streamSections)
			})
		}, nil
	}
	p, err := parseParams(q)
	if err != nil {
		return nil, err
	}
	return func(f *frame, sess Session, in bool) (map[string][]byte, error) {
		return f.sections(viewKey("main?"+p.query(p.Page), sess, in), func() (map[string][]byte, error) {
			return renderSections(mainView(f.rep, f.at, p, f.recent, sess, in), mainSections)
		})
	}, nil
}

// viewKey tells views apart: live clients with the same key are sent the
// same sections.
func viewKey(view string, sess Session, in bool) string {
	if !in {
		return view
	}
	return view + "\x00" + sess.Name + "\x00" + sess.CSRF
}

// sections renders a view's sections for this frame once, however many
// live clients show that view: most show the same page.
func (f *frame) sections(key string, build func() (map[string][]byte, error)) (map[string][]byte, error) {
	f.mu.Lock()
	if f.views == nil {
		f.views = map[string]*rendered{}
	}
	r, ok := f.views[key]
	if !ok {
		r = &rendered{}
		f.views[key] = r
	}
	f.mu.Unlock()
	r.once.Do(func() { r.secs, r.err = build() })
	return r.secs, r.err
}

// rendered is one view's sections of one frame.
type rendered struct {
	once sync.Once
	secs map[string][]byte
	err  error
}

type errBadStream string

func (e errBadStream) Error() string {
	return "stream " + strconv.Quote(string(e)) + " is not a stream name: lowercase letters, digits, - and _"
}

// renderSections renders each section of a view alone.
func renderSections(view any, names []string) (map[string][]byte, error) {
	out := make(map[string][]byte, len(names))
	var b bytes.Buffer
	for _, n := range names {
		b.Reset()
		if err := pageTmpl.ExecuteTemplate(&b, "sec-"+n, view); err != nil {
			return nil, err
		}
		out[n] = bytes.Clone(b.Bytes())
	}
	return out, nil
}

// changed is the event that carries the sections whose HTML differs from
// what was last sent (sent holds their hashes, and is updated), or nil
// when none does.
func changed(secs map[string][]byte, sent map[string]uint64) []byte {
	diff := map[string]string{}
	for name, html := range secs {
		h := fnv.New64a()
		_, _ = h.Write(html)
		sum := h.Sum64()
		if prev, ok := sent[name]; ok && prev == sum {
			continue
		}
		sent[name] = sum
		diff[name] = string(html)
	}
	if len(diff) == 0 {
		return nil
	}
	var b bytes.Buffer
	b.WriteString("event: sections\ndata: ")
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(diff) // strings always encode; the newline it ends with ends the data line
	b.WriteString("\n")
	return b.Bytes()
}

// liveWrite sends one event within wait.
func liveWrite(rc *http.ResponseController, w http.ResponseWriter, wait time.Duration, msg []byte) error {
	if err := rc.SetWriteDeadline(time.Now().Add(wait)); err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	return rc.Flush()
}
