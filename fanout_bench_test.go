package myxi

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/myxi/myxi/broker"
	"github.com/myxi/myxi/internal/history"
	"github.com/myxi/myxi/internal/protocol"
)

// BenchmarkFanout measures the push path inside the node: one broker
// message decoded, encoded once and queued to N local sessions (the
// writers' socket writes are not included; see the load tool for those).
// ns/delivery and allocs/op must not grow with N.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			srv, err := New(Config{Exchanges: map[string]AuthorizeFunc{"bench": AllowAll}, ReauthorizeInterval: -1})
			if err != nil {
				b.Fatal(err)
			}
			if err := srv.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			defer srv.Shutdown(context.Background())
			conns := benchSessions(b, srv, n, func(ctx context.Context, c *conn) error {
				return srv.hub.Subscribe(ctx, "bench", "k", c)
			})
			body := []byte(`{"event":"Bench","payload":{"t":1732550000000000000,"seq":1,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}`)
			msg := broker.Message{Exchange: "bench", RoutingKey: "k", Body: body}
			spare := make([]*frame, 0, 4)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				srv.deliver(msg)
				for _, c := range conns { // what each writer does when it wakes
					spare = c.queue.takeAll(spare)
					clear(spare)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
		})
	}
}

// benchSessions makes n sessions without sockets, each subscribed by
// subscribe; the benchmark drains their queues itself.
func benchSessions(b *testing.B, srv *Server, n int, subscribe func(context.Context, *conn) error) []*conn {
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	conns := make([]*conn, n)
	for i := range conns {
		c := &conn{srv: srv, ctx: ctx, cancel: cancel}
		c.queue = sendQueue{maxItems: 1024, maxBytes: 1 << 20}
		c.logBase, c.m = srv.log, srv.metrics
		c.writing.Store(true) // no writer goroutine: the benchmark drains the queues
		conns[i] = c
		if err := subscribe(ctx, c); err != nil {
			b.Fatal(err)
		}
	}
	return conns
}

// BenchmarkDecodeAction measures decoding a typical Subscribe frame.
func BenchmarkDecodeAction(b *testing.B) {
	frame := []byte(`{"action":"Subscribe","tag":"t1","payload":{"exchange":"widgets","routing_key":"42"}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := protocol.DecodeAction(frame); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBrokerEvent measures turning one broker body into the frame
// every subscriber gets (done once per event per node).
func BenchmarkBrokerEvent(b *testing.B) {
	body := []byte(`{"event":"WidgetQtyChanged","payload":{"quantity":5,"name":"Widget 42"}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := protocol.BrokerEvent("widgets", "42", body, protocol.DefaultMaxEventBytes); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFanoutHistory is BenchmarkFanout on a history exchange: each
// record is appended to the node's index (and the oldest evicted past the
// bound) before it is queued to the same N sessions. Compare its
// ns/delivery with BenchmarkFanout's: the bound is +20%.
func BenchmarkFanoutHistory(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			srv, err := New(Config{
				Exchanges:           map[string]AuthorizeFunc{"bench": AllowAll},
				History:             map[string]History{"bench": {MaxAge: time.Hour, MaxBytes: 1 << 20}},
				ReauthorizeInterval: -1,
			})
			if err != nil {
				b.Fatal(err)
			}
			if err := srv.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			defer srv.Shutdown(context.Background())
			idx := srv.histories["bench"]
			conns := benchSessions(b, srv, n, func(ctx context.Context, c *conn) error {
				_, err := idx.Subscribe(ctx, "k", c, nil, func(history.Decision[*frame]) {})
				return err
			})
			body := []byte(`{"event":"Bench","payload":{"t":1732550000000000000,"seq":1,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}`)
			spare := make([]*frame, 0, 4)
			offset := uint64(1)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				idx.Record(broker.Record{RoutingKey: "k", Offset: offset, Body: body})
				offset++
				for _, c := range conns {
					spare = c.queue.takeAll(spare)
					clear(spare)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
		})
	}
}
