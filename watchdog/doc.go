// Package watchdog feeds the hardware watchdog and systemd's watchdog only
// while the supervision root is healthy, and remembers why the box last booted.
//
// The rule is deliberately one-sided: the keeper never decides that the unit
// is healthy on its own. It feeds only while the root reports progress that is
// fresh and has not given up, so a hung or crash-looping unit is restarted by
// systemd and, if that does not help, reset by the hardware.
//
// Only Keeper.Stop disarms the hardware watchdog (the "magic close"). Any
// other way out, including the end of Serve's context, leaves it armed: a stop
// the keeper did not choose must let the watchdog fire.
package watchdog
