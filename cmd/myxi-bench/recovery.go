package main

import "fmt"

// Checking one storm client's recovery (issue 14, docs/PROTOCOL.md
// "Extension: history and recovery"): after a Subscribe with since
// {offset, epoch}, Subscribed says recovered and O2, then come exactly the
// recorded events of the key with since.offset < o <= O2, in order, then
// live ones with o > O2. The events the key got while the client was away
// must all come back, each once, in the order they were pushed, all with
// o <= O2 (replayed), none at or below the since offset.

// position is a place in an exchange's history: an offset of one epoch.
// The epoch is kept as the server wrote it (JSON string content, escapes
// and all), so that it can be sent back and compared as is.
type position struct {
	offset int64
	epoch  string
}

// recEvent is one Bench event a recovering client received after Subscribed.
type recEvent struct {
	seq  int64
	o    int64
	hasO bool // the event carried mq.o (a recorded event)
	epOK bool // its mq.ep is Subscribed's epoch
}

// recoveryInput is what one client saw, and what it should have seen.
type recoveryInput struct {
	since     position // what the client asked from
	recovered bool     // Subscribed's "recovered"
	epoch     string   // Subscribed's "epoch"
	upTo      int64    // Subscribed's "offset" (O2)
	expected  []int64  // seqs pushed to the key while the client was away, in push order
	events    []recEvent
}

// recoveryCheck is the verdict on one client; every count but Replayed is
// a failure.
type recoveryCheck struct {
	Replayed     int64 // expected events received once, with o <= O2
	Missing      int64 // expected events never received
	Dups         int64 // expected events received again
	Misordered   int64 // received after an event pushed later (by o or by push order)
	NotReplayed  int64 // expected events that came with o > O2, i.e. as live
	Unexpected   int64 // events with o <= O2 that the key did not get while the client was away
	NoPosition   int64 // Bench events without o, or of another epoch
	BelowSince   int64 // events with o <= since.offset, which must never be sent
	NotRecovered bool  // Subscribed said recovered: false
	EpochChanged bool  // recovered: true but another epoch than since's
	Problem      string
}

func (rc *recoveryCheck) ok() bool {
	return rc.Missing == 0 && rc.Dups == 0 && rc.Misordered == 0 && rc.NotReplayed == 0 &&
		rc.Unexpected == 0 && rc.NoPosition == 0 && rc.BelowSince == 0 && !rc.NotRecovered && !rc.EpochChanged
}

// note keeps the first problem's description.
func (rc *recoveryCheck) note(format string, a ...any) {
	if rc.Problem == "" {
		rc.Problem = fmt.Sprintf(format, a...)
	}
}

// checkRecovery judges one client's recovered sequence.
func checkRecovery(in recoveryInput) recoveryCheck {
	var rc recoveryCheck
	if !in.recovered {
		rc.NotRecovered = true
		rc.note("Subscribed said recovered: false (since offset %d, epoch %q; now epoch %q, offset %d)", in.since.offset, in.since.epoch, in.epoch, in.upTo)
	} else if in.epoch != in.since.epoch {
		rc.EpochChanged = true
		rc.note("recovered: true with epoch %q, but since's was %q", in.epoch, in.since.epoch)
	}
	index := make(map[int64]int, len(in.expected))
	for i, seq := range in.expected {
		index[seq] = i
	}
	seen := make([]bool, len(in.expected))
	lastO, lastI := in.since.offset, -1
	for _, ev := range in.events {
		switch {
		case !ev.hasO:
			rc.NoPosition++
			rc.note("seq %d came without a position (mq.o)", ev.seq)
			continue
		case !ev.epOK:
			rc.NoPosition++
			rc.note("seq %d (o %d) came with another epoch than Subscribed's", ev.seq, ev.o)
			continue
		case ev.o <= in.since.offset:
			rc.BelowSince++
			rc.note("seq %d came with o %d, at or below the since offset %d", ev.seq, ev.o, in.since.offset)
			continue
		}
		i, want := index[ev.seq]
		if !want {
			// Events recorded after O2 are live traffic of the key, which
			// the storm does not send; they are not the replay's business.
			if ev.o <= in.upTo {
				rc.Unexpected++
				rc.note("seq %d (o %d <= O2 %d) was not pushed to this key while the client was away", ev.seq, ev.o, in.upTo)
			}
			continue
		}
		if seen[i] {
			rc.Dups++
			rc.note("seq %d (o %d) came twice", ev.seq, ev.o)
			continue
		}
		seen[i] = true
		if ev.o <= lastO || i < lastI {
			rc.Misordered++
			rc.note("seq %d (o %d) came after o %d", ev.seq, ev.o, lastO)
		}
		lastO, lastI = max(lastO, ev.o), max(lastI, i)
		if ev.o > in.upTo {
			rc.NotReplayed++
			rc.note("seq %d came live (o %d > O2 %d) although it was pushed while the client was away", ev.seq, ev.o, in.upTo)
		} else {
			rc.Replayed++
		}
	}
	for i, ok := range seen {
		if !ok {
			rc.Missing++
			rc.note("seq %d never came", in.expected[i])
		}
	}
	return rc
}

// stormExpected is the seqs event stream seq -> key seq mod keys sent to
// key k among the first sent events, in order.
func stormExpected(k, keys int, sent int64) []int64 {
	var out []int64
	for seq := int64(k); seq < sent; seq += int64(keys) {
		out = append(out, seq)
	}
	return out
}
