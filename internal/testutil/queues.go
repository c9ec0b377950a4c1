package testutil

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// rabbitmqctl runs `rabbitmqctl -q args...` and returns its output lines,
// the header line dropped.
func rabbitmqctl(tb testing.TB, args ...string) []string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", append([]string{"-q"}, args...)...).Output()
	if err != nil {
		tb.Fatalf("rabbitmqctl %s: %v", strings.Join(args, " "), err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) > 0 {
		lines = lines[1:] // the column names
	}
	return lines
}

// Bindings lists the routing keys bound from exchange (to any queue), as
// `rabbitmqctl list_bindings` shows them, sorted; a key bound to two
// queues appears twice.
func Bindings(tb testing.TB, exchange string) []string {
	tb.Helper()
	var keys []string
	for _, line := range rabbitmqctl(tb, "list_bindings", "source_name", "routing_key") {
		source, key, ok := strings.Cut(line, "\t")
		if ok && source == exchange {
			keys = append(keys, key)
		}
	}
	slices.Sort(keys)
	return keys
}

// QueueArguments returns the arguments of queue as `rabbitmqctl
// list_queues name arguments` prints them (such as
// `[{"x-max-length",100},{"x-overflow","drop-head"}]`), and whether the
// queue exists.
func QueueArguments(tb testing.TB, queue string) (string, bool) {
	tb.Helper()
	for _, line := range rabbitmqctl(tb, "list_queues", "name", "arguments") {
		if name, args, ok := strings.Cut(line, "\t"); ok && name == queue {
			return args, true
		}
	}
	return "", false
}

// QueueCounts returns the ready and unacknowledged messages of queue, as
// `rabbitmqctl list_queues` shows them.
func QueueCounts(tb testing.TB, queue string) (ready, unacked string) {
	tb.Helper()
	for _, line := range rabbitmqctl(tb, "list_queues", "name", "messages_ready", "messages_unacknowledged") {
		if f := strings.Split(line, "\t"); len(f) == 3 && f[0] == queue {
			return f[1], f[2]
		}
	}
	tb.Fatalf("no queue %q", queue)
	return "", ""
}
