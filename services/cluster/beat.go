// Package cluster is unit membership: authenticated heartbeats on every path
// between the two PMs, the per-path view of the peer, and the election of the
// primary.
package cluster

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/dyad-ha/dyad/services/unit"
)

// Beat is what a PM says about itself on every path, every interval.
type Beat struct {
	Unit    string       `json:"unit"`
	Node    int          `json:"node"`
	BootID  string       `json:"boot"`
	Seq     uint64       `json:"seq"`
	Role    unit.Role    `json:"role"`
	Epoch   uint64       `json:"epoch"`
	State   unit.PMState `json:"state"`
	Uptime  float64      `json:"uptime"`
	Version string       `json:"version"`
	// DBSeq is the sender's unit database position.
	DBSeq uint64 `json:"db_seq"`
	// Ibiz0 is the sender's own IPv4 address on ibiz0, the fallback route to
	// its peer API when priv0 is down.
	Ibiz0 string `json:"ibiz0,omitempty"`
	// Paths is the sender's view of each heartbeat path (true = up).
	Paths map[string]bool `json:"paths"`
	// Quorum is the quorum server the sender uses, 1 for the preferred, 2
	// for the alternate, 0 without one: the primary proposes, the
	// secondary follows, and a switch counts once both say the same.
	Quorum int `json:"quorum,omitempty"`
}

var magic = []byte("DYHB1")

const (
	macSize = sha256.Size
	// MaxBeatSize bounds a heartbeat datagram.
	MaxBeatSize = 4096
)

// Marshal encodes and authenticates b with key.
func Marshal(key []byte, b Beat) ([]byte, error) {
	body, err := json.Marshal(b)
	if err != nil {
		return nil, err
	}
	out := append(append([]byte{}, magic...), body...)
	m := hmac.New(sha256.New, key)
	m.Write(out)
	out = m.Sum(out)
	if len(out) > MaxBeatSize {
		return nil, fmt.Errorf("heartbeat of %d bytes exceeds %d", len(out), MaxBeatSize)
	}
	return out, nil
}

// ErrAuth is returned for a datagram that does not carry a valid MAC of this
// unit: another unit on the same segment, corruption or forgery.
var ErrAuth = errors.New("heartbeat not authenticated by this unit's key")

// Unmarshal checks and decodes a heartbeat datagram.
func Unmarshal(key []byte, p []byte) (Beat, error) {
	if len(p) > MaxBeatSize || len(p) < len(magic)+macSize+2 || !bytes.HasPrefix(p, magic) {
		return Beat{}, errors.New("not a Dyad heartbeat")
	}
	signed, sum := p[:len(p)-macSize], p[len(p)-macSize:]
	m := hmac.New(sha256.New, key)
	m.Write(signed)
	if !hmac.Equal(m.Sum(nil), sum) {
		return Beat{}, ErrAuth
	}
	var b Beat
	if err := json.Unmarshal(signed[len(magic):], &b); err != nil {
		return Beat{}, fmt.Errorf("heartbeat body: %w", err)
	}
	if b.Node != 1 && b.Node != 2 {
		return Beat{}, fmt.Errorf("heartbeat from node %d", b.Node)
	}
	return b, nil
}
