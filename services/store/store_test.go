package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

func openTest(t *testing.T) *Store {
	t.Helper()
	s, err := openStore(filepath.Join(t.TempDir(), "unit.db"), quietLog(), lockTimeout, bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func put(t *testing.T, s *Store, rep Replicator, bucket, key, value string) {
	t.Helper()
	if err := s.Update(context.Background(), rep, func(w Writer) error {
		return w.Put(bucket, key, []byte(value))
	}); err != nil {
		t.Fatalf("put %s/%s: %v", bucket, key, err)
	}
}

func get(t *testing.T, s *Store, bucket, key string) []byte {
	t.Helper()
	var v []byte
	if err := s.View(func(r Reader) error {
		v = r.Get(bucket, key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

// dump returns every user key of the database, for comparing two copies.
func dump(t *testing.T, s *Store, buckets ...string) map[string]string {
	t.Helper()
	m := map[string]string{}
	if err := s.View(func(r Reader) error {
		for _, b := range buckets {
			if err := r.ForEach(b, func(k string, v []byte) error {
				m[b+"/"+k] = string(v)
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestUpdateLocal(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	put(t, s, nil, "vms", "a", "1")
	put(t, s, nil, "vms", "b", "2")
	if got := s.Position(); got != (Position{Epoch: 0, Seq: 2}) {
		t.Fatalf("position %+v, want seq 2", got)
	}
	// A writer sees its own changes; a delete of an absent key and an
	// unchanged fn are no changes.
	err := s.Update(ctx, nil, func(w Writer) error {
		if err := w.Put("vms", "c", nil); err != nil {
			return err
		}
		if v := w.Get("vms", "c"); v == nil || len(v) != 0 {
			return fmt.Errorf("own empty value reads back as %#v", v)
		}
		return w.Delete("vms", "a")
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(ctx, nil, func(w Writer) error { return w.Delete("nothing", "here") }); err != nil {
		t.Fatal(err)
	}
	if got := s.Position().Seq; got != 3 {
		t.Fatalf("seq %d after a no-op update, want 3", got)
	}
	want := map[string]string{"vms/b": "2", "vms/c": ""}
	if got := dump(t, s, "vms", "absent"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("content %v, want %v", got, want)
	}
	// Values handed out are copies.
	v := get(t, s, "vms", "b")
	v[0] = 'x'
	if got := string(get(t, s, "vms", "b")); got != "2" {
		t.Fatalf("value changed through a returned slice: %q", got)
	}
}

func TestWriterRejects(t *testing.T) {
	tests := []struct {
		name        string
		bucket, key string
	}{
		{"empty bucket", "", "k"},
		{"empty key", "b", ""},
		{"reserved bucket", metaBucket, "seq"},
		{"invalid UTF-8", "b", "\xff"},
		{"key too long", "b", strings.Repeat("k", maxKeyLen+1)},
		{"bucket too long", strings.Repeat("b", maxBucketNameLen+1), "k"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTest(t)
			// fn ignores the error: the Update must still fail and change nothing.
			err := s.Update(context.Background(), nil, func(w Writer) error {
				w.Put("ok", "k", []byte("v"))
				w.Put(tt.bucket, tt.key, []byte("v"))
				return nil
			})
			if !errors.Is(err, errInvalid) {
				t.Fatalf("err %v, want invalid", err)
			}
			if get(t, s, "ok", "k") != nil || s.Position().Seq != 0 {
				t.Fatal("a refused update changed the database")
			}
		})
	}
}

type failingReplicator struct{ calls int }

var errPeerDown = errors.New("peer down")

func (f *failingReplicator) Replicate(context.Context, Batch) error {
	f.calls++
	return errPeerDown
}

func TestUpdateNotCommittedWhenReplicationFails(t *testing.T) {
	s := openTest(t)
	put(t, s, nil, "b", "k", "old")
	rep := &failingReplicator{}
	err := s.Update(context.Background(), rep, func(w Writer) error { return w.Put("b", "k", []byte("new")) })
	if !errors.Is(err, errPeerDown) || !strings.Contains(err.Error(), "not replicated to the peer") {
		t.Fatalf("err %v", err)
	}
	if rep.calls != 1 {
		t.Fatalf("replicator called %d times", rep.calls)
	}
	if got := string(get(t, s, "b", "k")); got != "old" || s.Position().Seq != 1 {
		t.Fatalf("after a failed replication: value %q, position %+v", got, s.Position())
	}
	// A change that changes nothing does not need the peer.
	if err := s.Update(context.Background(), rep, func(Writer) error { return nil }); err != nil || rep.calls != 1 {
		t.Fatalf("empty update: err %v, calls %d", err, rep.calls)
	}
}

func TestSetEpoch(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	if err := s.SetEpoch(ctx, nil, 3); err != nil {
		t.Fatal(err)
	}
	if err := s.SetEpoch(ctx, nil, 3); err != nil {
		t.Fatalf("same epoch again: %v", err)
	}
	if err := s.SetEpoch(ctx, nil, 2); err == nil {
		t.Fatal("lowering the epoch was accepted")
	}
	put(t, s, nil, "b", "k", "v")
	if got := s.Position(); got != (Position{Epoch: 3, Seq: 2}) {
		t.Fatalf("position %+v", got)
	}
}

func TestApply(t *testing.T) {
	// The primary's history: batches 1 (epoch 1) and 2 (epoch 1).
	b1 := Batch{Epoch: 1, Seq: 1, Ops: []Op{{Bucket: "b", Key: "k", Value: []byte("1")}}}
	b2 := Batch{Epoch: 1, Seq: 2, Prev: b1.next(), Ops: []Op{{Bucket: "b", Key: "k"}}}
	other := Batch{Epoch: 1, Seq: 2, Prev: b1.next(), Ops: []Op{{Bucket: "b", Key: "x", Value: []byte("y")}}}
	tests := []struct {
		name    string
		batches []Batch
		wantErr error
		wantPos Position
	}{
		{"in order", []Batch{b1, b2}, nil, Position{1, 2}},
		{"retry of the last batch", []Batch{b1, b2, b2}, nil, Position{1, 2}},
		{"missing batch", []Batch{b2}, ErrGap, Position{}},
		{"same number, other history", []Batch{b1, b2, other}, ErrGap, Position{1, 2}},
		{"older batch again", []Batch{b1, b2, b1}, ErrGap, Position{1, 2}},
		{"wrong previous state", []Batch{{Epoch: 1, Seq: 1, Prev: b1.next()}}, ErrGap, Position{}},
		{"stale epoch", []Batch{b1, {Epoch: 2, Seq: 2, Prev: b1.next()}, {Epoch: 1, Seq: 3}}, ErrStaleEpoch, Position{2, 2}},
		{"invalid", []Batch{{Epoch: 1, Seq: 1, Ops: []Op{{Bucket: "", Key: "k"}}}}, errInvalid, Position{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTest(t)
			var err error
			for _, b := range tt.batches {
				if err = s.Apply(b); err != nil {
					break
				}
			}
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
			if got := s.Position(); got != tt.wantPos {
				t.Fatalf("position %+v, want %+v", got, tt.wantPos)
			}
		})
	}
}

func TestApplyMatchesUpdate(t *testing.T) {
	primary, secondary := openTest(t), openTest(t)
	var batches []Batch
	rec := replicatorFunc(func(_ context.Context, b Batch) error {
		batches = append(batches, b)
		return secondary.Apply(b)
	})
	ctx := context.Background()
	put(t, primary, rec, "b", "k", "v")
	if err := primary.SetEpoch(ctx, rec, 5); err != nil {
		t.Fatal(err)
	}
	if err := primary.Update(ctx, rec, func(w Writer) error {
		w.Put("b", "empty", nil)
		return w.Delete("b", "k")
	}); err != nil {
		t.Fatal(err)
	}
	if len(batches) != 3 || primary.Position() != secondary.Position() || primary.Position() != (Position{5, 3}) {
		t.Fatalf("%d batches, positions %+v and %+v", len(batches), primary.Position(), secondary.Position())
	}
	if a, b := dump(t, primary, "b"), dump(t, secondary, "b"); fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("primary %v, secondary %v", a, b)
	}
}

type replicatorFunc func(context.Context, Batch) error

func (f replicatorFunc) Replicate(ctx context.Context, b Batch) error { return f(ctx, b) }

func TestSnapshotRestoreSurvivesReopen(t *testing.T) {
	primary := openTest(t)
	ctx := context.Background()
	if err := primary.SetEpoch(ctx, nil, 2); err != nil {
		t.Fatal(err)
	}
	put(t, primary, nil, "vms", "a", "1")
	var buf bytes.Buffer
	pos, err := primary.WriteSnapshot(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if pos != primary.Position() {
		t.Fatalf("snapshot position %+v, database %+v", pos, primary.Position())
	}

	path := filepath.Join(t.TempDir(), "unit.db")
	secondary, err := Open(path, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	put(t, secondary, nil, "vms", "stale", "x")
	if err := secondary.RestoreSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	if secondary.Position() != pos {
		t.Fatalf("restored position %+v, want %+v", secondary.Position(), pos)
	}
	if err := secondary.Close(); err != nil {
		t.Fatal(err)
	}
	if err := secondary.View(func(Reader) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("View after Close: %v", err)
	}
	secondary, err = Open(path, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer secondary.Close()
	want := map[string]string{"vms/a": "1"}
	if got := dump(t, secondary, "vms"); fmt.Sprint(got) != fmt.Sprint(want) || secondary.Position() != pos {
		t.Fatalf("after reopen: %v at %+v", got, secondary.Position())
	}
	// The restored copy continues the primary's history.
	rec := replicatorFunc(func(_ context.Context, b Batch) error { return secondary.Apply(b) })
	put(t, primary, rec, "vms", "b", "2")
	if secondary.Position() != primary.Position() {
		t.Fatalf("positions %+v and %+v", primary.Position(), secondary.Position())
	}
}

func TestRestoreRefusedLeavesDatabase(t *testing.T) {
	primary := openTest(t)
	put(t, primary, nil, "b", "k", strings.Repeat("p", 100_000))
	put(t, primary, nil, "c", "k", "v")
	if err := primary.SetEpoch(context.Background(), nil, 1); err != nil {
		t.Fatal(err)
	}
	var snap bytes.Buffer
	if _, err := primary.WriteSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	good := snap.Bytes()
	older := openTest(t)
	var olderSnap bytes.Buffer
	if _, err := older.WriteSnapshot(&olderSnap); err != nil {
		t.Fatal(err)
	}
	flipped := append([]byte{}, good...)
	flipped[len(flipped)/2] ^= 1

	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, errInvalid},
		{"truncated to the header", good[:20], errInvalid},
		{"truncated to half", good[:len(good)/2], errInvalid},
		{"checksum missing", good[:len(good)-sha256.Size], errInvalid},
		{"damaged byte", flipped, errInvalid},
		{"trailing data", append(append([]byte{}, good...), 0), errInvalid},
		{"garbage", bytes.Repeat([]byte{0xa5}, 64<<10), errInvalid},
		{"older epoch", olderSnap.Bytes(), ErrStaleEpoch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(filepath.Join(dir, "unit.db"), quietLog())
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.SetEpoch(context.Background(), nil, 1); err != nil {
				t.Fatal(err)
			}
			put(t, s, nil, "b", "mine", "kept")
			before := s.Position()
			err = s.RestoreSnapshot(bytes.NewReader(tt.data))
			if !errors.Is(err, tt.want) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
			if got := string(get(t, s, "b", "mine")); got != "kept" || s.Position() != before {
				t.Fatalf("database changed by a refused restore: %q at %+v", got, s.Position())
			}
			if left, _ := filepath.Glob(filepath.Join(dir, "*"+restoreSuffix+"*")); len(left) != 0 {
				t.Fatalf("temporary files left: %v", left)
			}
		})
	}
}

func TestOpenRemovesInterruptedRestore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "unit.db")
	s, err := Open(path, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	put(t, s, nil, "b", "k", "v")
	s.Close()
	// What a crash in the middle of receiving a snapshot leaves behind.
	tmp := path + restoreSuffix + "123"
	if err := os.WriteFile(tmp, []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if left, _ := filepath.Glob(tmp); len(left) != 0 {
		t.Fatalf("leftover %s not removed", tmp)
	}
	if got := string(get(t, s, "b", "k")); got != "v" {
		t.Fatalf("value %q", got)
	}
}

func TestOpenLockHeld(t *testing.T) {
	path := filepath.Join(t.TempDir(), "unit.db")
	s, err := Open(path, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := time.Now()
	_, err = openStore(path, quietLog(), 100*time.Millisecond, bcrypt.MinCost)
	if err == nil || !strings.Contains(err.Error(), "lock is held by another process") {
		t.Fatalf("second open: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("second open took %s", d)
	}
}

func TestConcurrentUpdatesSerialize(t *testing.T) {
	const workers, each = 4, 10
	primary, secondary := openTest(t), openTest(t)
	rep := replicatorFunc(func(_ context.Context, b Batch) error { return secondary.Apply(b) })
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for range each {
				err := primary.Update(context.Background(), rep, func(w Writer) error {
					n := 0
					if v := w.Get("c", "n"); v != nil {
						fmt.Sscan(string(v), &n)
					}
					return w.Put("c", "n", []byte(fmt.Sprint(n+1)))
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	want := fmt.Sprint(workers * each)
	if p, s := string(get(t, primary, "c", "n")), string(get(t, secondary, "c", "n")); p != want || s != want {
		t.Fatalf("counter %s on the primary, %s on the secondary, want %s", p, s, want)
	}
	if primary.Position() != (Position{0, workers * each}) || secondary.Position() != primary.Position() {
		t.Fatalf("positions %+v and %+v", primary.Position(), secondary.Position())
	}
}

func TestCloseWaitsForReaders(t *testing.T) {
	s := openTest(t)
	inView, release := make(chan struct{}), make(chan struct{})
	viewErr := make(chan error, 1)
	go func() {
		viewErr <- s.View(func(r Reader) error {
			close(inView)
			<-release
			return r.ForEach("b", func(string, []byte) error { return nil })
		})
	}()
	<-inView
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a View was running", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-viewErr; err != nil {
		t.Fatal(err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
}
