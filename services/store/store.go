// Package store is the unit database: a bbolt file on the data partition of
// each PM. The primary changes it with Update, which replicates every change
// synchronously to the secondary before committing it; the secondary applies
// those changes with Apply, or replaces its whole copy with a snapshot when it
// has missed some. Epochs fence a deposed primary: the secondary refuses
// anything from an epoch older than the one it already has.
package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"golang.org/x/crypto/bcrypt"
)

// Errors of Apply and RestoreSnapshot (also reported by the peer over HTTP).
var (
	// ErrGap: the batch does not follow the last change this database has; the
	// primary must send a snapshot.
	ErrGap = errors.New("batch does not follow this database's last change")
	// ErrStaleEpoch: the change comes from a primary of an older epoch, which
	// has been deposed.
	ErrStaleEpoch = errors.New("change from an older epoch (deposed primary)")
	// ErrClosed: the store was closed, or could not be reopened after a restore.
	ErrClosed = errors.New("unit database is closed")
)

const (
	metaBucket = "_meta"
	// lockTimeout bounds the wait for bbolt's file lock: a second agent (or a
	// stuck one) must give a clear error rather than hang the boot.
	lockTimeout = 5 * time.Second
)

var (
	metaEpoch  = []byte("epoch")
	metaSeq    = []byte("seq")
	metaDigest = []byte("digest")
)

// Store is the unit database. All methods are safe for concurrent use.
type Store struct {
	log         *slog.Logger
	path        string
	lockTimeout time.Duration
	bcryptCost  int // bcrypt.DefaultCost; lowered by tests only
	dummyHash   func() []byte

	restoreMu sync.Mutex // one RestoreSnapshot at a time

	// mu guards db, users and swapping; cond is broadcast whenever users drops
	// to zero or a swap ends. Users of db do not block a waiting swap from
	// admitting more users (an Update replicating may need a snapshot of the
	// same store), so a swap waits for a moment with no user at all.
	mu       sync.Mutex
	cond     *sync.Cond
	users    int
	swapping bool
	db       *bolt.DB
}

// Open opens (creating if needed, mode 0600) the database at path.
func Open(path string, log *slog.Logger) (*Store, error) {
	return openStore(path, log, lockTimeout, bcrypt.DefaultCost)
}

func openStore(path string, log *slog.Logger, timeout time.Duration, cost int) (*Store, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &Store{log: log, path: path, lockTimeout: timeout, bcryptCost: cost}
	s.cond = sync.NewCond(&s.mu)
	s.dummyHash = sync.OnceValue(func() []byte { return dummyPasswordHash(cost) })
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open unit database: %w", err)
	}
	// Temporary files of a restore interrupted by a crash: the rename never
	// happened, so the database itself is the old one and intact.
	leftovers, _ := filepath.Glob(path + restoreSuffix + "*")
	for _, f := range leftovers {
		if err := os.Remove(f); err != nil {
			return nil, fmt.Errorf("open unit database: remove leftover of an interrupted restore: %w", err)
		}
		log.Warn("removed leftover of an interrupted snapshot restore", "file", f)
	}
	db, err := s.openDB()
	if err != nil {
		return nil, err
	}
	s.db = db
	pos, err := s.position()
	if err != nil {
		db.Close()
		return nil, err
	}
	log.Info("unit database open", "path", path, "epoch", pos.Epoch, "seq", pos.Seq)
	return s, nil
}

func (s *Store) openDB() (*bolt.DB, error) {
	db, err := bolt.Open(s.path, 0o600, &bolt.Options{Timeout: s.lockTimeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open unit database %s: its lock is held by another process (gave up after %s): %w", s.path, s.lockTimeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open unit database %s: %w", s.path, err)
	}
	// bbolt applies the mode only when it creates the file.
	if err := os.Chmod(s.path, 0o600); err != nil {
		db.Close()
		return nil, fmt.Errorf("open unit database: %w", err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists([]byte(metaBucket))
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open unit database %s: %w", s.path, err)
	}
	return db, nil
}

// Close closes the database, waiting for running transactions to end.
func (s *Store) Close() error {
	var err error
	swapErr := s.swap(func(db *bolt.DB) *bolt.DB {
		err = db.Close()
		return nil
	})
	if swapErr != nil {
		return swapErr
	}
	if err != nil {
		return fmt.Errorf("close unit database: %w", err)
	}
	return nil
}

// acquire returns the open database and must be paired with release.
func (s *Store) acquire() (*bolt.DB, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.swapping {
		s.cond.Wait()
	}
	if s.db == nil {
		return nil, ErrClosed
	}
	s.users++
	return s.db, nil
}

func (s *Store) release() {
	s.mu.Lock()
	s.users--
	if s.users == 0 {
		s.cond.Broadcast()
	}
	s.mu.Unlock()
}

// swap runs fn with no other user of the database and installs the database
// fn returns (nil: closed).
func (s *Store) swap(fn func(old *bolt.DB) *bolt.DB) error {
	s.mu.Lock()
	for s.users > 0 || s.swapping {
		s.cond.Wait()
	}
	if s.db == nil {
		s.mu.Unlock()
		return ErrClosed
	}
	s.swapping = true
	old := s.db
	s.mu.Unlock()

	db := fn(old)

	s.mu.Lock()
	s.db = db
	s.swapping = false
	s.cond.Broadcast()
	s.mu.Unlock()
	return nil
}

// Reader reads the database inside one consistent transaction.
type Reader interface {
	// Get returns a copy of the value, nil if the key or bucket is absent.
	Get(bucket, key string) []byte
	// ForEach calls fn for every key of the bucket in key order with a copy of
	// the value; an absent bucket has no keys. An error of fn stops the walk.
	ForEach(bucket string, fn func(k string, v []byte) error) error
}

// Writer changes the database inside Update. A failed Put or Delete also
// fails the Update, even if fn ignores the error.
type Writer interface {
	Reader
	// Put stores a copy of v (nil stores an empty value). The bucket is
	// created on demand.
	Put(bucket, key string, v []byte) error
	// Delete removes the key; deleting an absent key is not a change.
	Delete(bucket, key string) error
}

type reader struct{ tx *bolt.Tx }

func (r reader) Get(bucket, key string) []byte {
	if validBucket(bucket) != nil {
		return nil
	}
	b := r.tx.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	v := b.Get([]byte(key))
	if v == nil {
		return nil
	}
	return append([]byte{}, v...)
}

func (r reader) ForEach(bucket string, fn func(k string, v []byte) error) error {
	if err := validBucket(bucket); err != nil {
		return err
	}
	b := r.tx.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	return b.ForEach(func(k, v []byte) error {
		if v == nil {
			return nil // a nested bucket; the store never creates them
		}
		return fn(string(k), append([]byte{}, v...))
	})
}

type writer struct {
	reader
	ops     []Op
	payload int
	err     error // first failure, sticky
}

func (w *writer) fail(err error) error {
	if w.err == nil {
		w.err = err
	}
	return err
}

func (w *writer) grow(op Op) error {
	w.payload += len(op.Bucket) + len(op.Key) + len(op.Value)
	if w.payload > maxBatchPayload || len(w.ops) >= maxBatchOps {
		return w.fail(fmt.Errorf("%w: change too large for one replicated batch (at most %d operations, %d bytes)", errInvalid, maxBatchOps, maxBatchPayload))
	}
	w.ops = append(w.ops, op)
	return nil
}

func (w *writer) Put(bucket, key string, v []byte) error {
	if err := validOp(bucket, key); err != nil {
		return w.fail(err)
	}
	op := Op{Bucket: bucket, Key: key, Value: append([]byte{}, v...)}
	if err := w.grow(op); err != nil {
		return err
	}
	if err := applyOp(w.tx, op); err != nil {
		return w.fail(err)
	}
	return nil
}

func (w *writer) Delete(bucket, key string) error {
	if err := validOp(bucket, key); err != nil {
		return w.fail(err)
	}
	if b := w.tx.Bucket([]byte(bucket)); b == nil || b.Get([]byte(key)) == nil {
		return nil
	}
	op := Op{Bucket: bucket, Key: key}
	if err := w.grow(op); err != nil {
		return err
	}
	if err := applyOp(w.tx, op); err != nil {
		return w.fail(err)
	}
	return nil
}

func applyOp(tx *bolt.Tx, op Op) error {
	if op.Value == nil {
		b := tx.Bucket([]byte(op.Bucket))
		if b == nil {
			return nil
		}
		if err := b.Delete([]byte(op.Key)); err != nil {
			return fmt.Errorf("delete %s/%s: %w", op.Bucket, op.Key, err)
		}
		return nil
	}
	b, err := tx.CreateBucketIfNotExists([]byte(op.Bucket))
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", op.Bucket, err)
	}
	if err := b.Put([]byte(op.Key), op.Value); err != nil {
		return fmt.Errorf("put %s/%s: %w", op.Bucket, op.Key, err)
	}
	return nil
}

// View runs fn in a read-only transaction.
func (s *Store) View(fn func(r Reader) error) error {
	db, err := s.acquire()
	if err != nil {
		return err
	}
	defer s.release()
	return db.View(func(tx *bolt.Tx) error { return fn(reader{tx}) })
}

// state is what the meta bucket records about the database's history.
type state struct {
	Position
	Digest string
}

func readState(tx *bolt.Tx) (state, error) {
	m := tx.Bucket([]byte(metaBucket))
	if m == nil {
		return state{}, fmt.Errorf("unit database has no %s bucket", metaBucket)
	}
	var st state
	for _, f := range []struct {
		key []byte
		v   *uint64
	}{{metaEpoch, &st.Epoch}, {metaSeq, &st.Seq}} {
		raw := m.Get(f.key)
		if raw == nil {
			continue
		}
		if len(raw) != 8 {
			return state{}, fmt.Errorf("unit database meta %s has %d bytes, want 8", f.key, len(raw))
		}
		*f.v = binary.BigEndian.Uint64(raw)
	}
	st.Digest = string(m.Get(metaDigest))
	if err := validDigest(st.Digest); err != nil {
		return state{}, fmt.Errorf("unit database meta: %w", err)
	}
	return st, nil
}

func writeState(tx *bolt.Tx, st state) error {
	m := tx.Bucket([]byte(metaBucket))
	if m == nil {
		return fmt.Errorf("unit database has no %s bucket", metaBucket)
	}
	if err := m.Put(metaEpoch, binary.BigEndian.AppendUint64(nil, st.Epoch)); err != nil {
		return err
	}
	if err := m.Put(metaSeq, binary.BigEndian.AppendUint64(nil, st.Seq)); err != nil {
		return err
	}
	return m.Put(metaDigest, []byte(st.Digest))
}

func (s *Store) state() (state, error) {
	db, err := s.acquire()
	if err != nil {
		return state{}, err
	}
	defer s.release()
	var st state
	err = db.View(func(tx *bolt.Tx) error {
		st, err = readState(tx)
		return err
	})
	return st, err
}

func (s *Store) position() (Position, error) {
	st, err := s.state()
	return st.Position, err
}

// Position returns the position of the last committed change; the zero
// Position if the database is closed (logged).
func (s *Store) Position() Position {
	pos, err := s.position()
	if err != nil {
		s.log.Warn("unit database position unavailable", "err", err)
	}
	return pos
}

// Replicator sends a batch to the peer and returns once the peer has it.
type Replicator interface {
	Replicate(ctx context.Context, b Batch) error
}

// Update runs fn in a write transaction and commits what it changed as one
// batch with the next sequence number.
//
// If rep is not nil the batch is replicated before the commit, and a
// replication error rolls everything back: no change is acknowledged on the
// primary that the secondary does not have. The caller passes rep == nil only
// when the peer is known lost. bbolt's write lock is held while replicating,
// so concurrent Updates wait for the peer's answer; acceptable because changes
// are rare (state transitions, not data path) and it keeps batches in order.
func (s *Store) Update(ctx context.Context, rep Replicator, fn func(w Writer) error) error {
	return s.commit(ctx, rep, func(tx *bolt.Tx, cur state) (Batch, error) {
		w := &writer{reader: reader{tx}}
		if err := fn(w); err != nil {
			return Batch{}, err
		}
		if w.err != nil {
			return Batch{}, w.err
		}
		return Batch{Epoch: cur.Epoch, Ops: w.ops}, nil
	})
}

// SetEpoch raises the epoch, recorded and replicated like any change (a batch
// without operations). Setting the current epoch again is a no-op; lowering it
// is refused.
func (s *Store) SetEpoch(ctx context.Context, rep Replicator, epoch uint64) error {
	return s.commit(ctx, rep, func(_ *bolt.Tx, cur state) (Batch, error) {
		if epoch < cur.Epoch {
			return Batch{}, fmt.Errorf("set epoch %d: the database is already at epoch %d and epochs only go up", epoch, cur.Epoch)
		}
		return Batch{Epoch: epoch}, nil
	})
}

// commit builds a batch in a write transaction; a batch that changes neither
// data nor epoch is not a change and is rolled back.
func (s *Store) commit(ctx context.Context, rep Replicator, build func(tx *bolt.Tx, cur state) (Batch, error)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	db, err := s.acquire()
	if err != nil {
		return err
	}
	defer s.release()
	tx, err := db.Begin(true)
	if err != nil {
		return fmt.Errorf("unit database: %w", err)
	}
	defer tx.Rollback()
	cur, err := readState(tx)
	if err != nil {
		return err
	}
	b, err := build(tx, cur)
	if err != nil {
		return err
	}
	if len(b.Ops) == 0 && b.Epoch == cur.Epoch {
		return nil
	}
	b.Seq = cur.Seq + 1
	b.Prev = cur.Digest
	if err := writeState(tx, state{Position{b.Epoch, b.Seq}, b.next()}); err != nil {
		return fmt.Errorf("unit database: %w", err)
	}
	if rep != nil {
		if err := rep.Replicate(ctx, b); err != nil {
			return fmt.Errorf("not replicated to the peer: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit to the unit database: %w", err)
	}
	s.log.Debug("unit database change", "epoch", b.Epoch, "seq", b.Seq, "ops", len(b.Ops), "replicated", rep != nil)
	return nil
}

// Apply applies a batch from the primary (secondary side). A retry of the
// batch last applied is a no-op; a batch from an older epoch fails with
// ErrStaleEpoch; a batch that does not follow this database's last change
// (missed changes, or a different history) fails with ErrGap. A refused batch
// changes nothing.
func (s *Store) Apply(b Batch) error {
	if err := b.validate(); err != nil {
		return fmt.Errorf("apply batch: %w", err)
	}
	db, err := s.acquire()
	if err != nil {
		return err
	}
	defer s.release()
	next := b.next()
	return db.Update(func(tx *bolt.Tx) error {
		cur, err := readState(tx)
		if err != nil {
			return err
		}
		switch {
		case b.Epoch < cur.Epoch:
			return fmt.Errorf("%w: batch %d of epoch %d, this database is at epoch %d", ErrStaleEpoch, b.Seq, b.Epoch, cur.Epoch)
		case b.Seq == cur.Seq && next == cur.Digest:
			return nil // a retry of the last batch
		case b.Seq != cur.Seq+1 || b.Prev != cur.Digest:
			return fmt.Errorf("%w: batch %d (epoch %d) does not follow change %d (epoch %d) of this database", ErrGap, b.Seq, b.Epoch, cur.Seq, cur.Epoch)
		}
		for _, op := range b.Ops {
			if err := applyOp(tx, op); err != nil {
				return err
			}
		}
		return writeState(tx, state{Position{b.Epoch, b.Seq}, next})
	})
}
