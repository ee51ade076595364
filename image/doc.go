// Package image holds the appliance disk image, its systemd unit and the boot tests.
package image
