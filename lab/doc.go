// Package lab builds a pair of units in network namespaces, drives RTP
// through them, injects faults (power loss, hangs, heat, battery, links,
// crash loops, planned handovers, CPU starvation) and measures what a
// decoder downstream would see, one row per scenario.
//
// The topology (see Topology) is four namespaces named Prefix+PID+"-a",
// "-b", "-client" and "-lan": the units' eth0 and the client's meet on a
// bridge in lan, and two veth cables, pair0 and pair1, join the units for
// heartbeats. Only 198.18.0.0/15 is used. Each unit is the appliance binary
// (`run --config`) started from a thread inside its namespace, with a
// generated config, a shared pair key and a fake sysfs whose sensors the
// scenarios rewrite. Sources and receivers live in the lab process, their
// sockets made inside the client namespace.
//
// Each source numbers its packets with its own counter and keeps its own
// RTP sequence and timestamp in the payload, so a receiver can tell loss,
// duplicates and a unit's renumbering apart (Analyze). Before each run the
// lab restarts both units with healthy links and sensors and polls their
// status APIs until every stream has exactly one forwarding unit; it never
// sleeps to wait for an event. It removes its namespaces, processes and
// files when it ends or is cancelled, and what a killed run left when it
// starts.
package lab
