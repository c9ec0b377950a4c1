package testutil

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// CloseConnection closes, from the broker's side, the AMQP connection
// whose client named itself name (as a Myxi node does), with
// `rabbitmqctl close_connection`. Only that connection is touched, so
// other tests sharing the broker carry on.
func CloseConnection(tb testing.TB, name string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", "-q", "list_connections", "pid", "client_properties").Output()
	if err != nil {
		tb.Fatalf("rabbitmqctl list_connections: %v", err)
	}
	// Lines are "<pid>\t[{...},{"connection_name","<name>"},...]".
	needle := `{"connection_name","` + name + `"}`
	for _, line := range strings.Split(string(out), "\n") {
		pid, props, ok := strings.Cut(line, "\t")
		if !ok || !strings.Contains(props, needle) {
			continue
		}
		cmd := exec.CommandContext(ctx, "rabbitmqctl", "-q", "close_connection", pid, "closed by a myxi test")
		if out, err := cmd.CombinedOutput(); err != nil {
			tb.Fatalf("rabbitmqctl close_connection %s: %v: %s", pid, err, out)
		}
		return
	}
	tb.Fatalf("no RabbitMQ connection named %q", name)
}

// Eventually polls cond every 10ms until it holds or timeout passes.
func Eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// DeadURL is an AMQP URL where nothing listens (port 1).
const DeadURL = "amqp://guest:guest@127.0.0.1:1/"
