package status

import (
	"cmp"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"appliance/health"
	"appliance/media"
)

// The page's levels, worst last. They name CSS classes and are words an
// operator can type into the filter.
const (
	levelOK   = 0
	levelWarn = 1
	levelCrit = 2
)

var levelNames = [...]string{"ok", "warning", "critical"}

// pageSize is how many streams one page of the streams table shows: enough
// to see every troubled stream of a bad day first, few enough that the page
// is built in a millisecond or two at 1,000 streams.
const pageSize = 50

// maxQuery bounds the filter; a longer one is refused, not cut.
const maxQuery = 200

// pageEvents is how many events the main page shows; /api/v1/events has
// them all.
const pageEvents = 50

// pageParams is what the page's query string asks for.
type pageParams struct {
	Q    string // filter: every word must appear in one of a stream's fields
	Page int    // 1-based
}

// parseParams reads the page's query: q (filter) and page. Flash messages
// (done, error) are read apart: they are not part of the view.
func parseParams(v url.Values) (pageParams, error) {
	p := pageParams{Q: strings.TrimSpace(v.Get("q")), Page: 1}
	if len(p.Q) > maxQuery {
		return p, fmt.Errorf("the filter is %d bytes long; use at most %d", len(p.Q), maxQuery)
	}
	if pg := v.Get("page"); pg != "" {
		n, err := strconv.Atoi(pg)
		if err != nil || n < 1 || n > 1_000_000 {
			return p, fmt.Errorf("page must be a whole number from 1, got %q", pg)
		}
		p.Page = n
	}
	return p, nil
}

// query is the part of a URL's query that gives this view, without flash
// messages: for links, the live stream and forms' next.
func (p pageParams) query(page int) string {
	v := url.Values{}
	if p.Q != "" {
		v.Set("q", p.Q)
	}
	if page > 1 {
		v.Set("page", strconv.Itoa(page))
	}
	return v.Encode()
}

// verdict is the page's first line: is the unit healthy and carrying its
// streams, and if not, why.
type verdict struct {
	Level string // green, amber or red
	Text  string
}

// streamRow is one stream as the table shows it.
type streamRow struct {
	S      *media.StreamStatus
	Level  int
	Why    []string // what makes it amber or red, in words
	Here   bool     // forwarded by this unit
	Recent recentCounts
}

func (r streamRow) LevelName() string { return levelNames[r.Level] }

// rowView is a row of the streams table as it is printed: every cell
// formatted here, so that the template reads plain fields. (Templates
// reach fields by reflection, slowly through embedded structs; a page of
// 50 rows built from media.StreamStatus took 7 ms.)
type rowView struct {
	Name, URL, Level, State, Role, Owner string
	Bitrate, PacketsIn, PacketsOut, Lost string
	Jitter, CC, Restarts, Outputs, Why   string
	BadOutputs                           []badOutput
	CanHandOver                          bool // paired, and forwarded here
	HandOverURL, RestartURL              string
}

// badOutput is an output that does not send, and why in a word.
type badOutput struct{ Address, State string }

func (r streamRow) view(paired bool) rowView {
	s := r.S
	v := rowView{
		Name: s.Name, URL: "/streams/" + url.PathEscape(s.Name), Level: levelNames[r.Level],
		State: s.State, Role: s.Role, Owner: cmp.Or(s.Owner, "—"),
		Bitrate: bps(s.BitrateBps), PacketsIn: num(s.PacketsIn), PacketsOut: num(s.PacketsOut), Lost: num(s.Lost),
		Jitter: decimals(2, s.JitterMs) + " ms", CC: num(s.CCErrors), Restarts: strconv.Itoa(s.Restarts),
		Why:         strings.Join(r.Why, "; "),
		CanHandOver: paired && r.Here,
		HandOverURL: "/api/v1/streams/" + url.PathEscape(s.Name) + "/handover",
		RestartURL:  "/api/v1/streams/" + url.PathEscape(s.Name) + "/restart",
	}
	ok := 0
	for _, o := range s.Outputs {
		if o.State == "ok" {
			ok++
		} else {
			v.BadOutputs = append(v.BadOutputs, badOutput{o.Address, o.State})
		}
	}
	v.Outputs = strconv.Itoa(ok) + "/" + strconv.Itoa(len(s.Outputs)) + " ok"
	return v
}

// eventRow is an event as the events tables print it.
type eventRow struct {
	Time, Source, Kind, What, Severity, Detail string
}

func eventRows(evs []Event) []eventRow {
	out := make([]eventRow, len(evs))
	for i, e := range evs {
		r := eventRow{Time: when(e.Time), Source: e.Source, Kind: e.Kind, Severity: e.Severity, Detail: e.Message + e.Reason}
		switch {
		case e.Source == "action":
			r.What = e.Stream
			if e.By != "" {
				r.Detail += " (by " + e.By + ")"
			}
			if e.Failed {
				r.Severity = "warning"
			}
		case e.Condition != "":
			r.What = e.Condition
		case e.Child != "":
			r.What = e.Supervisor + "/" + e.Child
		default:
			r.What = e.Supervisor
		}
		if e.PID != 0 {
			r.Detail += " (pid " + strconv.Itoa(e.PID) + ")"
		}
		out[i] = r
	}
	return out
}

// streamTable is one page of the streams table.
type streamTable struct {
	Rows           []rowView
	Total          int // streams on the unit
	Matched        int // streams the filter matches
	Crit, Warn     int // among all streams
	First, Last    int // 1-based positions of Rows among the matched
	Page, Pages    int
	PrevQ, NextQ   string // queries of the neighbouring pages; empty at the ends
	HasPrev, HasNx bool
}

// owner is how many streams one unit forwards.
type owner struct {
	Name    string
	Streams int
}

// pageView is everything the main page and its live sections show.
type pageView struct {
	Title    string
	Now      time.Time
	Rep      *Report
	Verdict  verdict
	Session  Session
	LoggedIn bool
	Flash    flash
	Params   pageParams
	Self     string // this view's URL: forms' next, the login's next
	Live     string // the live stream of this view
	Streams  streamTable
	Owners   []owner
	Events   []eventRow
	Paired   bool
}

// flash is the outcome of an action, from the query the action answered
// with (?done=... or ?error=...).
type flash struct{ Done, Error string }

func readFlash(v url.Values) flash {
	clip := func(s string) string {
		if len(s) > 300 {
			return s[:300] + "…"
		}
		return s
	}
	return flash{Done: clip(v.Get("done")), Error: clip(v.Get("error"))}
}

// streamConds maps each stream to the active conditions about it.
func streamConds(conds []health.Condition) map[string][]health.Condition {
	var m map[string][]health.Condition
	for _, c := range conds {
		name, ok := conditionStream(c.Name)
		if !ok {
			continue
		}
		if m == nil {
			m = map[string][]health.Condition{}
		}
		m[name] = append(m[name], c)
	}
	return m
}

// conditionStream is the stream a condition is about, if any.
func conditionStream(cond string) (string, bool) {
	if s, ok := health.StreamFailed.SubjectOf(cond); ok {
		return s, true
	}
	if s, ok := health.PairCannotHandOver.SubjectOf(cond); ok {
		return s, true
	}
	if s, ok := health.OutputFailing.SubjectOf(cond); ok {
		stream, _, _ := strings.Cut(s, ":")
		return stream, true
	}
	return "", false
}

// rowOf judges one stream: red when it is not carried or an output has no
// socket or a critical alarm names it; amber when it is not steadily
// running, an output fails, a warning names it, or it lost packets or had
// continuity errors in the last minute. Totals since start do not count:
// a loss an hour ago is history, not trouble.
func rowOf(s *media.StreamStatus, unit string, paired bool, conds []health.Condition, rc recentCounts) streamRow {
	r := streamRow{S: s, Here: isActive(s.Role) && (s.Owner == "" || s.Owner == unit), Recent: rc}
	raise := func(level int, why string) {
		r.Level = max(r.Level, level)
		r.Why = append(r.Why, why)
	}
	switch s.State {
	case "failed", "stopped":
		why := "not carried"
		if s.Error != "" {
			why += ": " + s.Error
		}
		raise(levelCrit, why)
	case "idle":
		raise(levelWarn, "no input for a second or more")
	case "restarting", "starting":
		raise(levelWarn, s.State)
	}
	if paired && s.Owner == "" {
		raise(levelCrit, "no unit owns it")
	}
	for _, o := range s.Outputs {
		switch o.State {
		case "down":
			raise(levelCrit, "output "+o.Address+" down")
		case "failing":
			raise(levelWarn, "output "+o.Address+" failing")
		}
	}
	for _, c := range conds {
		if c.Severity >= health.Critical {
			raise(levelCrit, c.Name)
		} else if c.Severity == health.Warning {
			raise(levelWarn, c.Name)
		}
	}
	if rc.Lost > 0 {
		raise(levelWarn, fmt.Sprintf("lost %d in the last minute", rc.Lost))
	}
	if rc.CC > 0 {
		raise(levelWarn, fmt.Sprintf("%d CC errors in the last minute", rc.CC))
	}
	return r
}

func isActive(role string) bool { return role == "active" || role == media.RoleForward }

// matches reports whether every word of the filter appears in one of the
// row's fields: name, state, role, owner, input, outputs, or its level
// (so "critical" lists the red ones).
func (r streamRow) matches(words []string) bool {
	for _, w := range words {
		s := r.S
		found := strings.Contains(s.Name, w) || strings.Contains(s.State, w) || strings.Contains(s.Role, w) ||
			strings.Contains(s.Owner, w) || strings.Contains(s.Input, w) || strings.Contains(levelNames[r.Level], w)
		for i := 0; !found && i < len(s.Outputs); i++ {
			found = strings.Contains(s.Outputs[i].Address, w)
		}
		if !found {
			return false
		}
	}
	return true
}

// buildTable judges every stream, keeps those the filter matches, sorts
// them trouble first (then by name) and cuts out the asked page; a page
// past the end shows the last one.
func buildTable(rep *Report, p pageParams, recent map[string]recentCounts) streamTable {
	conds := streamConds(rep.Health)
	paired := rep.Pair != nil
	words := strings.Fields(strings.ToLower(p.Q))
	t := streamTable{Total: len(rep.Streams)}
	rows := make([]streamRow, 0, len(rep.Streams))
	for i := range rep.Streams {
		s := &rep.Streams[i]
		r := rowOf(s, rep.Unit.Name, paired, conds[s.Name], recent[s.Name])
		switch r.Level {
		case levelCrit:
			t.Crit++
		case levelWarn:
			t.Warn++
		}
		if r.matches(words) {
			rows = append(rows, r)
		}
	}
	slices.SortFunc(rows, func(a, b streamRow) int {
		if c := cmp.Compare(b.Level, a.Level); c != 0 {
			return c
		}
		return strings.Compare(a.S.Name, b.S.Name)
	})
	t.Matched = len(rows)
	t.Pages = max(1, (len(rows)+pageSize-1)/pageSize)
	t.Page = min(p.Page, t.Pages)
	lo := (t.Page - 1) * pageSize
	hi := min(lo+pageSize, len(rows))
	t.Rows = make([]rowView, 0, hi-lo)
	for _, r := range rows[lo:hi] {
		t.Rows = append(t.Rows, r.view(paired))
	}
	if hi > lo {
		t.First, t.Last = lo+1, hi
	}
	if t.Page > 1 {
		t.HasPrev, t.PrevQ = true, p.query(t.Page-1)
	}
	if t.Page < t.Pages {
		t.HasNx, t.NextQ = true, p.query(t.Page+1)
	}
	return t
}

// judge is the page's first line. Red: the unit has given up, a critical
// alarm is active, or streams are not carried. Amber: a warning, or
// streams that are idle, restarting or failing an output. Green says what
// the unit carries.
func judge(rep *Report, t streamTable) verdict {
	var crit, warn []health.Condition
	for _, c := range rep.Health {
		switch {
		case c.Severity >= health.Critical:
			crit = append(crit, c)
		case c.Severity == health.Warning:
			warn = append(warn, c)
		}
	}
	var reasons []string
	level := "green"
	if rep.Unit.State == "failed" {
		level = "red"
		reasons = append(reasons, "the supervision root gave up: nothing is restarted any more, and the watchdogs are no longer fed")
	}
	if len(crit) > 0 {
		level = "red"
		reasons = append(reasons, alarmsText(crit, "critical"))
	}
	if t.Crit > 0 {
		level = "red"
		reasons = append(reasons, plural(t.Crit, "stream", "streams")+" in critical trouble")
	}
	if level != "red" && (len(warn) > 0 || t.Warn > 0) {
		level = "amber"
	}
	if len(warn) > 0 {
		reasons = append(reasons, alarmsText(warn, "warning"))
	}
	if t.Warn > 0 {
		reasons = append(reasons, plural(t.Warn, "stream", "streams")+" with warnings")
	}
	active, standby := 0, 0
	for i := range rep.Streams {
		s := &rep.Streams[i]
		if s.State == "failed" || s.State == "stopped" {
			continue
		}
		if isActive(s.Role) {
			active++
		} else {
			standby++
		}
	}
	carrying := fmt.Sprintf("carrying %d of %d streams (%d forwarded here, %d on standby)",
		active+standby, len(rep.Streams), active, standby)
	if level == "green" {
		return verdict{Level: level, Text: "Healthy: " + carrying + ", no alarms."}
	}
	word := map[string]string{"red": "Trouble", "amber": "Warning"}[level]
	return verdict{Level: level, Text: word + ": " + strings.Join(reasons, "; ") + ". The unit is " + carrying + "."}
}

// alarmsText names the first alarm with its message and counts the rest.
func alarmsText(conds []health.Condition, sev string) string {
	s := conds[0].Name + " (" + conds[0].Message + ")"
	if len(conds) > 1 {
		s += fmt.Sprintf(" and %d more %s alarms", len(conds)-1, sev)
	}
	return s
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// owners counts the streams each unit forwards, this unit first; streams
// without an owner are counted under "".
func owners(rep *Report) []owner {
	count := map[string]int{}
	for i := range rep.Streams {
		count[rep.Streams[i].Owner]++
	}
	out := make([]owner, 0, len(count))
	for name, n := range count {
		out = append(out, owner{Name: name, Streams: n})
	}
	slices.SortFunc(out, func(a, b owner) int {
		switch {
		case a.Name == rep.Unit.Name:
			return -1
		case b.Name == rep.Unit.Name:
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

// mainView builds the main page's view of rep for params p and the
// operator's session.
func mainView(rep *Report, now time.Time, p pageParams, recent map[string]recentCounts, sess Session, loggedIn bool) *pageView {
	t := buildTable(rep, p, recent)
	q := p.query(t.Page)
	self := "/"
	if q != "" {
		self += "?" + q
	}
	live := "/live"
	if q != "" {
		live += "?" + q
	}
	return &pageView{
		Title: rep.Unit.Name + " · appliance",
		Now:   now, Rep: rep, Verdict: judge(rep, t), Session: sess, LoggedIn: loggedIn,
		Params: p, Self: self, Live: live, Streams: t, Owners: owners(rep),
		Events: eventRows(rep.Events[:min(len(rep.Events), pageEvents)]), Paired: rep.Pair != nil,
	}
}

// streamView is what the page of one stream shows.
type streamView struct {
	Title    string
	Now      time.Time
	Rep      *Report
	Verdict  verdict
	Session  Session
	LoggedIn bool
	Flash    flash
	Row      streamRow
	Alarms   []health.Condition
	Sparks   []spark
	Events   []eventRow
	Self     string
	Live     string
	Paired   bool
}

// streamPageView builds the page of the stream called name, or returns
// false if the unit has no such stream.
func streamPageView(rep *Report, now time.Time, name string, recent map[string]recentCounts, h *history, sess Session, loggedIn bool) (*streamView, bool) {
	var s *media.StreamStatus
	for i := range rep.Streams {
		if rep.Streams[i].Name == name {
			s = &rep.Streams[i]
			break
		}
	}
	if s == nil {
		return nil, false
	}
	conds := streamConds(rep.Health)[name]
	t := buildTable(rep, pageParams{Page: 1}, recent)
	self := "/streams/" + url.PathEscape(name)
	v := &streamView{
		Title: name + " · " + rep.Unit.Name,
		Now:   now, Rep: rep, Verdict: judge(rep, t), Session: sess, LoggedIn: loggedIn,
		Row:    rowOf(s, rep.Unit.Name, rep.Pair != nil, conds, recent[name]),
		Alarms: conds, Self: self, Live: "/live?stream=" + url.QueryEscape(name), Paired: rep.Pair != nil,
		Events: eventRows(streamEvents(rep, s)),
	}
	if h != nil {
		v.Sparks = h.sparks(name)
	}
	return v, true
}

// streamEvents are the events about a stream: health events whose
// condition names it, and supervision events of the worker that carries it.
func streamEvents(rep *Report, s *media.StreamStatus) []Event {
	worker := ""
	if s.Worker >= 0 {
		worker = fmt.Sprintf("worker-%d", s.Worker)
	}
	var out []Event
	for _, e := range rep.Events {
		switch e.Source {
		case "health":
			if n, ok := conditionStream(e.Condition); ok && n == s.Name {
				out = append(out, e)
			}
		case "supervisor":
			if worker != "" && e.Child == worker {
				out = append(out, e)
			}
		case "action":
			if e.Stream == s.Name {
				out = append(out, e)
			}
		}
	}
	return out
}
