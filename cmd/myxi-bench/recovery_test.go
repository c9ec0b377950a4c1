package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

// replayOf is what a correct server sends for expected seqs recorded at
// offsets first, first+step, ...
func replayOf(expected []int64, first, step int64) []recEvent {
	var evs []recEvent
	for i, seq := range expected {
		evs = append(evs, recEvent{seq: seq, o: first + int64(i)*step, hasO: true, epOK: true})
	}
	return evs
}

func TestCheckRecovery(t *testing.T) {
	expected := stormExpected(3, 200, 20_000) // 3, 203, ..., 19803
	if len(expected) != 100 || expected[0] != 3 || expected[99] != 19803 {
		t.Fatalf("stormExpected: %d seqs, %v..%v", len(expected), expected[0], expected[len(expected)-1])
	}
	since := position{offset: 41, epoch: "ep1"}
	good := func() recoveryInput {
		// offsets 50, 250, ..., 19850; O2 is the exchange's last offset, above the key's last
		return recoveryInput{since: since, recovered: true, epoch: "ep1", upTo: 20_040, expected: expected, events: replayOf(expected, 50, 200)}
	}
	tests := map[string]struct {
		edit  func(in *recoveryInput)
		check func(rc recoveryCheck) bool
		why   string // in Problem
	}{
		"exact": {func(*recoveryInput) {}, func(rc recoveryCheck) bool { return rc.Replayed == 100 }, ""},
		"a live event of the key after O2 is fine": {func(in *recoveryInput) {
			in.events = append(in.events, recEvent{seq: 20_003, o: 20_041, hasO: true, epOK: true})
		}, func(rc recoveryCheck) bool { return rc.Replayed == 100 }, ""},
		"missing": {func(in *recoveryInput) { in.events = append(in.events[:10:10], in.events[11:]...) },
			func(rc recoveryCheck) bool { return rc.Missing == 1 && rc.Misordered == 0 && rc.Replayed == 99 }, "seq 2003 never came"},
		"missing at the end": {func(in *recoveryInput) { in.events = in.events[:99] },
			func(rc recoveryCheck) bool { return rc.Missing == 1 }, "seq 19803 never came"},
		"nothing replayed": {func(in *recoveryInput) { in.events = nil },
			func(rc recoveryCheck) bool { return rc.Missing == 100 }, "seq 3 never came"},
		"duplicate": {func(in *recoveryInput) { in.events = append(in.events[:6:6], in.events[5:]...) },
			func(rc recoveryCheck) bool { return rc.Dups == 1 && rc.Replayed == 100 && rc.Missing == 0 }, "came twice"},
		"swapped": {func(in *recoveryInput) { in.events[4], in.events[5] = in.events[5], in.events[4] },
			func(rc recoveryCheck) bool { return rc.Misordered == 1 && rc.Missing == 0 }, "came after"},
		"offsets not increasing": {func(in *recoveryInput) { in.events[7].o = in.events[6].o },
			func(rc recoveryCheck) bool { return rc.Misordered == 1 }, "came after"},
		"last one live": {func(in *recoveryInput) { in.upTo = in.events[98].o },
			func(rc recoveryCheck) bool { return rc.NotReplayed == 1 && rc.Replayed == 99 }, "came live"},
		"at the since offset": {func(in *recoveryInput) {
			in.events = append([]recEvent{{seq: 9, o: 41, hasO: true, epOK: true}}, in.events...)
		}, func(rc recoveryCheck) bool { return rc.BelowSince == 1 && rc.Replayed == 100 }, "at or below the since offset"},
		"another key's event": {func(in *recoveryInput) {
			in.events = append(in.events, recEvent{seq: 4, o: 20_000, hasO: true, epOK: true})
		}, func(rc recoveryCheck) bool { return rc.Unexpected == 1 }, "was not pushed to this key"},
		"without position": {func(in *recoveryInput) { in.events[0].hasO = false },
			func(rc recoveryCheck) bool { return rc.NoPosition == 1 && rc.Missing == 1 }, "without a position"},
		"another epoch": {func(in *recoveryInput) { in.events[3].epOK = false },
			func(rc recoveryCheck) bool { return rc.NoPosition == 1 && rc.Missing == 1 }, "another epoch"},
		"recovered false": {func(in *recoveryInput) { in.recovered, in.events = false, nil },
			func(rc recoveryCheck) bool { return rc.NotRecovered && rc.Missing == 100 }, "recovered: false"},
		"epoch changed": {func(in *recoveryInput) { in.epoch = "ep2" },
			func(rc recoveryCheck) bool { return rc.EpochChanged }, `with epoch "ep2"`},
	}
	for name, tc := range tests {
		in := good()
		tc.edit(&in)
		rc := checkRecovery(in)
		if !tc.check(rc) {
			t.Errorf("%s: %+v", name, rc)
		}
		if rc.ok() != (tc.why == "") {
			t.Errorf("%s: ok() = %v, problem %q", name, rc.ok(), rc.Problem)
		}
		if tc.why != "" && !strings.Contains(rc.Problem, tc.why) {
			t.Errorf("%s: problem %q, want it to say %q", name, rc.Problem, tc.why)
		}
	}
	// A key that got nothing while the client was away recovers nothing.
	if rc := checkRecovery(recoveryInput{since: since, recovered: true, epoch: "ep1", upTo: 41}); !rc.ok() || rc.Replayed != 0 {
		t.Errorf("empty: %+v", rc)
	}
	if got := stormExpected(5, 10, 5); len(got) != 0 {
		t.Errorf("stormExpected beyond sent: %v", got)
	}
}

func TestStormScenario(t *testing.T) {
	c, err := parseConfig([]string{"-scenario", "storm"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Storm || c.Conns != 2000 || c.Keys != 200 || c.totalEvents() != 20_000 || maxPerKey(c.totalEvents(), c.Keys) != 100 ||
		c.Publish != "http" || c.DialConcurrency != 2000 || c.LiveConns != 200 || c.LiveKeys != 20 || c.LiveRate != 100 ||
		c.History != 10*time.Minute || c.RecoverTarget != 10*time.Second || c.LiveP99Target != 50*time.Millisecond {
		t.Fatalf("storm: %+v", c)
	}
	if c.stormSockets() != 200 || c.stormWait() != c.RecoverTimeout+c.HandshakeTimeout {
		t.Fatalf("sockets %d, wait %v", c.stormSockets(), c.stormWait())
	}
	toml := c.historyTOML()
	for _, want := range []string{`[exchanges."bench"]`, `policy = "public"`, `history = "10m0s"`} {
		if !strings.Contains(toml, want) {
			t.Errorf("TOML lacks %s:\n%s", want, toml)
		}
	}
	if strings.Contains(toml, "history_replay_limit") {
		t.Errorf("replay limit written without -replay-limit:\n%s", toml)
	}
	c, err = parseConfig([]string{"-scenario", "storm", "-replay-limit", "500", "-conns", "20", "-keys", "4", "-duration", "1s", "-rate", "40"}, io.Discard)
	if err != nil || !strings.Contains(c.historyTOML(), "history_replay_limit = 500") || c.Conns != 20 {
		t.Fatalf("overrides: %+v %v", c, err)
	}
	bad := map[string][]string{
		"beyond the replay limit": {"-scenario", "storm", "-keys", "10"},
		"over a set limit":        {"-scenario", "storm", "-replay-limit", "50"},
		"nothing to recover":      {"-scenario", "storm", "-rate", "0"},
		"with flood":              {"-scenario", "storm", "-flood"},
		"history too short":       {"-scenario", "storm", "-history", "500ms"},
		"live without keys":       {"-scenario", "storm", "-live-keys", "0"},
		"live without rate":       {"-scenario", "storm", "-live-rate", "0"},
		"no time to recover":      {"-scenario", "storm", "-timeout", "40s"},
	}
	for name, args := range bad {
		if _, err := parseConfig(args, io.Discard); err == nil {
			t.Errorf("%s: %v accepted", name, args)
		}
	}
	if _, err := parseConfig([]string{"-scenario", "storm", "-live-conns", "0", "-live-keys", "0"}, io.Discard); err != nil {
		t.Errorf("no live clients refused: %v", err)
	}
}

func TestStormSubscribeMessage(t *testing.T) {
	cfg, err := parseConfig([]string{"-storm", "-conns", "6", "-keys", "3", "-rate", "30", "-duration", "1s", "-publish", "http"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	f := newStormFleet(cfg)
	c := f.clients[4]
	if got, want := string(c.subscribeMsg()), `{"action":"Subscribe","tag":"s4","payload":{"exchange":"bench","routing_key":"k1"}}`; got != want {
		t.Fatalf("plain:\n got %s\nwant %s", got, want)
	}
	c.since = &position{offset: 77, epoch: `e\"1`}
	if got, want := string(c.subscribeMsg()), `{"action":"Subscribe","tag":"s4","payload":{"exchange":"bench","routing_key":"k1","since":{"offset":77,"epoch":"e\"1"}}}`; got != want {
		t.Fatalf("since:\n got %s\nwant %s", got, want)
	}
	if string(c.plain) != `{"action":"Subscribe","tag":"s4","payload":{"exchange":"bench","routing_key":"k1"}}` {
		t.Fatalf("subscribeMsg changed the plain message: %s", c.plain)
	}
}
