package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestScenarioWithOverrides(t *testing.T) {
	c, err := parseConfig([]string{"-scenario", "S1", "-conns", "2000"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Conns != 2000 || c.Keys != 1 || c.Rate != 10 || c.Duration != 20*time.Second || !c.Batch {
		t.Fatalf("S1 with -conns 2000: %+v", c)
	}
	c, err = parseConfig([]string{"-scenario", "S1-nobatch"}, io.Discard)
	if err != nil || c.Batch || c.Rate != 5 || c.Conns != 10000 {
		t.Fatalf("S1-nobatch: %+v %v", c, err)
	}
	c, err = parseConfig([]string{"-scenario", "idle", "-keys", "1"}, io.Discard)
	if err != nil || c.Conns != 19500 || c.Keys != 1 || c.Rate != 0 || c.Settle != 10*time.Second || c.totalEvents() != 0 {
		t.Fatalf("idle: %+v %v", c, err)
	}
	if _, err := parseConfig([]string{"-scenario", "S9"}, io.Discard); err == nil {
		t.Fatal("unknown scenario accepted")
	}
}

func TestLoopbackOnly(t *testing.T) {
	ok := [][]string{
		{"-url", "ws://localhost:5005/ws"},
		{"-url", "ws://127.0.0.2:5005/"},
		{"-url", "ws://[::1]:5005/"},
		{"-amqp", "amqp://guest:guest@localhost:5672/"},
	}
	for _, args := range ok {
		if _, err := parseConfig(args, io.Discard); err != nil {
			t.Errorf("%v refused: %v", args, err)
		}
	}
	bad := map[string][]string{
		"not a loopback": {"-url", "ws://10.0.0.5:5005/"},
		"a name":         {"-url", "ws://example.com:5005/"},
		"scheme":         {"-url", "wss://127.0.0.1:5005/"},
		"amqp host":      {"-amqp", "amqp://guest:guest@192.168.1.2:5672/"},
		"IPv6 + sources": {"-url", "ws://[::1]:5005/", "-source-ips", "4"},
		"conns":          {"-conns", "0"},
		"timeout":        {"-duration", "10m"},
		"both":           {"-spawn", "x", "-pid", "12"},
		"http publish":   {"-publish", "smtp"},
	}
	for name, args := range bad {
		if _, err := parseConfig(args, io.Discard); err == nil {
			t.Errorf("%s: %v accepted", name, args)
		} else if name == "not a loopback" && !strings.Contains(err.Error(), "not a loopback") {
			t.Errorf("unclear error: %v", err)
		}
	}
	// -amqp is not checked when nothing is published
	if _, err := parseConfig([]string{"-rate", "0", "-amqp", "amqp://10.1.1.1/"}, io.Discard); err != nil {
		t.Errorf("idle run with unused -amqp: %v", err)
	}
}

func TestWSURLBatch(t *testing.T) {
	c := &config{URL: "ws://127.0.0.1:5005/ws?x=1", Batch: true}
	if got := c.wsURL(); got != "ws://127.0.0.1:5005/ws?batch=1&x=1" {
		t.Fatalf("wsURL = %s", got)
	}
	c.Batch = false
	if got := c.wsURL(); got != c.URL {
		t.Fatalf("wsURL without batch = %s", got)
	}
}

func TestSourceAddrsAndDialTarget(t *testing.T) {
	ips := sourceAddrs(3)
	if len(ips) != 3 || ips[0].String() != "127.0.0.1" || ips[2].String() != "127.0.0.3" {
		t.Fatalf("sourceAddrs = %v", ips)
	}
	if dialTarget("localhost:5005") != "127.0.0.1:5005" || dialTarget("127.0.0.9:1") != "127.0.0.9:1" {
		t.Fatal("dialTarget")
	}
}

func TestClientKeysSpreadEvenly(t *testing.T) {
	per := map[int]int{}
	for i := range 1003 {
		c := newClient(i, 10, "bench")
		per[c.keyIdx]++
		if string(c.key) != keyName(c.keyIdx) {
			t.Fatalf("client %d: key %s, index %d", i, c.key, c.keyIdx)
		}
	}
	for k, n := range per {
		if n != 100 && n != 101 {
			t.Fatalf("key %d has %d clients", k, n)
		}
	}
	c := newClient(17, 4, "bench")
	if string(c.subMsg) != `{"action":"Subscribe","tag":"b17","payload":{"exchange":"bench","routing_key":"k1"}}` || string(c.tag) != `"b17"` {
		t.Fatalf("subscribe %s tag %s", c.subMsg, c.tag)
	}
}
