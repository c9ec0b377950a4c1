package main

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain lets the test binary serve as the floor server: the tool starts
// its own executable with the floor-server subcommand, which in a test is
// this binary.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == floorSubcommand {
		os.Exit(runFloorServer(os.Args[2:], os.Stderr))
	}
	goleak.VerifyTestMain(m)
}
