package lab

import (
	"encoding/json"
	"testing"
)

// TestUnitStatus reads the parts of the status API the lab relies on: a
// stream's role, worker and state today, and its epoch wherever the pair
// shows it.
func TestUnitStatus(t *testing.T) {
	t.Parallel()
	doc := `{"unit": {"name": "unit-a", "state": "running", "version": "x"},
	  "streams": [
	    {"name": "s000", "state": "running", "role": "forward", "worker_pid": 41, "epoch": 3, "outputs": []},
	    {"name": "s001", "state": "running", "role": "standby", "worker_pid": 42},
	    {"name": "s002", "state": "failed", "role": "forward", "worker_pid": 0},
	    {"name": "s003", "state": "restarting", "role": "forward", "worker_pid": 43}
	  ],
	  "pair": {"Self": "unit-a", "Streams": [{"Name": "s001", "Owner": "unit-b", "Role": "standby", "Epoch": 4, "Phase": 1}]},
	  "health": []}`
	var st unitStatus
	if err := json.Unmarshal([]byte(doc), &st); err != nil {
		t.Fatal(err)
	}
	if st.Unit.Name != "unit-a" || st.Unit.State != "running" || len(st.Streams) != 4 {
		t.Fatalf("%+v", st)
	}
	for name, want := range map[string]bool{"s000": true, "s001": false, "s002": false, "s003": true} {
		if s, _ := st.stream(name); s.forwarding() != want {
			t.Errorf("%s forwarding: %v, want %v", name, s.forwarding(), want)
		}
	}
	if e, ok := st.epoch("s000"); !ok || e != 3 {
		t.Errorf("s000's epoch from the stream: %d %v", e, ok)
	}
	if e, ok := st.epoch("s001"); !ok || e != 4 {
		t.Errorf("s001's epoch from the pair section: %d %v", e, ok)
	}
	if _, ok := st.epoch("s002"); ok {
		t.Error("s002 has no epoch")
	}
}

func TestSettled(t *testing.T) {
	t.Parallel()
	r := &rig{opts: Options{Streams: 2}, mode: Dual, a: &unit{}, b: &unit{}}
	one := ownership{owner: map[string][]*unit{"s000": {r.a}, "s001": {r.b}}, seen: map[*unit]bool{r.a: true, r.b: true}}
	if !r.settled(one) {
		t.Error("one owner each, both answering: settled")
	}
	two := ownership{owner: map[string][]*unit{"s000": {r.a, r.b}, "s001": {r.b}}, seen: one.seen}
	none := ownership{owner: map[string][]*unit{"s000": {r.a}}, seen: one.seen}
	silent := ownership{owner: one.owner, seen: map[*unit]bool{r.a: true}}
	r.a.spec.Name, r.b.spec.Name = "a", "b"
	silent.silence = map[*unit]string{r.b: "timeout"}
	for name, tc := range map[string]struct {
		o   ownership
		why string
	}{
		"two owners":    {two, "s000 has 2 forwarding units"},
		"no owner":      {none, "s001 has 0 forwarding units"},
		"a unit silent": {silent, "b did not answer (timeout)"},
	} {
		if r.settled(tc.o) {
			t.Errorf("%s: settled", name)
		}
		if got := r.unsettled(tc.o); got != tc.why {
			t.Errorf("%s: unsettled says %q, want %q", name, got, tc.why)
		}
	}
	r.mode = Lone
	if !r.settled(ownership{owner: map[string][]*unit{"s000": {r.a}, "s001": {r.a}}, seen: map[*unit]bool{r.a: true}}) {
		t.Error("a lone unit owning both: settled")
	}
}
