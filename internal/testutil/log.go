package testutil

import (
	"log/slog"
	"os"
	"testing"
)

// Logger returns the logger servers under test use: errors only, to
// stderr (a test's t.Log cannot be used from goroutines that may outlive
// it), or every level with MYXI_TEST_LOG=debug.
func Logger(tb testing.TB) *slog.Logger {
	level := slog.LevelError
	if os.Getenv("MYXI_TEST_LOG") == "debug" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("test", tb.Name())
}
