package store

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// recordingSink keeps what decodeSnapshot passes on.
type recordingSink struct{ entries []string }

func (r *recordingSink) bucket(name string) error {
	r.entries = append(r.entries, "bucket "+name)
	return nil
}

func (r *recordingSink) put(key string, value []byte) error {
	r.entries = append(r.entries, key+"="+string(value))
	return nil
}

func TestSnapshotEncoding(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	if err := s.SetEpoch(ctx, nil, 7); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(ctx, nil, func(w Writer) error {
		w.Put("z", "b", []byte("2"))
		w.Put("z", "a", []byte("1"))
		return w.Put("a", "k", nil)
	}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	pos, err := s.WriteSnapshot(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var sink recordingSink
	st, err := decodeSnapshot(&buf, &sink)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := s.state()
	if err != nil {
		t.Fatal(err)
	}
	if st != cur || pos != cur.Position {
		t.Fatalf("decoded state %+v, database %+v, returned %+v", st, cur, pos)
	}
	want := "[bucket a k= bucket z a=1 b=2]"
	if got := fmtEntries(sink.entries); got != want {
		t.Fatalf("content %s, want %s", got, want)
	}
}

func fmtEntries(e []string) string {
	var b bytes.Buffer
	b.WriteString("[")
	for i, s := range e {
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteString(s)
	}
	b.WriteString("]")
	return b.String()
}

func FuzzDecodeSnapshot(f *testing.F) {
	s, err := Open(f.TempDir()+"/unit.db", quietLog())
	if err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	if err := s.SetEpoch(ctx, nil, 2); err != nil {
		f.Fatal(err)
	}
	if err := s.Update(ctx, nil, func(w Writer) error {
		w.Put("a", "k", []byte("v"))
		w.Put("a", "l", nil)
		return w.Put("b", "k", bytes.Repeat([]byte("x"), 300))
	}); err != nil {
		f.Fatal(err)
	}
	var snap bytes.Buffer
	if _, err := s.WriteSnapshot(&snap); err != nil {
		f.Fatal(err)
	}
	s.Close()
	f.Add(snap.Bytes())
	f.Add([]byte(snapshotMagic))
	f.Fuzz(func(t *testing.T, data []byte) {
		var sink recordingSink
		_, err := decodeSnapshot(bytes.NewReader(data), &sink)
		if err != nil && !errors.Is(err, errInvalid) {
			t.Fatalf("error %v does not wrap errInvalid", err)
		}
	})
}
