package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// Limits on what one change may carry. The wire limit is what a peer accepts in
// one HTTP body; the payload limit keeps an encoded batch (values are base64 in
// JSON, 4/3 of their size) below it so a change the primary accepts is never
// refused by the secondary for its size.
const (
	MaxBatchBytes    = 16 << 20
	maxBatchPayload  = 11 << 20
	maxBatchOps      = 100_000
	maxBucketNameLen = 255
	maxKeyLen        = 4096
)

// Op is one change of a batch. A nil Value deletes the key; an empty non-nil
// Value stores an empty value (JSON keeps the difference: null versus "").
type Op struct {
	Bucket string `json:"bucket"`
	Key    string `json:"key"`
	Value  []byte `json:"value"`
}

// Batch is one committed change of the database as replicated to the peer.
//
// Prev is the state digest of the database the batch applies to (hex SHA-256
// chaining every batch since the database was created, "" for a new
// database). It lets the secondary refuse a batch whose history differs from
// its own (a change committed by a primary running alone, a local commit that
// failed after replication) instead of silently diverging: it answers ErrGap
// and the primary replaces its copy with a snapshot.
type Batch struct {
	Epoch uint64 `json:"epoch"`
	Seq   uint64 `json:"seq"`
	Prev  string `json:"prev"`
	Ops   []Op   `json:"ops"`
}

// Position says how far a database is: the epoch of the primary that wrote the
// last change and the number of changes since the database was created.
type Position struct {
	Epoch uint64 `json:"epoch"`
	Seq   uint64 `json:"seq"`
}

var errInvalid = errors.New("invalid")

func validName(what, s string, max int) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty %s", errInvalid, what)
	case len(s) > max:
		return fmt.Errorf("%w: %s of %d bytes is longer than %d", errInvalid, what, len(s), max)
	case !utf8.ValidString(s):
		// Names travel as JSON strings, which would silently replace invalid
		// UTF-8, so the peer would store a different name.
		return fmt.Errorf("%w: %s %q is not valid UTF-8", errInvalid, what, s)
	}
	return nil
}

func validBucket(bucket string) error {
	if err := validName("bucket name", bucket, maxBucketNameLen); err != nil {
		return err
	}
	if bucket == metaBucket {
		return fmt.Errorf("%w: bucket name %q is reserved for the store itself", errInvalid, bucket)
	}
	return nil
}

func validOp(bucket, key string) error {
	if err := validBucket(bucket); err != nil {
		return err
	}
	return validName("key", key, maxKeyLen)
}

func validDigest(d string) error {
	if d == "" {
		return nil
	}
	b, err := hex.DecodeString(d)
	if err != nil || len(b) != sha256.Size || hex.EncodeToString(b) != d {
		return fmt.Errorf("%w: state digest %.80q is not 64 lower-case hex digits", errInvalid, d)
	}
	return nil
}

// validate checks everything a batch from the peer must satisfy before it may
// touch the database.
func (b *Batch) validate() error {
	if b.Seq == 0 {
		return fmt.Errorf("%w: batch sequence number 0 (numbering starts at 1)", errInvalid)
	}
	if err := validDigest(b.Prev); err != nil {
		return err
	}
	if len(b.Ops) > maxBatchOps {
		return fmt.Errorf("%w: batch has %d operations, at most %d allowed", errInvalid, len(b.Ops), maxBatchOps)
	}
	for i, op := range b.Ops {
		if err := validOp(op.Bucket, op.Key); err != nil {
			return fmt.Errorf("operation %d: %w", i, err)
		}
	}
	return nil
}

// next returns the state digest after applying b to the state b.Prev.
func (b *Batch) next() string {
	h := sha256.New()
	var n [8]byte
	field := func(p []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write(p)
	}
	num := func(v uint64) {
		binary.BigEndian.PutUint64(n[:], v)
		h.Write(n[:])
	}
	field([]byte(b.Prev))
	num(b.Epoch)
	num(b.Seq)
	num(uint64(len(b.Ops)))
	for _, op := range b.Ops {
		field([]byte(op.Bucket))
		field([]byte(op.Key))
		if op.Value == nil {
			h.Write([]byte{0})
			continue
		}
		h.Write([]byte{1})
		field(op.Value)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// decodeBatch parses and validates a batch received from the peer.
func decodeBatch(data []byte) (Batch, error) {
	if len(data) > MaxBatchBytes {
		return Batch{}, fmt.Errorf("%w: batch of %d bytes is larger than %d", errInvalid, len(data), MaxBatchBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var b Batch
	if err := dec.Decode(&b); err != nil {
		return Batch{}, fmt.Errorf("%w: batch is not valid JSON: %v", errInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Batch{}, fmt.Errorf("%w: trailing data after the batch", errInvalid)
	}
	if err := b.validate(); err != nil {
		return Batch{}, err
	}
	return b, nil
}
