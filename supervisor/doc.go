// Package supervisor runs services and OS processes under Erlang/OTP
// supervision rules: restart strategies, restart types, restart intensity with
// escalation to the parent, per-child backoff, ordered start and reverse-order
// stop, and liveness heartbeats for processes.
//
// The rules, as implemented:
//
//   - Children start in the order given and stop in the reverse order.
//   - When a child exits, its restart type decides: Permanent always restarts,
//     Transient restarts only after an abnormal exit (a non-nil error),
//     Temporary never does.
//   - The strategy decides what restarts with it: OneForOne the child alone,
//     OneForAll every child (the others are stopped in reverse order first),
//     RestForOne the child and those started after it.
//   - Restart intensity: more than Intensity restarts within Period and the
//     supervisor gives up: it stops all children in reverse order and its
//     Serve returns an error wrapping ErrGaveUp, so its own parent sees a
//     crashed child (escalation).
//   - Backoff, on top of the intensity rule (OTP has none): a child's first
//     restart is immediate; each further restart without a healthy run in
//     between waits twice as long as the one before, from Backoff up to
//     BackoffMax. A run of at least Period counts as healthy.
//   - Stopping a child cancels its context and waits up to its Shutdown time;
//     then a child that can be killed (a Process) is killed, and one that
//     cannot (a goroutine) is abandoned, with a stop_timeout event either way.
//
// Every decision is an Event. Time comes from an injected clock, so the rules
// are tested deterministically with a fake one. Every duration (restart
// window, backoff, heartbeat silence, progress) is measured on the clock's
// monotonic reading, so a step of the wall clock changes no decision; wall
// time only stamps events and states for people to read.
package supervisor
