package rabbitmq

import (
	"testing"
	"time"
)

func TestAckBatcher(t *testing.T) {
	type ack struct {
		last uint64
		n    int
	}
	var acks []ack
	a := newAckBatcher(3, func(last uint64, n int) { acks = append(acks, ack{last, n}) })
	if a.idle() != nil {
		t.Fatal("idle with nothing pending should never fire")
	}
	for tag := uint64(1); tag <= 4; tag++ {
		a.add(tag)
	}
	if len(acks) != 1 || acks[0] != (ack{3, 3}) {
		t.Fatalf("after 4 deliveries in batches of 3: %v, want [{3 3}]", acks)
	}
	start := time.Now()
	<-a.idle() // one pending: fires after the pause
	if waited := time.Since(start); waited < ackIdle/2 {
		t.Fatalf("idle fired after %v, before the pause of %v", waited, ackIdle)
	}
	a.flush()
	if len(acks) != 2 || acks[1] != (ack{4, 1}) {
		t.Fatalf("after the pause: %v, want the pending one acked", acks)
	}
	a.add(5)
	a.idle() // armed, then a full flush disarms it
	a.flush()
	a.add(6)
	start = time.Now()
	<-a.idle()
	if waited := time.Since(start); waited < ackIdle/2 {
		t.Fatalf("a re-armed idle fired after %v: a stale timer", waited)
	}
}
