package rabbitmq_test

import (
	"context"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/myxi/myxi/broker"
	"github.com/myxi/myxi/broker/rabbitmq"
	"github.com/myxi/myxi/internal/testutil"
)

// stallingProxy forwards TCP to RabbitMQ and can stop reading from its
// clients, as RabbitMQ does to a connection under flow control: the
// client's writes then block once the socket buffers are full.
type stallingProxy struct {
	ln      net.Listener
	target  string
	mu      sync.Mutex
	stalled bool
	resume  chan struct{}
	conns   []net.Conn
	wg      sync.WaitGroup
}

func newStallingProxy(t *testing.T, target string) *stallingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallingProxy{ln: ln, target: target, resume: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *stallingProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); p.pump(server, client, true) }()
		go func() { defer p.wg.Done(); _, _ = io.Copy(client, server); client.Close() }()
	}
}

// pump copies from src to dst, pausing while stalled when gated.
func (p *stallingProxy) pump(dst, src net.Conn, gated bool) {
	defer dst.Close()
	buf := make([]byte, 4096)
	for {
		if gated {
			p.mu.Lock()
			stalled, resume := p.stalled, p.resume
			p.mu.Unlock()
			if stalled {
				<-resume
			}
		}
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *stallingProxy) stall() {
	p.mu.Lock()
	p.stalled = true
	p.mu.Unlock()
}

func (p *stallingProxy) unstall() {
	p.mu.Lock()
	if p.stalled {
		p.stalled = false
		close(p.resume)
		p.resume = make(chan struct{})
	}
	p.mu.Unlock()
}

func (p *stallingProxy) close() {
	p.unstall()
	_ = p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestPublishHonoursContextWhenWritesBlock: while RabbitMQ does not read
// the connection, a publish whose frames cannot be written returns when
// its context ends, instead of blocking until the connection moves again.
func TestPublishHonoursContextWhenWritesBlock(t *testing.T) {
	target := testutil.RabbitMQURL(t)
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newStallingProxy(t, u.Host)
	u.Host = proxy.ln.Addr().String()
	ex := testutil.UniqueName("myxi-test-stuck")
	testutil.DeleteExchangesOnCleanup(t, target, ex)
	b, err := rabbitmq.New(rabbitmq.Config{URLs: []string{u.String()}, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background(), []string{ex}, func(broker.Message) {}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		proxy.unstall()
		_ = b.Close()
	}()
	testutil.Eventually(t, 10*time.Second, "the broker to connect", b.Ready)

	proxy.stall()
	body := make([]byte, 32<<20) // far more than the socket buffers hold
	for i := range body {
		body[i] = 'x'
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- b.Publish(ctx, ex, "k", body) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a publish that could not be written succeeded")
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Fatalf("Publish returned after %v, its context ended after 500ms", took)
		}
	case <-time.After(10 * time.Second):
		proxy.unstall() // let the stuck publish and the test end
		<-done
		t.Fatal("Publish ignored its context while its write was blocked")
	}
}
