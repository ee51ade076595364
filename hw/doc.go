// Package hw watches the unit's hardware (temperatures, power supplies, NIC links) and raises and clears named health conditions.
//
// Each source is a small interface or function with its root (a sysfs
// directory, a network namespace) passed in, so tests run against fake trees
// in a temporary directory and links in a namespace of their own. The
// [Monitor] polls the sources on its clock, follows link updates as they
// come, and turns readings into conditions with hysteresis (temperatures)
// and debounce (links) from package health, so a value hovering at a
// threshold or a link that flaps for a moment does not page anyone.
package hw
