// Package clustertest drives the throwaway three-node RabbitMQ cluster of
// scripts/rabbitmq-cluster from Go tests. `make test-cluster` brings the
// cluster up, runs this package's tests with MYXI_CLUSTER_URLS (the AMQP
// URLs of nodes 1-3, comma-separated) and MYXI_CLUSTER_CTL (the script,
// whose ctl, stop-node and start-node commands act on one node) set, and
// tears it down. Without MYXI_CLUSTER_URLS the tests skip: they never
// touch the machine's shared RabbitMQ node.
package clustertest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// Cluster is the running test cluster.
type Cluster struct {
	urls []string
	ctl  string
}

// FromEnv returns the cluster that `make test-cluster` started, or skips
// the test when there is none.
func FromEnv(tb testing.TB) *Cluster {
	tb.Helper()
	list, ctl := os.Getenv("MYXI_CLUSTER_URLS"), os.Getenv("MYXI_CLUSTER_CTL")
	if list == "" || ctl == "" {
		tb.Skip("SKIPPING: no test cluster (MYXI_CLUSTER_URLS, MYXI_CLUSTER_CTL); run `make test-cluster`")
	}
	var urls []string
	for _, u := range strings.Split(list, ",") {
		if u = strings.TrimSpace(u); u != "" {
			urls = append(urls, u)
		}
	}
	if len(urls) != 3 {
		tb.Fatalf("MYXI_CLUSTER_URLS has %d URLs, want 3", len(urls))
	}
	return &Cluster{urls: urls, ctl: ctl}
}

// URL is the AMQP URL of node n (1-3).
func (c *Cluster) URL(n int) string { return c.urls[n-1] }

// NodeName is the Erlang node name of node n, as RabbitMQ reports it.
func (c *Cluster) NodeName(n int) string { return fmt.Sprintf("myxi-c%d@localhost", n) }

// Ctl runs rabbitmqctl on node n with args and returns its output.
func (c *Cluster) Ctl(ctx context.Context, n int, args ...string) (string, error) {
	return c.script(ctx, append([]string{"ctl", fmt.Sprint(n)}, args...)...)
}

// StopNode stops node n (gracefully; its data stays) and returns once its
// processes have exited.
func (c *Cluster) StopNode(ctx context.Context, n int) error {
	_, err := c.script(ctx, "stop-node", fmt.Sprint(n))
	return err
}

// StartNode starts node n again and returns once RabbitMQ runs on it.
func (c *Cluster) StartNode(ctx context.Context, n int) error {
	_, err := c.script(ctx, "start-node", fmt.Sprint(n))
	return err
}

func (c *Cluster) script(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, c.ctl, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", c.ctl, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// QueueReplicas is where a stream's replicas are, as node 1 sees them.
type QueueReplicas struct {
	Leader  string
	Members []string // nodes that hold a replica
	Online  []string // members whose replica is running
}

// Replicas asks node 1 (rabbitmqctl list_queues) where queue's replicas are.
func (c *Cluster) Replicas(ctx context.Context, queue string) (QueueReplicas, error) {
	out, err := c.Ctl(ctx, 1, "-q", "list_queues", "name", "leader", "members", "online", "--formatter", "json")
	if err != nil {
		return QueueReplicas{}, err
	}
	// Members and online are lists for replicated queues only: a classic
	// queue (a Myxi node's own) reports "" for both, so they are decoded
	// for the queue asked about alone.
	var rows []struct {
		Name    string          `json:"name"`
		Leader  string          `json:"leader"`
		Members json.RawMessage `json:"members"`
		Online  json.RawMessage `json:"online"`
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		return QueueReplicas{}, fmt.Errorf("list_queues output %q: %w", out, err)
	}
	for _, r := range rows {
		if r.Name != queue {
			continue
		}
		reps := QueueReplicas{Leader: r.Leader}
		if err := json.Unmarshal(r.Members, &reps.Members); err != nil {
			return QueueReplicas{}, fmt.Errorf("members of %s: %s: %w", queue, r.Members, err)
		}
		if err := json.Unmarshal(r.Online, &reps.Online); err != nil {
			return QueueReplicas{}, fmt.Errorf("online replicas of %s: %s: %w", queue, r.Online, err)
		}
		slices.Sort(reps.Members)
		slices.Sort(reps.Online)
		return reps, nil
	}
	return QueueReplicas{}, fmt.Errorf("no queue %q on the cluster", queue)
}

// AwaitReplicas polls Replicas until every node of the cluster holds a
// running replica of queue, or timeout passes.
func (c *Cluster) AwaitReplicas(ctx context.Context, queue string, timeout time.Duration) (QueueReplicas, error) {
	want := []string{c.NodeName(1), c.NodeName(2), c.NodeName(3)}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last QueueReplicas
	var lastErr error
	for {
		last, lastErr = c.Replicas(ctx, queue)
		if lastErr == nil && slices.Equal(last.Members, want) && slices.Equal(last.Online, want) {
			return last, nil
		}
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("replicas of %s after %v: %+v (last error: %v)", queue, timeout, last, lastErr)
		case <-time.After(500 * time.Millisecond):
		}
	}
}
