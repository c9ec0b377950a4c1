package myxi_test

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/myxi/myxi/internal/testutil"
)

// TestSIGTERMDrains runs the real server binary, attaches clients, sends
// SIGTERM, and checks that every client gets close code 1001 spread over
// the drain period and that the process exits 0 within it.
func TestSIGTERMDrains(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server binary")
	}
	bin := filepath.Join(t.TempDir(), "myxi-server")
	build := exec.Command("go", "build", "-o", bin, "./server")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./server: %v\n%s", err, out)
	}
	const drain = 1500 * time.Millisecond
	cmd := exec.Command(bin, "-port", "0", "-bind", "127.0.0.1", "-exchanges", "sigterm", "-drain", drain.String())
	cmd.Env = append(os.Environ(), "RABBITMQ_URL=", "MYXI_PORT=", "MIXI_PORT=", "PORT=")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			if _, rest, ok := strings.Cut(line, "myxi listening"); ok {
				if _, a, ok := strings.Cut(rest, "addr="); ok {
					addr <- strings.Fields(a)[0]
				}
			}
		}
	}()
	var base string
	select {
	case a := <-addr:
		base = "ws://" + a + "/"
	case <-time.After(30 * time.Second):
		t.Fatal("server did not log its address")
	}

	const n = 10
	clients := make([]*testutil.Client, n)
	for i := range clients {
		clients[i] = testutil.Dial(t, base)
		clients[i].Subscribe("sigterm", "k")
	}
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	type closed struct {
		after time.Duration
		err   error
	}
	results := make(chan closed, n)
	for _, c := range clients {
		go func() {
			_, err := c.NextWithin(10 * time.Second)
			results <- closed{time.Since(start), err}
		}()
	}
	var closedAt []time.Duration
	for range n {
		r := <-results
		var ce *websocket.CloseError
		if !errors.As(r.err, &ce) || ce.Code != websocket.CloseGoingAway {
			t.Fatalf("want close 1001, got %v", r.err)
		}
		closedAt = append(closedAt, r.after)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	select {
	case err := <-waitErr:
		if err != nil {
			t.Fatalf("server exited with %v, want 0", err)
		}
	case <-time.After(drain + 10*time.Second):
		t.Fatal("server did not exit after the drain period")
	}
	exited := time.Since(start)
	first, last := closedAt[0], closedAt[0]
	for _, d := range closedAt {
		first, last = min(first, d), max(last, d)
	}
	t.Logf("closes spread from %v to %v; exit after %v (drain period %v)", first.Round(time.Millisecond), last.Round(time.Millisecond), exited.Round(time.Millisecond), drain)
	if spread := last - first; spread < drain/3 {
		t.Fatalf("closes spread over %v only; want them spread over the %v drain period", spread, drain)
	}
	if exited > drain+5*time.Second {
		t.Fatalf("exit took %v", exited)
	}
}
