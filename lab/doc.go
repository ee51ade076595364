// Package lab builds a pair of units in network namespaces, drives RTP
// through them, injects faults (power loss, hangs, heat, battery, links,
// crash loops, planned handovers, CPU starvation) and measures what a
// decoder downstream would see, one row per scenario.
package lab
