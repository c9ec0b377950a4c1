// Package randid makes the random ids of sessions, nodes and AMQP
// connection names: 16 hex characters from crypto/rand.
package randid

import (
	"crypto/rand"
	"encoding/hex"
)

// New returns 16 random hex characters.
func New() string {
	var id [8]byte
	_, _ = rand.Read(id[:]) // never fails on the platforms Go supports (crypto/rand docs)
	return hex.EncodeToString(id[:])
}
