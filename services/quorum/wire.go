package quorum

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Request is what a PM asks the quorum server.
type Request struct {
	Unit string `json:"unit"`
	Node int    `json:"node"`
	// Boot names the client's incarnation: the lease belongs to it.
	Boot string `json:"boot"`
	Seq  uint64 `json:"seq"`
	// Nonce is 16 random bytes in hex, echoed by the reply.
	Nonce string `json:"nonce"`
	Op    string `json:"op"`
	// TTLms is the lease asked for, in milliseconds; acquire only.
	TTLms int64 `json:"ttl_ms,omitempty"`
}

// Reply is the server's answer to one Request.
type Reply struct {
	Unit    string `json:"unit"`
	Node    int    `json:"node"`
	Nonce   string `json:"nonce"`
	Granted bool   `json:"granted"`
	// Holder is the node holding an unexpired lease after the request, 0
	// for none.
	Holder int `json:"holder"`
	// RemainingMs is what is left of the holder's lease by the server's
	// clock, rounded up.
	RemainingMs int64 `json:"remaining_ms"`
	// PeerHeardMs is how long ago the server last took a request from the
	// unit's other node, -1 if never: a PM that cannot hear its peer learns
	// whether the peer is alive (cut off) or gone.
	PeerHeardMs int64  `json:"peer_heard_ms"`
	Error       string `json:"error,omitempty"`
}

var magic = []byte("DYQ1")

const (
	macSize     = sha256.Size
	maxDatagram = 2048
	maxName     = 64
	maxError    = 256
	nonceSize   = 16
)

// errAuth is a datagram without a valid MAC under the key: another unit,
// corruption or forgery.
var errAuth = errors.New("quorum datagram not authenticated by this unit's key")

// MarshalRequest checks r and encodes it, authenticated with key.
func MarshalRequest(key []byte, r Request) ([]byte, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	return seal(key, r)
}

// UnmarshalRequest authenticates a request datagram with key and decodes it.
func UnmarshalRequest(key, p []byte) (Request, error) {
	var r Request
	if err := open(key, p, &r); err != nil {
		return Request{}, fmt.Errorf("quorum request: %w", err)
	}
	if err := r.validate(); err != nil {
		return Request{}, err
	}
	return r, nil
}

// MarshalReply checks r and encodes it, authenticated with key.
func MarshalReply(key []byte, r Reply) ([]byte, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	return seal(key, r)
}

// UnmarshalReply authenticates a reply datagram with key and decodes it.
func UnmarshalReply(key, p []byte) (Reply, error) {
	var r Reply
	if err := open(key, p, &r); err != nil {
		return Reply{}, fmt.Errorf("quorum reply: %w", err)
	}
	if err := r.validate(); err != nil {
		return Reply{}, err
	}
	return r, nil
}

func seal(key []byte, v any) ([]byte, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	out := frame(key, body)
	if len(out) > maxDatagram {
		return nil, fmt.Errorf("quorum datagram of %d bytes exceeds %d", len(out), maxDatagram)
	}
	return out, nil
}

// frame authenticates body under key as a datagram: magic, body and the
// HMAC of both. It checks nothing (tests build refused datagrams with it).
func frame(key, body []byte) []byte {
	out := append(append([]byte{}, magic...), body...)
	m := hmac.New(sha256.New, key)
	m.Write(out)
	return m.Sum(out)
}

// framed returns the body of p if p has the shape of a datagram.
func framed(p []byte) ([]byte, error) {
	if len(p) > maxDatagram || len(p) < len(magic)+macSize+2 || !bytes.HasPrefix(p, magic) {
		return nil, errors.New("not a Dyad quorum datagram")
	}
	return p[len(magic) : len(p)-macSize], nil
}

func open(key, p []byte, v any) error {
	body, err := framed(p)
	if err != nil {
		return err
	}
	m := hmac.New(sha256.New, key)
	m.Write(p[:len(p)-macSize])
	if !hmac.Equal(m.Sum(nil), p[len(p)-macSize:]) {
		return errAuth
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("body: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("body: data after the JSON object")
	}
	return nil
}

// requestUnit reads the unit of a request before it can be authenticated:
// the server needs it to find the key. Nothing else of the body is trusted
// before UnmarshalRequest.
func requestUnit(p []byte) (string, error) {
	body, err := framed(p)
	if err != nil {
		return "", err
	}
	var v struct {
		Unit string `json:"unit"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return "", fmt.Errorf("quorum request body: %w", err)
	}
	if err := validName("unit", v.Unit); err != nil {
		return "", err
	}
	return v.Unit, nil
}

func (r Request) validate() error {
	if err := validName("unit", r.Unit); err != nil {
		return err
	}
	if err := validNode(r.Node); err != nil {
		return err
	}
	if err := validName("boot", r.Boot); err != nil {
		return err
	}
	if err := validNonce(r.Nonce); err != nil {
		return err
	}
	switch r.Op {
	case OpAcquire:
		if r.TTLms <= 0 || r.TTLms > MaxTTL.Milliseconds() {
			return fmt.Errorf("quorum: lease of %d ms outside (0, %d]", r.TTLms, MaxTTL.Milliseconds())
		}
	case OpRelease, OpQuery:
		if r.TTLms != 0 {
			return fmt.Errorf("quorum: %s with a TTL", r.Op)
		}
	default:
		return fmt.Errorf("quorum: unknown operation %q", r.Op)
	}
	return nil
}

func (r Reply) validate() error {
	if err := validName("unit", r.Unit); err != nil {
		return err
	}
	if err := validNode(r.Node); err != nil {
		return err
	}
	if err := validNonce(r.Nonce); err != nil {
		return err
	}
	switch {
	case r.Holder < 0 || r.Holder > 2:
		return fmt.Errorf("quorum: holder %d", r.Holder)
	case r.RemainingMs < 0 || r.RemainingMs > MaxTTL.Milliseconds():
		return fmt.Errorf("quorum: %d ms remaining outside [0, %d]", r.RemainingMs, MaxTTL.Milliseconds())
	case r.PeerHeardMs < -1:
		return fmt.Errorf("quorum: peer heard %d ms ago", r.PeerHeardMs)
	case r.Holder == 0 && r.RemainingMs != 0:
		return errors.New("quorum: time remaining without a holder")
	case r.Granted && r.Holder != r.Node:
		return fmt.Errorf("quorum: granted to node %d but held by %d", r.Node, r.Holder)
	case len(r.Error) > maxError:
		return fmt.Errorf("quorum: error text of %d bytes", len(r.Error))
	}
	return nil
}

// validName accepts printable ASCII without spaces: names end up in logs and
// in the server's whitespace-separated keys file.
func validName(what, s string) error {
	if s == "" || len(s) > maxName {
		return fmt.Errorf("quorum: %s of %d bytes outside [1, %d]", what, len(s), maxName)
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return fmt.Errorf("quorum: %s %q is not printable ASCII without spaces", what, s)
		}
	}
	return nil
}

// ValidUnit checks a unit name as requests carry it.
func ValidUnit(name string) error { return validName("unit name", name) }

func validNode(n int) error {
	if n != 1 && n != 2 {
		return fmt.Errorf("quorum: node %d (want 1 or 2)", n)
	}
	return nil
}

func validNonce(s string) error {
	if b, err := hex.DecodeString(s); err != nil || len(b) != nonceSize {
		return fmt.Errorf("quorum: nonce %q is not %d bytes in hex", s, nonceSize)
	}
	return nil
}
