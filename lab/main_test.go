package lab

import (
	"os"
	"testing"

	"appliance/internal/testutil"
)

// TestMain ends the run with one line naming what the skipped rig tests need.
func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }
