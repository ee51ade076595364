package hw

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Link is the state of one configured network link.
type Link struct {
	Name      string `json:"name"`
	Role      string `json:"role"`
	Present   bool   `json:"present"`
	AdminUp   bool   `json:"admin_up"`
	Carrier   bool   `json:"carrier"`    // IFF_LOWER_UP
	SpeedMbps int    `json:"speed_mbps"` // 0 when unknown (no carrier, virtual link)
	RxErrors  uint64 `json:"rx_errors"`
	TxErrors  uint64 `json:"tx_errors"`
	RxDropped uint64 `json:"rx_dropped"`
	TxDropped uint64 `json:"tx_dropped"`
}

// LinkStats are a link's error and drop counters.
type LinkStats struct {
	RxErrors, TxErrors, RxDropped, TxDropped uint64
}

// LinkUpdate is the state of one link as the kernel reports it.
type LinkUpdate struct {
	Name             string
	AdminUp, Carrier bool
	Present          bool       // false when the link was deleted (or moved away)
	Stats            *LinkStats // nil when the source did not carry counters
}

// LinkWatcher lists links and follows their changes.
type LinkWatcher interface {
	// List returns every link that exists now.
	List() ([]LinkUpdate, error)
	// Subscribe returns once subscribed; updates then flow into ch until ctx ends.
	Subscribe(ctx context.Context, ch chan<- LinkUpdate) error
}

// readSpeed reads sysfs class/net/NAME/speed in Mb/s. The kernel gives -1,
// or refuses the read, when the speed is unknown; both are 0 here.
func readSpeed(sysfs, name string) int {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return 0
	}
	raw, err := os.ReadFile(filepath.Join(sysfs, "class", "net", name, "speed"))
	if err != nil {
		return 0
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || v < 0 {
		return 0
	}
	return v
}
