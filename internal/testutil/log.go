package testutil

import (
	"log/slog"
	"os"
	"testing"
)

// Logger returns the logger servers under test use: silent (the tests
// provoke errors on purpose), or every level to stderr with
// MYXI_TEST_LOG=debug (a test's t.Log cannot be used from goroutines that
// may outlive it).
func Logger(tb testing.TB) *slog.Logger {
	level := slog.LevelError + 4
	if os.Getenv("MYXI_TEST_LOG") == "debug" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("test", tb.Name())
}
