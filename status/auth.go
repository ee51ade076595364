package status

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Who may act. Reading is open on the listen address; every action needs
// either a bearer token whose SHA-256 is one of the configured tokens, or a
// browser session opened with such a token at POST /login. A session's
// requests must also carry its CSRF token: the cookie alone proves nothing
// about which page sent the request.

// Token is one client that may act: the SHA-256 of its bearer token, and
// the name the log gives it.
type Token struct {
	Name   string
	SHA256 [32]byte
}

// Session is a browser's login, as the page needs it: who logged in, and
// the CSRF token every form it posts must carry (field csrf, or the
// X-CSRF-Token header).
type Session struct {
	Name string
	CSRF string
}

const (
	sessionCookie = "appliance_session"
	// sessionTTL is how long a login lasts: an operator's shift.
	sessionTTL = 12 * time.Hour
	// maxSessions bounds the sessions kept; the oldest goes first.
	maxSessions = 256
	csrfHeader  = "X-CSRF-Token"
	// tokenValueMax bounds a token, session id or CSRF token taken from a
	// request: longer is none of them.
	tokenValueMax = 1024
)

// Messages that say what to do. None of them ever quotes a token.
const (
	noTokensMsg  = "no API tokens are configured, so no action is allowed: make one with `appliance token hash --generate`, add the line it prints under status.tokens in the config, and restart the unit"
	noAuthMsg    = "this action needs a token: send the header \"Authorization: Bearer TOKEN\", or log in on the status page"
	badTokenMsg  = "the token is not one of status.tokens; check it, or make a new one with `appliance token hash --generate`"
	badSchemeMsg = "the Authorization header must be \"Bearer TOKEN\""
	expiredMsg   = "the session has expired or the unit has restarted; log in again"
	csrfMsg      = "the CSRF token is missing or wrong: reload the status page and try again (scripts: use a bearer token instead of the session cookie)"
)

// authority checks tokens and keeps the sessions they open.
type authority struct {
	tokens []Token
	now    func() time.Duration // monotonic

	mu       sync.Mutex
	sessions map[[32]byte]*session // by the SHA-256 of the cookie's value
}

type session struct {
	Session
	expires time.Duration // monotonic
}

// match returns the name of the token whose hash is sha256(token). Every
// configured token is compared, in constant time, so the answer's timing
// says nothing about how close a guess came.
func (a *authority) match(token string) (string, bool) {
	if token == "" || len(token) > tokenValueMax {
		return "", false
	}
	sum := sha256.Sum256([]byte(token))
	name, found := "", false
	for _, t := range a.tokens {
		if subtle.ConstantTimeCompare(sum[:], t.SHA256[:]) == 1 {
			name, found = t.Name, true
		}
	}
	return name, found
}

// open starts a session for the token named name and returns the cookie's
// value.
func (a *authority) open(name string) (string, Session) {
	id, csrf := randomText(), randomText()
	s := &session{Session: Session{Name: name, CSRF: csrf}, expires: a.now() + sessionTTL}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sessions == nil {
		a.sessions = map[[32]byte]*session{}
	}
	if len(a.sessions) >= maxSessions {
		a.pruneLocked()
	}
	a.sessions[sha256.Sum256([]byte(id))] = s
	return id, s.Session
}

// pruneLocked drops expired sessions, and the one closest to expiry if
// that leaves no room.
func (a *authority) pruneLocked() {
	now := a.now()
	var oldest [32]byte
	var oldestAt time.Duration
	for k, s := range a.sessions {
		if s.expires <= now {
			delete(a.sessions, k)
			continue
		}
		if oldestAt == 0 || s.expires < oldestAt {
			oldest, oldestAt = k, s.expires
		}
	}
	if len(a.sessions) >= maxSessions {
		delete(a.sessions, oldest)
	}
}

// lookup returns the live session whose cookie value is id.
func (a *authority) lookup(id string) (Session, bool) {
	if id == "" || len(id) > tokenValueMax {
		return Session{}, false
	}
	k := sha256.Sum256([]byte(id))
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.sessions[k]
	if !ok {
		return Session{}, false
	}
	if s.expires <= a.now() {
		delete(a.sessions, k)
		return Session{}, false
	}
	return s.Session, true
}

func (a *authority) close(id string) {
	a.mu.Lock()
	delete(a.sessions, sha256.Sum256([]byte(id)))
	a.mu.Unlock()
}

// randomText is 32 random bytes, base64url-encoded.
func randomText() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand panics rather)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// session reports the browser session a request carries, if it carries a
// live one. The page uses it to show who is logged in and to put the CSRF
// token in its forms.
func (s *Server) session(r *http.Request) (Session, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return Session{}, false
	}
	return s.auth.lookup(c.Value)
}

// actor is who asked for an action and how they proved it.
type actor struct {
	name string
	via  string // "token" or "session"
	csrf string // the session's CSRF token
}

// refusal is an answer that is not the action's: a status code and what to do.
type refusal struct {
	code       int
	msg        string
	retryAfter string // seconds, with 429
}

// authenticate finds who sends r. A request with an Authorization header
// is judged by it alone; one without, by its session cookie, whose CSRF
// token the caller checks once it has read the body.
func (s *Server) authenticate(r *http.Request) (actor, *refusal) {
	if len(s.auth.tokens) == 0 {
		return actor{}, &refusal{http.StatusUnauthorized, noTokensMsg, ""}
	}
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, token, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return actor{}, &refusal{http.StatusUnauthorized, badSchemeMsg, ""}
		}
		name, ok := s.auth.match(strings.TrimSpace(token))
		if !ok {
			return actor{}, &refusal{http.StatusUnauthorized, badTokenMsg, ""}
		}
		return actor{name: name, via: "token"}, nil
	}
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return actor{}, &refusal{http.StatusUnauthorized, noAuthMsg, ""}
	}
	sess, ok := s.auth.lookup(c.Value)
	if !ok {
		return actor{}, &refusal{http.StatusUnauthorized, expiredMsg, ""}
	}
	return actor{name: sess.Name, via: "session", csrf: sess.CSRF}, nil
}

// csrfOK checks the CSRF token a session's request carries, from its form
// or its header.
func csrfOK(a actor, r *http.Request, fromForm string) bool {
	if a.via != "session" {
		return true
	}
	got := fromForm
	if got == "" {
		got = r.Header.Get(csrfHeader)
	}
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(a.csrf)) == 1
}

// login answers POST /login: a form post with the field token (and next,
// where to go back to). It opens a session and sends the browser back with
// its cookie, or answers 401.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if !postOnly(w, r) {
		return
	}
	client := clientOf(r)
	if ref := s.limits.client(client); ref != nil {
		s.refuse(w, r, ref)
		return
	}
	if mediaType(r) != formType {
		s.refuse(w, r, &refusal{http.StatusUnsupportedMediaType, "log in with a form post (application/x-www-form-urlencoded) with the field token; scripts need no login: they send \"Authorization: Bearer TOKEN\"", ""})
		return
	}
	body, ref := readBody(w, r)
	if ref != nil {
		s.refuse(w, r, ref)
		return
	}
	form, err := parseBody(formType, body)
	if err != nil {
		s.refuse(w, r, bodyRefusal(err))
		return
	}
	if len(s.auth.tokens) == 0 {
		s.refuse(w, r, &refusal{http.StatusUnauthorized, noTokensMsg, ""})
		return
	}
	name, ok := s.auth.match(strings.TrimSpace(form.Token))
	if !ok {
		s.log.Warn("api: login refused", "client", client)
		s.refuse(w, r, &refusal{http.StatusUnauthorized, "that token is not one of status.tokens; check it and log in again", ""})
		return
	}
	id, _ := s.auth.open(name)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: id, Path: "/", MaxAge: int(sessionTTL.Seconds()),
		HttpOnly: true, Secure: s.tls, SameSite: http.SameSiteStrictMode})
	s.log.Info("api: login", "by", name, "client", client)
	seeOther(w, form.Next, "", "")
}

// logout answers POST /logout: it ends the session the request carries
// (which must send its CSRF token) and clears the cookie.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if !postOnly(w, r) {
		return
	}
	body, ref := readBody(w, r)
	if ref != nil {
		s.refuse(w, r, ref)
		return
	}
	form, err := parseBody(r.Header.Get("Content-Type"), body)
	if err != nil {
		s.refuse(w, r, bodyRefusal(err))
		return
	}
	if c, err := r.Cookie(sessionCookie); err == nil {
		if sess, ok := s.auth.lookup(c.Value); ok {
			if !csrfOK(actor{via: "session", csrf: sess.CSRF}, r, form.CSRF) {
				s.refuse(w, r, &refusal{http.StatusForbidden, csrfMsg, ""})
				return
			}
			s.auth.close(c.Value)
			s.log.Info("api: logout", "by", sess.Name, "client", clientOf(r))
		}
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: s.tls, SameSite: http.SameSiteStrictMode})
	if form.form {
		seeOther(w, form.Next, "", "")
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}
