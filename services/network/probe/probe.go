// Package probe finds which business ports of the two PMs of a unit share
// an L2 domain. Each PM sends an authenticated probe frame on every business
// port and listens for its peer's; Pair turns what one PM heard into port
// pairings and Networks combines both PMs' pairings into the unit's shared
// networks.
package probe

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"time"
)

// EtherType is the IEEE 802 "local experimental ethertype 1": registered to
// nobody, so no other protocol on the LAN interprets probe frames.
const EtherType = 0x88B5

// MinKeyLen is the shortest key Frame and Parse accept. A shorter key would
// make the probes' authentication guessable.
const MinKeyLen = 16

// Frame layout, all integers big-endian:
//
//	Ethernet header  dst (6) src (6) ethertype (2)
//	magic            "DYPR1"
//	node             uint8
//	speed            uint32, Mb/s
//	seq              uint64
//	mac              6 bytes
//	unit, port, boot ID: each a uint8 length and that many bytes
//	tag              HMAC-SHA256 over magic..boot ID
//
// A fixed binary layout rather than JSON keeps the size bounded and the
// parser of untrusted bytes small.
const (
	ethHeaderLen = 14
	magic        = "DYPR1"
	fixedLen     = len(magic) + 1 + 4 + 8 + 6
	tagLen       = sha256.Size
	maxUnit      = 63 // a DNS label
	maxPort      = 15 // IFNAMSIZ - 1
	maxBootID    = 64
	minFrameLen  = ethHeaderLen + fixedLen + 3 + 1 + 1 + tagLen
	// MaxFrameLen bounds every probe frame; Parse rejects longer ones.
	MaxFrameLen = ethHeaderLen + fixedLen + 3 + maxUnit + maxPort + maxBootID + tagLen
)

// Group returns the destination address of every probe: a locally
// administered multicast address ("DYAD" in its middle bytes). Bridges
// never forward the 01:80:c2:00:00:0x link-local groups that LLDP and STP
// use, but flood an ordinary multicast address like this one, so a probe
// reaches exactly the L2 domain that guest traffic on the port reaches.
func Group() net.HardwareAddr {
	return net.HardwareAddr{0x03, 0x44, 0x59, 0x41, 0x44, 0x00}
}

// Probe announces one port of one PM.
type Probe struct {
	Unit string // unit name
	Node int    // 1 or 2
	Port string // name of the sending port, e.g. "biz1"
	MAC  net.HardwareAddr
	// SpeedMbps is the sending port's link speed; 0 means unknown.
	SpeedMbps int
	// BootID and Seq tell a restarted sender from a delayed frame.
	BootID string
	Seq    uint64
	// Received is when this PM received the probe. It is not part of the
	// frame: Receive sets it, and Pair uses it to ignore stale probes.
	Received time.Time
}

// ErrNotProbe is returned (wrapped) by Parse for a frame that is not a
// probe at all, so a capture loop can skip it silently.
var ErrNotProbe = errors.New("not a probe frame")

// ErrAuth is returned (wrapped) by Parse for a probe whose tag does not
// match the key: a probe of another unit on the same L2 domain, or a peer
// holding a different unit key.
var ErrAuth = errors.New("probe authentication failed")

// Frame encodes p as an Ethernet frame from p.MAC to Group, authenticated
// with key.
func (p Probe) Frame(key []byte) ([]byte, error) {
	if err := checkKey(key); err != nil {
		return nil, fmt.Errorf("probe frame: %w", err)
	}
	if err := p.validate(); err != nil {
		return nil, fmt.Errorf("probe frame: %w", err)
	}
	b := make([]byte, 0, MaxFrameLen)
	b = append(b, Group()...)
	b = append(b, p.MAC...)
	b = binary.BigEndian.AppendUint16(b, EtherType)
	b = append(b, magic...)
	b = append(b, byte(p.Node))
	b = binary.BigEndian.AppendUint32(b, uint32(p.SpeedMbps))
	b = binary.BigEndian.AppendUint64(b, p.Seq)
	b = append(b, p.MAC...)
	for _, s := range []string{p.Unit, p.Port, p.BootID} {
		b = append(b, byte(len(s)))
		b = append(b, s...)
	}
	return append(b, tag(key, b[ethHeaderLen:])...), nil
}

func (p Probe) validate() error {
	if p.Node != 1 && p.Node != 2 {
		return fmt.Errorf("node %d, want 1 or 2", p.Node)
	}
	if len(p.MAC) != 6 {
		return fmt.Errorf("MAC address %q is not 6 bytes", p.MAC)
	}
	if p.SpeedMbps < 0 || p.SpeedMbps > math.MaxUint32 {
		return fmt.Errorf("speed %d Mb/s out of range (0 for unknown)", p.SpeedMbps)
	}
	for _, f := range []struct {
		name     string
		v        string
		min, max int
	}{{"unit name", p.Unit, 1, maxUnit}, {"port name", p.Port, 1, maxPort}, {"boot ID", p.BootID, 0, maxBootID}} {
		if len(f.v) < f.min || len(f.v) > f.max {
			return fmt.Errorf("%s %q: length %d, want %d to %d", f.name, f.v, len(f.v), f.min, f.max)
		}
		if !printable(f.v) {
			return fmt.Errorf("%s %q: only printable ASCII without spaces is allowed", f.name, f.v)
		}
	}
	return nil
}

// printable keeps the names that end up in logs and alerts free of
// control characters.
func printable(s string) bool {
	for i := range len(s) {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

func checkKey(key []byte) error {
	if len(key) < MinKeyLen {
		return fmt.Errorf("key of %d bytes is shorter than %d", len(key), MinKeyLen)
	}
	return nil
}

func tag(key, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return m.Sum(nil)
}

// Parse decodes a probe frame and checks its tag against key. frame is
// untrusted: the tag is checked before any field is decoded, every length
// is bounded, and the result does not alias frame. Received is left zero.
func Parse(key, frame []byte) (Probe, error) {
	if err := checkKey(key); err != nil {
		return Probe{}, fmt.Errorf("parse probe: %w", err)
	}
	if len(frame) < ethHeaderLen+len(magic) {
		return Probe{}, fmt.Errorf("parse probe: frame of %d bytes is too short: %w", len(frame), ErrNotProbe)
	}
	if et := binary.BigEndian.Uint16(frame[12:14]); et != EtherType {
		return Probe{}, fmt.Errorf("parse probe: ethertype %#04x: %w", et, ErrNotProbe)
	}
	if m := frame[ethHeaderLen : ethHeaderLen+len(magic)]; string(m) != magic {
		return Probe{}, fmt.Errorf("parse probe: magic %q: %w", m, ErrNotProbe)
	}
	if len(frame) < minFrameLen || len(frame) > MaxFrameLen {
		return Probe{}, fmt.Errorf("parse probe: frame of %d bytes, want %d to %d", len(frame), minFrameLen, MaxFrameLen)
	}
	body, sum := frame[ethHeaderLen:len(frame)-tagLen], frame[len(frame)-tagLen:]
	if !hmac.Equal(sum, tag(key, body)) {
		return Probe{}, fmt.Errorf("parse probe from %s: %w", net.HardwareAddr(frame[6:12]), ErrAuth)
	}
	f := body[len(magic):]
	p := Probe{
		Node:      int(f[0]),
		SpeedMbps: int(binary.BigEndian.Uint32(f[1:5])),
		Seq:       binary.BigEndian.Uint64(f[5:13]),
		MAC:       bytes.Clone(f[13:19]),
	}
	f = f[19:]
	for _, s := range []*string{&p.Unit, &p.Port, &p.BootID} {
		if len(f) < 1 || len(f) < 1+int(f[0]) {
			return Probe{}, fmt.Errorf("parse probe: field overruns the frame")
		}
		*s, f = string(f[1:1+int(f[0])]), f[1+int(f[0]):]
	}
	if len(f) != 0 {
		return Probe{}, fmt.Errorf("parse probe: %d unexpected bytes before the tag", len(f))
	}
	if err := p.validate(); err != nil {
		return Probe{}, fmt.Errorf("parse probe: %w", err)
	}
	return p, nil
}
