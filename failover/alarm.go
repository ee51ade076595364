package failover

import "strconv"

// AlarmKind names a condition the pair raises and clears.
type AlarmKind uint8

// Alarm kinds. Each is raised once when its condition starts and cleared
// once when it ends; a raised alarm whose message changes is raised again
// with the new message.
const (
	PeerLost           AlarmKind = iota + 1 // no live message from the peer on any path for D
	PathDown                                // Subject: the path index in decimal
	Mismatch                                // the peer speaks another version or has another pair config
	CannotHandOver                          // Subject: the stream name
	OverCapacity                            // Msg names the streams left uncarried
	Fenced                                  // a witness is configured and this unit has neither a lease nor a peer that hears it
	WitnessUnreachable                      // no witness answer for D
)

// alarmNames are for logs and test output. The condition each raises is
// named once, in package health; the unit maps one to the other.
var alarmNames = [...]string{
	PeerLost:           "PeerLost",
	PathDown:           "PathDown",
	Mismatch:           "Mismatch",
	CannotHandOver:     "CannotHandOver",
	OverCapacity:       "OverCapacity",
	Fenced:             "Fenced",
	WitnessUnreachable: "WitnessUnreachable",
}

// String is the alarm kind's Go name.
func (k AlarmKind) String() string {
	if int(k) < len(alarmNames) && alarmNames[k] != "" {
		return alarmNames[k]
	}
	return "AlarmKind(" + strconv.Itoa(int(k)) + ")"
}

// Alarm raises (On) or clears a condition. Msg says what happened and what to do.
type Alarm struct {
	Kind    AlarmKind
	Subject string
	On      bool
	Msg     string
}

type alarmKey struct {
	kind    AlarmKind
	subject string
}

// alarms remembers what is raised, so each condition is raised and cleared once.
type alarms struct {
	env Env
	on  map[alarmKey]string
}

func (a *alarms) set(kind AlarmKind, subject string, on bool, msg string) {
	k := alarmKey{kind, subject}
	old, was := a.on[k]
	switch {
	case on && (!was || old != msg):
		a.on[k] = msg
		a.env.Alarm(Alarm{Kind: kind, Subject: subject, On: true, Msg: msg})
	case !on && was:
		delete(a.on, k)
		a.env.Alarm(Alarm{Kind: kind, Subject: subject, Msg: msg})
	}
}

func (a *alarms) raised(kind AlarmKind, subject string) bool {
	_, ok := a.on[alarmKey{kind, subject}]
	return ok
}
