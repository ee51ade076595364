package status

import (
	"bytes"
	"context"
	"embed"
	"html/template"
	"log/slog"
	"net/http"
	"regexp"
	"sync"
	"time"

	"appliance/internal/clock"
)

// The page's templates: the layout and the sections, each section also
// rendered alone for the live updates.
//
//go:embed assets/templates/*.html
var templateFiles embed.FS

var pageTmpl = template.Must(template.New("page").Funcs(pageFuncs).ParseFS(templateFiles, "assets/templates/*.html"))

// The sections each page keeps live, by the id of their element.
var (
	mainSections   = []string{"verdict", "unit", "pair", "streams", "tree", "hardware", "watchdog", "events", "drills"}
	streamSections = []string{"verdict", "stream", "sparks", "stream-events"}
)

// pageState is the page's share of the server: the history of every
// stream, and the frames its live clients are sent.
type pageState struct {
	log   *slog.Logger
	hist  *history
	clk   clock.Clock
	every time.Duration // how often live clients are sent what changed
	slots chan struct{} // one per live client: a bounded number
	done  chan struct{} // closed when the server stops: live clients end

	maxAge time.Duration // a live connection's longest life (liveMaxAge)
	wait   time.Duration // the longest a write to a live client may take (liveWriteTimeout)

	// The newest report, kept for reuseFor.
	repMu   sync.Mutex
	rep     *Report
	repAt   time.Time     // wall clock, for people
	repMono time.Duration // its age is measured on the monotonic clock

	mu   sync.Mutex
	cur  *frame
	next chan struct{} // closed when cur is replaced
	subs int           // live clients now
}

// frame is one report as the live clients see it.
type frame struct {
	rep    *Report
	at     time.Time
	recent map[string]recentCounts

	mu    sync.Mutex
	views map[string]*rendered // by viewKey: at most one per live client
}

// liveEvery is how often live clients hear what changed: reports change
// ten times a second, an operator needs no more than this.
const liveEvery = time.Second

// pageClock is the clock of the page's sampling and live updates; tests of
// the package replace it with fakes that move when they say.
var pageClock = clock.Real

// newPageState sizes the live clients from the connection cap: they hold
// their connections for minutes, and must leave most of them to the API.
func newPageState(opts Options, log *slog.Logger) *pageState {
	return &pageState{
		log: log, hist: newHistory(), clk: pageClock(), every: liveEvery, maxAge: liveMaxAge, wait: liveWriteTimeout,
		slots: make(chan struct{}, max(1, min(32, opts.MaxConnections/4))),
		done:  make(chan struct{}),
		next:  make(chan struct{}),
	}
}

// routePage adds the page's routes: the page itself at /, a page per
// stream, the live updates and the embedded assets.
func (s *Server) routePage(mux *http.ServeMux) {
	mux.HandleFunc("/{$}", s.mainPage)
	mux.HandleFunc("/streams/{name}", s.streamPage)
	mux.HandleFunc("/live", s.live)
	mux.HandleFunc("/assets/", serveAsset)
}

// startPage runs the page's sampling goroutine until ctx ends or the
// returned function, which waits for it, is called.
func (s *Server) startPage(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.page.run(ctx, s.src)
	}()
	return func() {
		cancel()
		<-done
	}
}

// pageHeaders are the headers of every HTML answer: never cached (it is
// live state), no script but the page's own, no framing.
func pageHeaders(h http.Header) {
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
}

var bufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// writePage renders a template whole before answering, so a template that
// fails answers 500, not half a page.
func (s *Server) writePage(w http.ResponseWriter, code int, name string, view any) {
	b := bufs.Get().(*bytes.Buffer)
	defer func() {
		b.Reset()
		bufs.Put(b)
	}()
	if err := pageTmpl.ExecuteTemplate(b, name, view); err != nil {
		s.log.Error("status: cannot render the page", "page", name, "err", err)
		writeError(w, http.StatusInternalServerError, "the page could not be rendered: "+err.Error()+"; this is a bug, please report it with the log (the JSON API at /api/v1/status still answers)")
		return
	}
	pageHeaders(w.Header())
	w.WriteHeader(code)
	_, _ = w.Write(b.Bytes())
}

// errorView is a page that says what was wrong with a request and what to do.
type errorView struct {
	Title, Message string
}

func (s *Server) pageError(w http.ResponseWriter, code int, title, msg string) {
	s.writePage(w, code, "error", errorView{Title: title, Message: msg})
}

// pageReport is the report the page shows, shared by the page's viewers
// as the API's pollers share theirs: at most one report per reuseFor. The
// page does not use the API's rendering, which also encodes the JSON it
// has no use for.
func (s *Server) pageReport() (*Report, time.Time) { return s.page.report(s.src) }

// report returns a report no older than reuseFor, building it if needed;
// callers that come while it is built wait for it and share it.
func (p *pageState) report(src Source) (*Report, time.Time) {
	p.repMu.Lock()
	defer p.repMu.Unlock()
	if p.rep != nil && p.clk.Mono()-p.repMono < reuseFor {
		return p.rep, p.repAt
	}
	rep := src.Report()
	p.rep, p.repAt, p.repMono = &rep, p.clk.Now(), p.clk.Mono()
	return p.rep, p.repAt
}

// mainPage serves /: every section of the unit, the streams table filtered
// and paged by the query (q, page).
func (s *Server) mainPage(w http.ResponseWriter, r *http.Request) {
	if !getOnly(w, r) {
		return
	}
	q := r.URL.Query()
	p, err := parseParams(q)
	if err != nil {
		s.pageError(w, http.StatusBadRequest, "Bad request", err.Error()+".")
		return
	}
	rep, at := s.pageReport()
	sess, in := s.session(r)
	v := mainView(rep, at, p, s.page.hist.recentAll(), sess, in)
	v.Flash = readFlash(q)
	s.writePage(w, http.StatusOK, "main", v)
}

// streamName is what config accepts as a stream's name; anything else is
// no stream of this unit's.
var streamName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// streamPage serves /streams/{name}: one stream, its counters over the
// last minutes and its events.
func (s *Server) streamPage(w http.ResponseWriter, r *http.Request) {
	if !getOnly(w, r) {
		return
	}
	name := r.PathValue("name")
	if !streamName.MatchString(name) {
		s.pageError(w, http.StatusNotFound, "No such stream", "There is no stream called "+name+": stream names are lowercase letters, digits, - and _. The list is on the main page.")
		return
	}
	rep, at := s.pageReport()
	sess, in := s.session(r)
	v, ok := streamPageView(rep, at, name, s.page.hist.recentAll(), s.page.hist, sess, in)
	if !ok {
		s.pageError(w, http.StatusNotFound, "No such stream", "This unit has no stream called "+name+". The list is on the main page.")
		return
	}
	v.Flash = readFlash(r.URL.Query())
	s.writePage(w, http.StatusOK, "stream", v)
}
