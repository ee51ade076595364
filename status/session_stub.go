package status

import "net/http"

// Session is an operator logged in through the page: the name of the token
// they logged in with, and the CSRF token every form they post must carry.
type Session struct{ Name, CSRF string }

// session is the login that r carries. Until the API's login lands nobody
// is logged in, so the page shows the login form and no action forms.
func (s *Server) session(r *http.Request) (Session, bool) { return Session{}, false }
