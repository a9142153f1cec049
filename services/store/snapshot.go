package store

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

// MaxSnapshotBytes bounds a snapshot received from the peer.
const MaxSnapshotBytes = 1 << 30

// restoreSuffix names the temporary database a restore builds next to the
// database; Open removes leftovers of a crash.
const restoreSuffix = ".restore-"

// A snapshot is a logical copy of the database rather than bbolt's file
// (Tx.WriteTo): the receiver parses it with the strict decoder below and
// builds a fresh database from it, because bbolt is not hardened against a
// damaged file (a corrupt page can fault through the memory map or loop
// forever), and a snapshot crosses the network.
//
//	"DYADSNAP" u32 version
//	u64 epoch, u64 seq, u8 digest length (0 or 64), digest
//	records: 0x01 u16 length, bucket name        (buckets in byte order)
//	         0x02 u16 length, key, u32 length, value (keys in byte order)
//	0x00, SHA-256 of everything before the 0x00 (catches truncation and damage)
//
// All integers are big-endian.
const (
	snapshotMagic   = "DYADSNAP"
	snapshotVersion = 1
	recEnd          = 0x00
	recBucket       = 0x01
	recKey          = 0x02
	// maxValueLen: Update never produces a larger value (maxBatchPayload), so
	// a larger one is damage, and refusing it bounds what one record allocates.
	maxValueLen = maxBatchPayload
	// restoreTxBytes bounds the data of one write transaction while building
	// the restored database, so memory stays small for a large snapshot.
	restoreTxBytes = 32 << 20
)

// WriteSnapshot writes a consistent copy of the committed database to w and
// returns the position it contains.
func (s *Store) WriteSnapshot(w io.Writer) (Position, error) {
	var pos Position
	err := s.withSnapshot(false, func(st state, writeTo func(io.Writer) error) error {
		pos = st.Position
		return writeTo(w)
	})
	return pos, err
}

// withSnapshot runs fn with a transaction to copy. With exclusive set it is a
// write transaction (rolled back), so no Update is in flight: a change already
// replicated but not yet committed cannot be missing from the copy.
func (s *Store) withSnapshot(exclusive bool, fn func(st state, writeTo func(io.Writer) error) error) error {
	db, err := s.acquire()
	if err != nil {
		return err
	}
	defer s.release()
	tx, err := db.Begin(exclusive)
	if err != nil {
		return fmt.Errorf("unit database snapshot: %w", err)
	}
	defer tx.Rollback()
	st, err := readState(tx)
	if err != nil {
		return err
	}
	return fn(st, func(w io.Writer) error {
		if err := encodeSnapshot(w, tx, st); err != nil {
			return fmt.Errorf("write unit database snapshot: %w", err)
		}
		return nil
	})
}

func encodeSnapshot(w io.Writer, tx *bolt.Tx, st state) error {
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, h), 64<<10)
	var buf []byte
	buf = append(buf, snapshotMagic...)
	buf = binary.BigEndian.AppendUint32(buf, snapshotVersion)
	buf = binary.BigEndian.AppendUint64(buf, st.Epoch)
	buf = binary.BigEndian.AppendUint64(buf, st.Seq)
	buf = append(buf, byte(len(st.Digest)))
	buf = append(buf, st.Digest...)
	if _, err := bw.Write(buf); err != nil {
		return err
	}
	err := tx.ForEach(func(name []byte, b *bolt.Bucket) error {
		if string(name) == metaBucket {
			return nil
		}
		rec := append([]byte{recBucket}, binary.BigEndian.AppendUint16(nil, uint16(len(name)))...)
		if _, err := bw.Write(append(rec, name...)); err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			if v == nil {
				return nil // a nested bucket; the store never creates them
			}
			rec := append([]byte{recKey}, binary.BigEndian.AppendUint16(nil, uint16(len(k)))...)
			rec = append(rec, k...)
			rec = binary.BigEndian.AppendUint32(rec, uint32(len(v)))
			if _, err := bw.Write(rec); err != nil {
				return err
			}
			_, err := bw.Write(v)
			return err
		})
	})
	if err != nil {
		return err
	}
	if err := bw.WriteByte(recEnd); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err = w.Write(h.Sum(nil))
	return err
}

// RestoreSnapshot replaces the whole database with a snapshot written by
// WriteSnapshot (secondary side) and takes over its position. The snapshot is
// built into a temporary database, synced, and only then atomically renamed
// over the database, so a truncated, damaged or refused snapshot (ErrStaleEpoch:
// an older epoch than this database's) leaves the database as it was.
func (s *Store) RestoreSnapshot(r io.Reader) error {
	s.restoreMu.Lock()
	defer s.restoreMu.Unlock()

	tmp, snap, err := s.build(r)
	if err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	defer os.Remove(tmp) // no-op once renamed

	var restoreErr error
	swapErr := s.swap(func(old *bolt.DB) *bolt.DB {
		var cur state
		if err := old.View(func(tx *bolt.Tx) (err error) {
			cur, err = readState(tx)
			return err
		}); err != nil {
			restoreErr = err
			return old
		}
		if snap.Epoch < cur.Epoch {
			restoreErr = fmt.Errorf("%w: snapshot of epoch %d, this database is at epoch %d", ErrStaleEpoch, snap.Epoch, cur.Epoch)
			return old
		}
		if err := old.Close(); err != nil {
			restoreErr = fmt.Errorf("close the unit database: %w", err)
			return old
		}
		if err := os.Rename(tmp, s.path); err != nil {
			restoreErr = err
		} else if err := syncDir(filepath.Dir(s.path)); err != nil {
			restoreErr = err
		}
		// Whether or not the rename happened, reopen what is at s.path.
		db, err := s.openDB()
		if err != nil {
			s.log.Error("unit database unavailable after a snapshot restore", "err", err)
			restoreErr = errors.Join(restoreErr, err)
			return nil
		}
		return db
	})
	if err := errors.Join(swapErr, restoreErr); err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	s.log.Info("unit database replaced by a snapshot", "epoch", snap.Epoch, "seq", snap.Seq)
	return nil
}

// build decodes the snapshot into a new database file next to the database
// and returns its name and state; on error nothing is left behind.
func (s *Store) build(r io.Reader) (name string, st state, err error) {
	f, err := os.CreateTemp(filepath.Dir(s.path), filepath.Base(s.path)+restoreSuffix+"*")
	if err != nil {
		return "", state{}, err
	}
	tmp := f.Name()
	f.Close()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	db, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: s.lockTimeout})
	if err != nil {
		return "", state{}, err
	}
	defer func() {
		if cerr := db.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	l := &loader{db: db}
	st, err = decodeSnapshot(r, l)
	if err != nil {
		l.abort()
		return "", state{}, err
	}
	if err := l.finish(st); err != nil {
		return "", state{}, err
	}
	return tmp, st, nil
}

// snapshotSink receives the decoded content of a snapshot in order.
type snapshotSink interface {
	bucket(name string) error
	put(key string, value []byte) error
}

// loader writes a decoded snapshot into a bbolt database, in transactions of
// bounded size.
type loader struct {
	db     *bolt.DB
	tx     *bolt.Tx
	b      string
	txSize int
}

func (l *loader) begin() error {
	if l.tx != nil {
		return nil
	}
	tx, err := l.db.Begin(true)
	if err != nil {
		return err
	}
	l.tx, l.txSize = tx, 0
	if l.b != "" {
		_, err = tx.CreateBucketIfNotExists([]byte(l.b))
	}
	return err
}

func (l *loader) bucket(name string) error {
	l.b = name
	if err := l.begin(); err != nil {
		return err
	}
	_, err := l.tx.CreateBucketIfNotExists([]byte(name))
	return err
}

func (l *loader) put(key string, value []byte) error {
	if err := l.begin(); err != nil {
		return err
	}
	if err := l.tx.Bucket([]byte(l.b)).Put([]byte(key), value); err != nil {
		return err
	}
	l.txSize += len(key) + len(value)
	if l.txSize < restoreTxBytes {
		return nil
	}
	err := l.tx.Commit()
	l.tx = nil
	return err
}

func (l *loader) finish(st state) error {
	if err := l.begin(); err != nil {
		return err
	}
	_, err := l.tx.CreateBucketIfNotExists([]byte(metaBucket))
	if err == nil {
		err = writeState(l.tx, st)
	}
	if err != nil {
		l.abort()
		return err
	}
	err = l.tx.Commit()
	l.tx = nil
	return err
}

func (l *loader) abort() {
	if l.tx != nil {
		l.tx.Rollback()
		l.tx = nil
	}
}

// hashReader hashes what it reads.
type hashReader struct {
	r *bufio.Reader
	h hash.Hash
}

func (hr *hashReader) Read(p []byte) (int, error) {
	n, err := hr.r.Read(p)
	hr.h.Write(p[:n])
	return n, err
}

func (hr *hashReader) full(n int) ([]byte, error) {
	p := make([]byte, n)
	if _, err := io.ReadFull(hr, p); err != nil {
		return nil, truncated(err)
	}
	return p, nil
}

func (hr *hashReader) number(size int) (uint64, error) {
	p, err := hr.full(size)
	if err != nil {
		return 0, err
	}
	var v uint64
	for _, c := range p {
		v = v<<8 | uint64(c)
	}
	return v, nil
}

func truncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: snapshot truncated", errInvalid)
	}
	return fmt.Errorf("receive snapshot: %w", err)
}

// decodeSnapshot checks the snapshot while passing its content to sink and
// returns the state it carries. Nothing of an invalid snapshot may be used:
// the final checksum is only known at the end.
func decodeSnapshot(r io.Reader, sink snapshotSink) (state, error) {
	lr := &io.LimitedReader{R: r, N: MaxSnapshotBytes + 1}
	hr := &hashReader{r: bufio.NewReaderSize(lr, 64<<10), h: sha256.New()}
	head, err := hr.full(len(snapshotMagic) + 4 + 8 + 8 + 1)
	if err != nil {
		return state{}, err
	}
	if string(head[:len(snapshotMagic)]) != snapshotMagic {
		return state{}, fmt.Errorf("%w: not a unit database snapshot", errInvalid)
	}
	head = head[len(snapshotMagic):]
	if v := binary.BigEndian.Uint32(head); v != snapshotVersion {
		return state{}, fmt.Errorf("%w: snapshot format version %d, this PM reads version %d", errInvalid, v, snapshotVersion)
	}
	st := state{Position: Position{Epoch: binary.BigEndian.Uint64(head[4:]), Seq: binary.BigEndian.Uint64(head[12:])}}
	digest, err := hr.full(int(head[20]))
	if err != nil {
		return state{}, err
	}
	st.Digest = string(digest)
	if err := validDigest(st.Digest); err != nil {
		return state{}, err
	}

	var bucket, key []byte
	haveBucket := false
	for {
		tag, err := hr.number(1)
		if err != nil {
			return state{}, err
		}
		switch tag {
		case recEnd:
			sum := hr.h.Sum(nil)
			got := make([]byte, sha256.Size)
			if _, err := io.ReadFull(hr.r, got); err != nil {
				return state{}, truncated(err)
			}
			if !bytes.Equal(got, sum) {
				return state{}, fmt.Errorf("%w: snapshot checksum mismatch (damaged in transit)", errInvalid)
			}
			if _, err := hr.r.ReadByte(); err != io.EOF {
				if lr.N <= 0 {
					return state{}, fmt.Errorf("%w: snapshot larger than %d bytes", errInvalid, MaxSnapshotBytes)
				}
				return state{}, fmt.Errorf("%w: data after the end of the snapshot", errInvalid)
			}
			return st, nil
		case recBucket:
			n, err := hr.number(2)
			if err != nil {
				return state{}, err
			}
			name, err := hr.full(int(n))
			if err != nil {
				return state{}, err
			}
			if err := validBucket(string(name)); err != nil {
				return state{}, err
			}
			if haveBucket && bytes.Compare(name, bucket) <= 0 {
				return state{}, fmt.Errorf("%w: snapshot bucket %q out of order", errInvalid, name)
			}
			bucket, key, haveBucket = name, nil, true
			if err := sink.bucket(string(name)); err != nil {
				return state{}, err
			}
		case recKey:
			if !haveBucket {
				return state{}, fmt.Errorf("%w: snapshot key outside a bucket", errInvalid)
			}
			n, err := hr.number(2)
			if err != nil {
				return state{}, err
			}
			k, err := hr.full(int(n))
			if err != nil {
				return state{}, err
			}
			if err := validName("key", string(k), maxKeyLen); err != nil {
				return state{}, err
			}
			if key != nil && bytes.Compare(k, key) <= 0 {
				return state{}, fmt.Errorf("%w: snapshot key %q of bucket %q out of order", errInvalid, k, bucket)
			}
			key = k
			vn, err := hr.number(4)
			if err != nil {
				return state{}, err
			}
			if vn > maxValueLen {
				return state{}, fmt.Errorf("%w: snapshot value of %d bytes is larger than %d", errInvalid, vn, maxValueLen)
			}
			v, err := hr.full(int(vn))
			if err != nil {
				return state{}, err
			}
			if err := sink.put(string(k), v); err != nil {
				return state{}, err
			}
		default:
			return state{}, fmt.Errorf("%w: unknown snapshot record type %#x", errInvalid, tag)
		}
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
