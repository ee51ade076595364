package status

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"appliance/control"
)

// API v1 beyond the status document and the events: one stream, the drill
// history, and the actions. Actions are the control socket's own: each
// handler turns its request into a control.Request and hands it to
// control.Do with the unit's control.Actions, so the socket and the API
// cannot drift apart. docs/api.md documents every answer.

const (
	// maxBody bounds an action's request body.
	maxBody = 64 << 10
	// actionTimeout bounds an action once it has started. A client that
	// goes away does not stop it: as on the control socket, the unit
	// finishes what it began unless it is stopping.
	actionTimeout = 60 * time.Second
	formType      = "application/x-www-form-urlencoded"
	jsonType      = "application/json"
)

// Field lengths past which a request is refused before it reaches the
// unit or its log.
const (
	maxNameLen = 128
	maxNextLen = 2048
)

// routes registers the endpoints of this file and of auth.go.
func (s *Server) routes(mux *http.ServeMux) {
	mux.HandleFunc("/api/v1/streams/{name}", s.stream)
	mux.HandleFunc("/api/v1/streams/{name}/handover", s.action(control.OpHandover))
	mux.HandleFunc("/api/v1/streams/{name}/restart", s.action(control.OpRestart))
	mux.HandleFunc("/api/v1/drills", s.drills)
	mux.HandleFunc("/api/v1/config/reload", s.action(control.OpReload))
	mux.HandleFunc("/api/v1/update", s.action(control.OpUpdate))
	mux.HandleFunc("/api/v1/session", s.whoami)
	// With a method, so that GET /login and GET /logout stay the page's.
	mux.HandleFunc("POST /login", s.login)
	mux.HandleFunc("POST /logout", s.logout)
}

// stream serves GET /api/v1/streams/{name}: the stream as the status
// document has it.
func (s *Server) stream(w http.ResponseWriter, r *http.Request) {
	if !getOnly(w, r) {
		return
	}
	name := r.PathValue("name")
	g, ok := s.rendering(w, r, false)
	if !ok {
		return
	}
	for i := range g.rep.Streams {
		if g.rep.Streams[i].Name != name {
			continue
		}
		doc, err := json.Marshal(&g.rep.Streams[i])
		if err != nil {
			s.serverError(w, g, err)
			return
		}
		if pretty(r) {
			doc = indent(doc)
		}
		writeBody(w, append(doc, '\n'), false)
		return
	}
	writeError(w, http.StatusNotFound, fmt.Sprintf("no stream %q on this unit; GET /api/v1/status lists its streams", name))
}

// whoami serves GET /api/v1/session: who the browser session is logged in
// as, and its CSRF token, for scripts of the page that post with fetch.
// Another site's script cannot read the answer, and the cookie is never
// sent with another site's requests.
func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	if !getOnly(w, r) {
		return
	}
	sess, ok := s.session(r)
	if !ok {
		writeError(w, http.StatusUnauthorized, "not logged in: log in on the status page (scripts need no session: they send \"Authorization: Bearer TOKEN\")")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"name": sess.Name, "csrf": sess.CSRF})
}

// drillsDoc is the body of GET /api/v1/drills.
type drillsDoc struct {
	Drills []Drill `json:"drills"` // most recent first
	Note   string  `json:"note,omitempty"`
}

const loneNote = "this unit is not paired, so it runs no drills: a drill moves streams to the paired unit (see the pair: section in docs/operations.md)"

// drills serves GET /api/v1/drills, the drills run on this unit, and POST
// /api/v1/drills, which runs one.
func (s *Server) drills(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodPost:
		s.perform(w, r, control.OpDrill)
		return
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		writeError(w, http.StatusMethodNotAllowed, r.Method+" is not allowed here; GET the drill history, or POST a drill")
		return
	}
	g, ok := s.rendering(w, r, false)
	if !ok {
		return
	}
	doc := drillsDoc{Drills: []Drill{}, Note: loneNote}
	if p := g.rep.Pair; p != nil {
		doc = drillsDoc{Drills: p.Drills}
		if doc.Drills == nil {
			doc.Drills = []Drill{}
		}
	}
	writeJSON(w, http.StatusOK, doc)
}

func (s *Server) action(op string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if postOnly(w, r) {
			s.perform(w, r, op)
		}
	}
}

// perform carries out one action request: the client's rate, who it is,
// its body and CSRF token, the unit's rate; then the action, once.
func (s *Server) perform(w http.ResponseWriter, r *http.Request, op string) {
	client := clientOf(r)
	if ref := s.limits.client(client); ref != nil {
		s.refuse(w, r, ref)
		return
	}
	who, ref := s.authenticate(r)
	if ref != nil {
		s.refuse(w, r, ref)
		return
	}
	body, ref := readBody(w, r)
	if ref != nil {
		s.refuse(w, r, ref)
		return
	}
	in, err := parseBody(r.Header.Get("Content-Type"), body)
	if err != nil {
		s.refuse(w, r, bodyRefusal(err))
		return
	}
	if !csrfOK(who, r, in.CSRF) {
		s.refuse(w, r, &refusal{http.StatusForbidden, csrfMsg, ""})
		return
	}
	req, ref := request(op, r.PathValue("name"), in)
	if ref != nil {
		s.refuse(w, r, ref)
		return
	}
	if ref := s.limits.unit(); ref != nil {
		s.refuse(w, r, ref)
		return
	}
	if s.actions == nil {
		s.refuse(w, r, &refusal{http.StatusServiceUnavailable, "this server carries out no actions; use the unit's control socket", ""})
		return
	}

	// The answer may come after the server's write timeout: a drill waits
	// for the peer.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(actionTimeout + 5*time.Second))
	ctx, cancel := context.WithTimeout(s.life, actionTimeout)
	defer cancel()
	s.log.Info("api: action", "op", op, "stream", req.Stream, "scenario", req.Scenario, "by", who.name, "via", who.via, "client", client)
	resp, err := control.Do(control.WithActor(ctx, who.name+" ("+who.via+")"), s.actions, req)
	code := statusFor(err)
	if errors.Is(err, context.DeadlineExceeded) {
		resp.Error = fmt.Sprintf("the %s did not finish within %v; GET /api/v1/status shows where it got to", op, actionTimeout)
	}
	if err != nil {
		s.log.Warn("api: action failed", "op", op, "stream", req.Stream, "by", who.name, "status", code, "err", resp.Error)
	}
	if in.form && !acceptsJSON(r) {
		if err != nil {
			seeOther(w, in.Next, "error", resp.Error)
		} else {
			seeOther(w, in.Next, "done", doneText(req, resp))
		}
		return
	}
	writeJSON(w, code, resp)
}

// request is the control request for op: the stream comes from the path
// (handover, restart) or the body (drill).
func request(op, name string, in body) (control.Request, *refusal) {
	req := control.Request{Op: op}
	switch op {
	case control.OpDrill:
		req.Scenario, req.Stream = in.Scenario, in.Stream
		return req, nil
	case control.OpHandover, control.OpRestart:
		req.Stream = name
	case control.OpUpdate:
		req.Bundle = in.Bundle
		if in.Scenario != "" || in.Stream != "" {
			return req, &refusal{http.StatusBadRequest, "an update takes only a bundle in its body: {\"bundle\": \"https://...\"}", ""}
		}
		return req, nil
	}
	if in.Bundle != "" {
		return req, &refusal{http.StatusBadRequest, fmt.Sprintf("a %s takes no bundle", op), ""}
	}
	if in.Scenario != "" || in.Stream != "" {
		return req, &refusal{http.StatusBadRequest, fmt.Sprintf("a %s takes no scenario or stream in its body; the stream, if any, is in the path", op), ""}
	}
	return req, nil
}

// statusFor is the status code of an action's outcome.
func statusFor(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, control.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, control.ErrNoStream):
		return http.StatusNotFound
	case errors.Is(err, control.ErrFailed):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	// The unit cannot do it now: not paired, the peer is down, a drill is
	// running, the config file has problems. The message says which.
	return http.StatusConflict
}

// doneText is what the page shows after an action succeeded.
func doneText(req control.Request, resp control.Response) string {
	switch {
	case resp.Reload != nil:
		r := resp.Reload
		t := fmt.Sprintf("reloaded: %d added, %d removed, %d changed, %d unchanged", len(r.Added), len(r.Removed), len(r.Changed), len(r.Unchanged))
		if len(r.Failed) > 0 {
			t += fmt.Sprintf("; %d not carried (see the streams)", len(r.Failed))
		}
		if len(r.RestartNeeded) > 0 {
			t += "; restart the unit to apply " + strings.Join(r.RestartNeeded, ", ")
		}
		return t
	case resp.Handover != nil:
		return fmt.Sprintf("%s is now forwarded by %s (epoch %d)", resp.Handover.Stream, resp.Handover.To, resp.Handover.Epoch)
	case resp.Restart != nil:
		return fmt.Sprintf("%s restarted on worker-%d (restart %d)", resp.Restart.Stream, resp.Restart.Worker, resp.Restart.Restarts)
	case resp.Update != nil:
		return fmt.Sprintf("update started: slot %s is written from %s once the bundle checks; the unit then reboots into it", resp.Update.Slot, resp.Update.Bundle)
	case resp.Drill != nil:
		d := resp.Drill
		t := fmt.Sprintf("drill %s: %s, %d streams moved, longest gap %.1f ms, %d lost, %d duplicates", d.Scenario, d.Result, d.Streams, d.GapMs, d.Lost, d.Duplicates)
		if d.Detail != "" {
			t += ": " + d.Detail
		}
		return t
	}
	return req.Op + ": done"
}

// body is what an action, login or logout request may carry: JSON
// {"scenario", "stream"} from scripts, or a form from the page.
type body struct {
	Bundle   string // update only
	Scenario string
	Stream   string
	// Form posts only.
	CSRF  string
	Next  string // where to send the browser back to
	Token string // login only
	form  bool
}

// errUnsupported marks a body this API does not read (415).
var errUnsupported = errors.New("unsupported content type")

// parseBody reads a request body of the given Content-Type. An empty body
// needs no type. The errors say what to send instead and never quote the
// body.
func parseBody(contentType string, b []byte) (body, error) {
	mt := ""
	if contentType != "" {
		m, _, err := mime.ParseMediaType(contentType)
		if err != nil {
			return body{}, fmt.Errorf("%w: the Content-Type header cannot be read; send %s", errUnsupported, jsonType)
		}
		mt = m
	}
	blank := len(bytes.TrimSpace(b)) == 0
	var in body
	switch {
	case mt == formType:
		vals, err := url.ParseQuery(string(b))
		if err != nil {
			return body{}, errors.New("the form cannot be read (a stray % or ;?); post it from the status page")
		}
		for k, v := range vals {
			if len(v) > 1 {
				return body{}, fmt.Errorf("the form gives %s %d times; give it once", fieldName(k), len(v))
			}
		}
		in = body{Scenario: vals.Get("scenario"), Stream: vals.Get("stream"), Bundle: vals.Get("bundle"), CSRF: vals.Get("csrf"),
			Next: vals.Get("next"), Token: vals.Get("token"), form: true}
	case blank && (mt == "" || mt == jsonType):
		return body{}, nil
	case mt == jsonType:
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		var v struct {
			Scenario string `json:"scenario"`
			Stream   string `json:"stream"`
			Bundle   string `json:"bundle"`
		}
		if err := dec.Decode(&v); err != nil {
			return body{}, fmt.Errorf("the body is not a JSON object of \"scenario\" and \"stream\" (%s); send, for a drill, {\"scenario\": \"planned\"}", jsonProblem(err))
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return body{}, errors.New("the body holds more than one JSON value; send one object")
		}
		in = body{Scenario: v.Scenario, Stream: v.Stream, Bundle: v.Bundle}
	case mt == "":
		return body{}, fmt.Errorf("%w: a body needs the header Content-Type: %s", errUnsupported, jsonType)
	default:
		return body{}, fmt.Errorf("%w: %s bodies are not read here; send %s (the status page posts forms)", errUnsupported, fieldName(mt), jsonType)
	}
	for _, f := range []struct {
		name, v string
		max     int
	}{{"scenario", in.Scenario, maxNameLen}, {"stream", in.Stream, maxNameLen}, {"bundle", in.Bundle, maxNextLen}, {"next", in.Next, maxNextLen},
		{"csrf", in.CSRF, tokenValueMax}, {"token", in.Token, tokenValueMax}} {
		if len(f.v) > f.max {
			return body{}, fmt.Errorf("%s is %d bytes long, more than the %d it can be", f.name, len(f.v), f.max)
		}
	}
	return in, nil
}

// fieldName quotes a name from the request for a message, cut short.
func fieldName(s string) string {
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return fmt.Sprintf("%q", s)
}

// jsonProblem describes a decoding error without the value that caused it.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("not JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return "not an object"
		}
		return fmt.Sprintf("%s must be a string", typ.Field)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "it ends too soon"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// Named only when short: a long one may be a token sent by mistake.
		if name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`); len(name) <= 15 {
			return "unknown field " + fieldName(name)
		}
		return "an unknown field"
	}
	return "it cannot be decoded"
}

func bodyRefusal(err error) *refusal {
	if errors.Is(err, errUnsupported) {
		return &refusal{http.StatusUnsupportedMediaType, strings.TrimPrefix(err.Error(), errUnsupported.Error()+": "), ""}
	}
	return &refusal{http.StatusBadRequest, err.Error(), ""}
}

// readBody reads a request body of at most maxBody bytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, *refusal) {
	tooBig := &refusal{http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is larger than %d bytes; send only the few fields this endpoint takes", maxBody), ""}
	if r.ContentLength > maxBody {
		return nil, tooBig
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooBig
		}
		return nil, &refusal{http.StatusBadRequest, "the body could not be read in time; send it whole, at once", ""}
	}
	return b, nil
}

func mediaType(r *http.Request) string {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt
}

func acceptsJSON(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), jsonType)
}

func postOnly(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeError(w, http.StatusMethodNotAllowed, r.Method+" is not allowed here; this action is a POST")
		return false
	}
	return true
}

// clientOf is the address a request came from: the unit trusts no proxy
// header.
func clientOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// refuse answers a request the API will not carry out: JSON {"error"}, or,
// for a form the page posted, a small page saying the same.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, ref *refusal) {
	level := slog.LevelWarn
	if ref.code == http.StatusTooManyRequests {
		level = slog.LevelDebug // a flood must not flood the journal too
	}
	s.log.Log(r.Context(), level, "api: request refused", "method", r.Method, "path", r.URL.Path,
		"status", ref.code, "reason", ref.msg, "client", clientOf(r))
	if ref.retryAfter != "" {
		w.Header().Set("Retry-After", ref.retryAfter)
	}
	if ref.code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="appliance"`)
	}
	if mediaType(r) == formType && !acceptsJSON(r) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(ref.code)
		fmt.Fprintf(w, "<!doctype html>\n<meta charset=\"utf-8\">\n<title>%d %s · appliance</title>\n<p>%s</p>\n<p><a href=\"/\">Back to the status page</a></p>\n",
			ref.code, http.StatusText(ref.code), html.EscapeString(ref.msg))
		return
	}
	writeError(w, ref.code, ref.msg)
}

// seeOther sends a browser back to next, a path on this server ("/" when
// next is empty or anything else), with key=value added to its query.
func seeOther(w http.ResponseWriter, next, key, value string) {
	target := localPath(next)
	if key != "" {
		u, _ := url.Parse(target) // localPath returns only what parses
		q := u.Query()
		q.Del("done")
		q.Del("error")
		if len(value) > 500 {
			value = value[:500] + "..."
		}
		q.Set(key, value)
		u.RawQuery = q.Encode()
		target = u.String()
	}
	w.Header().Set("Location", target)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusSeeOther)
}

// localPath returns next if it is a path on this server, else "/": never
// another host ("//host", "/\host", "https:..."), so a crafted form cannot
// send the browser elsewhere.
func localPath(next string) string {
	if next == "" || next[0] != '/' || len(next) > maxNextLen || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\x00\r\n\t") {
		return "/"
	}
	for _, c := range next {
		if c < 0x20 || c == 0x7f {
			return "/"
		}
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || !strings.HasPrefix(u.Path, "/") {
		return "/"
	}
	return next
}
