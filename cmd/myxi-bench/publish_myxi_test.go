package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/myxi/myxi/internal/protocol"
)

// The recording publisher takes the payload out of the tool's body and
// Push builds the body again: the clients must get the very bytes the
// AMQP publisher would have sent (they read t and seq from them).
func TestBenchPayloadRebuildsTheSameBody(t *testing.T) {
	for _, tc := range []struct {
		t, seq int64
		pad    int
	}{{1, 0, 0}, {time.Now().UnixNano(), 123456, 0}, {time.Now().UnixNano(), 7, 300}} {
		body := appendBody(nil, tc.t, tc.seq, tc.pad)
		payload, err := benchPayload(body)
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if !json.Valid(payload) || payload[0] != '{' {
			t.Fatalf("payload %s of %s is not an object", payload, body)
		}
		again, err := protocol.PushBody(benchEventName, json.RawMessage(payload))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, body) {
			t.Fatalf("Push would send\n%s\ninstead of\n%s", again, body)
		}
	}
}

func TestBenchPayloadRefusesOtherBodies(t *testing.T) {
	for _, body := range []string{
		``,
		`{}`,
		`{"event":"Other","payload":{"t":1}}`,
		`{"event":"Bench","payload":[1]}`,
		`{"event":"Bench","payload":{"t":1}`,
		`{"event":"Bench","payload":}`,
	} {
		if p, err := benchPayload([]byte(body)); err == nil {
			t.Errorf("%q accepted, payload %q", body, p)
		}
	}
}

func TestRecordingPublisherFlags(t *testing.T) {
	c, err := parseConfig([]string{"-publish", "amqp-myxi"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !c.publishesAMQP() || c.Pushers != 64 || !c.LiveCopy || c.wantsHistory() {
		t.Fatalf("amqp-myxi defaults: %+v", c)
	}
	c, err = parseConfig([]string{"-scenario", "S2", "-publish", "amqp-myxi", "-history-exchange", "-spawn", "x", "-live-copy=false", "-replay-limit", "5"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !c.wantsHistory() || c.LiveCopy || !strings.Contains(c.historyTOML(), `history = "10m0s"`) || !strings.Contains(c.historyTOML(), "history_replay_limit = 5") {
		t.Fatalf("S2 with a history: %+v\n%s", c, c.historyTOML())
	}
	if c, _ := parseConfig([]string{"-publish", "http"}, io.Discard); c == nil || c.publishesAMQP() {
		t.Fatal("-publish http counted as publishing to RabbitMQ")
	}
	bad := map[string][]string{
		"pushers 0":            {"-publish", "amqp-myxi", "-pushers", "0"},
		"pushers too many":     {"-publish", "amqp-myxi", "-pushers", "1001"},
		"history, no spawn":    {"-history-exchange"},
		"history and floor":    {"-history-exchange", "-floor-compare", "-spawn", "x"},
		"history too short":    {"-history-exchange", "-spawn", "x", "-history", "10ms"},
		"floor and amqp-myxi":  {"-floor", "-publish", "amqp-myxi"},
		"amqp-myxi not local":  {"-publish", "amqp-myxi", "-amqp", "amqp://guest:guest@192.168.1.2:5672/"},
		"negative replay lim.": {"-history-exchange", "-spawn", "x", "-replay-limit", "-1"},
	}
	for name, args := range bad {
		if _, err := parseConfig(args, io.Discard); err == nil {
			t.Errorf("%s: %v accepted", name, args)
		}
	}
}

// End to end on a plain exchange: Myxi's publisher publishes live-only,
// the fake server fans out, nothing is lost or recorded.
func TestEndToEndRecordingPublisherOnAPlainExchange(t *testing.T) {
	amqpURL := amqpURLForTest(t)
	f, srv := newFakeServer(t, amqpURL, -1)
	wsURL := "ws" + strings.TrimPrefix(srv.URL, "http") + "/"
	code, r, out := runTool(t, "-url", wsURL, "-amqp", amqpURL, "-exchange", f.exchange,
		"-publish", "amqp-myxi", "-pushers", "4",
		"-conns", "20", "-keys", "4", "-rate", "200", "-duration", "1s", "-settle", "0s",
		"-drain", "5s", "-timeout", "60s", "-pid", fmt.Sprint(os.Getpid()), "-payload-bytes", "100")
	if code != exitPass || !r.Pass {
		t.Fatalf("exit %d, pass %v:\n%s", code, r.Pass, out)
	}
	if r.Publish != "amqp-myxi" || r.PublishRecorded || r.Published != 200 || r.Expected != 1000 || r.Received != 1000 || r.Nacked != 0 {
		t.Fatalf("publish %q recorded %v published %d expected %d received %d nacked %d\n%s",
			r.Publish, r.PublishRecorded, r.Published, r.Expected, r.Received, r.Nacked, out)
	}
	if r.BrokerPID <= 0 || !strings.Contains(out, "published live-only") {
		t.Fatalf("RabbitMQ not sampled (pid %d) or the report does not say how events went:\n%s", r.BrokerPID, out)
	}
}

// A push that fails comes back from finish as a failed seq with its
// error, and publish after finish is refused.
func TestRecordingPublisherReportsFailedPushes(t *testing.T) {
	amqpURL := amqpURLForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// "amq.*" names are RabbitMQ's: Push refuses them before publishing,
	// so every push fails and nothing is left behind on the broker.
	p, err := newMyxiPublisher(ctx, amqpURL, "amq.myxi-bench-refused", 2, true)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	for seq := range int64(3) {
		if err := p.publish(ctx, seq, "k0", appendBody(nil, time.Now().UnixNano(), seq, 0)); err != nil {
			t.Fatalf("hand-over %d: %v", seq, err)
		}
	}
	failed, err := p.finish(ctx)
	if len(failed) != 3 || err == nil {
		t.Fatalf("failed %v, err %v; want all 3 and an error", failed, err)
	}
	if p.recorded {
		t.Fatal("a missing history counted as recorded")
	}
	if err := p.publish(ctx, 3, "k0", appendBody(nil, 1, 3, 0)); err == nil {
		t.Fatal("publish after finish accepted")
	}
}
