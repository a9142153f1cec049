package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// peer is a secondary served over TLS the way the agent mounts it.
type peer struct {
	store     *Store
	srv       *httptest.Server
	url       string
	snapshots atomic.Int32
}

func newPeer(t *testing.T) *peer {
	t.Helper()
	p := &peer{store: openTest(t)}
	mux := http.NewServeMux()
	h := http.StripPrefix("/peer/v1/db/", p.store.PeerHandler())
	mux.Handle("/peer/v1/db/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			p.snapshots.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	p.srv = httptest.NewTLSServer(mux)
	t.Cleanup(p.srv.Close)
	p.url = p.srv.URL + "/peer/v1/db/"
	return p
}

func (p *peer) replicator(source *Store, urls ...string) *HTTPReplicator {
	return &HTTPReplicator{
		Client: p.srv.Client(),
		URLs:   func() []string { return append(urls, p.url) },
		Source: source,
	}
}

// deadURL is an address nothing listens on.
func deadURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "https://" + addr + "/peer/v1/db/"
}

func assertSame(t *testing.T, a, b *Store, buckets ...string) {
	t.Helper()
	if a.Position() != b.Position() {
		t.Fatalf("positions differ: %+v and %+v", a.Position(), b.Position())
	}
	if da, db := dump(t, a, buckets...), dump(t, b, buckets...); fmt.Sprint(da) != fmt.Sprint(db) {
		t.Fatalf("contents differ:\n%v\n%v", da, db)
	}
}

func TestHTTPReplication(t *testing.T) {
	ctx := context.Background()
	primary, sec := openTest(t), newPeer(t)
	// The preferred path is dead: the next one is used.
	rep := sec.replicator(primary, deadURL(t))
	if err := primary.SetEpoch(ctx, rep, 1); err != nil {
		t.Fatal(err)
	}
	put(t, primary, rep, "vms", "a", "1")
	if err := primary.Update(ctx, rep, func(w Writer) error {
		w.Put("vms", "empty", []byte{})
		w.Put("pms", "1", []byte("pm1"))
		return w.Delete("vms", "a")
	}); err != nil {
		t.Fatal(err)
	}
	assertSame(t, primary, sec.store, "vms", "pms")
	if primary.Position() != (Position{1, 3}) || sec.snapshots.Load() != 0 {
		t.Fatalf("position %+v, %d snapshots", primary.Position(), sec.snapshots.Load())
	}
	if v := get(t, sec.store, "vms", "empty"); v == nil || len(v) != 0 {
		t.Fatalf("empty value replicated as %#v", v)
	}
}

func TestHTTPReplicationGapSendsSnapshot(t *testing.T) {
	tests := []struct {
		name string
		// diverge prepares the secondary and the primary before replication.
		diverge func(t *testing.T, primary, secondary *Store)
	}{
		{"secondary missed changes", func(t *testing.T, primary, _ *Store) {
			put(t, primary, nil, "b", "1", "while the peer was lost")
			put(t, primary, nil, "b", "2", "while the peer was lost")
		}},
		{"secondary has another history", func(t *testing.T, primary, secondary *Store) {
			put(t, primary, nil, "b", "1", "primary")
			put(t, secondary, nil, "b", "other", "secondary alone")
		}},
		{"secondary is ahead", func(t *testing.T, _, secondary *Store) {
			put(t, secondary, nil, "b", "1", "x")
			put(t, secondary, nil, "b", "2", "y")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			primary, sec := openTest(t), newPeer(t)
			tt.diverge(t, primary, sec.store)
			put(t, primary, sec.replicator(primary), "b", "now", "replicated")
			assertSame(t, primary, sec.store, "b")
			if n := sec.snapshots.Load(); n != 1 {
				t.Fatalf("%d snapshots sent, want 1", n)
			}
		})
	}
}

func TestHTTPReplicationStaleEpochDeposes(t *testing.T) {
	ctx := context.Background()
	primary, sec := openTest(t), newPeer(t)
	rep := sec.replicator(primary)
	if err := primary.SetEpoch(ctx, rep, 1); err != nil {
		t.Fatal(err)
	}
	// The peer was promoted meanwhile.
	if err := sec.store.SetEpoch(ctx, nil, 2); err != nil {
		t.Fatal(err)
	}
	err := primary.Update(ctx, rep, func(w Writer) error { return w.Put("b", "k", []byte("v")) })
	if !errors.Is(err, ErrDeposed) {
		t.Fatalf("err %v, want ErrDeposed", err)
	}
	if get(t, primary, "b", "k") != nil || get(t, sec.store, "b", "k") != nil {
		t.Fatal("a deposed primary's change was stored")
	}
	// Sync from the deposed primary is refused too.
	if err := rep.Sync(ctx); !errors.Is(err, ErrDeposed) {
		t.Fatalf("sync: %v, want ErrDeposed", err)
	}
}

func TestHTTPSync(t *testing.T) {
	ctx := context.Background()
	primary, sec := openTest(t), newPeer(t)
	put(t, primary, nil, "b", "k", "v")
	rep := sec.replicator(primary, deadURL(t))
	if err := rep.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	assertSame(t, primary, sec.store, "b")
	if err := rep.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n := sec.snapshots.Load(); n != 1 {
		t.Fatalf("%d snapshots, want 1 (the second Sync found the peer equal)", n)
	}
	put(t, primary, rep, "b", "k2", "v2")
	assertSame(t, primary, sec.store, "b")
}

func TestHTTPReplicationUnreachable(t *testing.T) {
	primary, sec := openTest(t), newPeer(t)
	rep := &HTTPReplicator{Client: sec.srv.Client(), URLs: func() []string { return []string{deadURL(t), deadURL(t)} }, Source: primary}
	err := primary.Update(context.Background(), rep, func(w Writer) error { return w.Put("b", "k", []byte("v")) })
	if err == nil || !strings.Contains(err.Error(), "unreachable on every path") {
		t.Fatalf("err %v", err)
	}
	rep.URLs = func() []string { return nil }
	if err := rep.Sync(context.Background()); err == nil {
		t.Fatal("sync without addresses succeeded")
	}
	if primary.Position().Seq != 0 {
		t.Fatal("an unreplicated change was committed")
	}
}

// A snapshot upload cut short must leave the secondary's database intact.
func TestHTTPSnapshotInterrupted(t *testing.T) {
	primary, sec := openTest(t), newPeer(t)
	put(t, primary, nil, "b", "k", strings.Repeat("p", 200_000))
	var snap bytes.Buffer
	if _, err := primary.WriteSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	put(t, sec.store, nil, "b", "mine", "kept")
	before := sec.store.Position()

	cut := errors.New("connection cut")
	body := io.MultiReader(bytes.NewReader(snap.Bytes()[:snap.Len()/2]), iotestErrReader{cut})
	req, err := http.NewRequest(http.MethodPut, sec.url+"snapshot", body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(snap.Len())
	if resp, err := sec.srv.Client().Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("a truncated snapshot was accepted")
		}
	}
	// The handler may still be running after the client gave up; Close waits
	// for it.
	sec.srv.Close()
	if got := string(get(t, sec.store, "b", "mine")); got != "kept" || sec.store.Position() != before {
		t.Fatalf("secondary changed: %q at %+v", got, sec.store.Position())
	}
}

type iotestErrReader struct{ err error }

func (r iotestErrReader) Read([]byte) (int, error) { return 0, r.err }

func TestPeerHandlerRefusals(t *testing.T) {
	sec := newPeer(t)
	big := `{"epoch":1,"seq":1,"prev":"","ops":[{"bucket":"b","key":"k","value":"` + strings.Repeat("A", MaxBatchBytes) + `"}]}`
	tests := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"unknown endpoint", http.MethodGet, "nothing", "", http.StatusNotFound, codeInvalid},
		{"wrong method", http.MethodGet, "apply", "", http.StatusMethodNotAllowed, codeInvalid},
		{"not JSON", http.MethodPost, "apply", "{", http.StatusBadRequest, codeInvalid},
		{"unknown field", http.MethodPost, "apply", `{"epoch":1,"seq":1,"extra":1}`, http.StatusBadRequest, codeInvalid},
		{"reserved bucket", http.MethodPost, "apply", `{"epoch":1,"seq":1,"ops":[{"bucket":"_meta","key":"seq","value":"AA=="}]}`, http.StatusBadRequest, codeInvalid},
		{"too large", http.MethodPost, "apply", big, http.StatusRequestEntityTooLarge, codeTooLarge},
		{"gap", http.MethodPost, "apply", `{"epoch":1,"seq":5,"ops":[]}`, http.StatusConflict, codeGap},
		{"garbage snapshot", http.MethodPut, "snapshot", "not a database", http.StatusBadRequest, codeInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, sec.url+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := sec.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var pe peerError
			if err := json.NewDecoder(resp.Body).Decode(&pe); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status || pe.Code != tt.code || pe.Error == "" {
				t.Fatalf("got %d %+v, want %d %s", resp.StatusCode, pe, tt.status, tt.code)
			}
			if sec.store.Position() != (Position{}) {
				t.Fatal("a refused request changed the database")
			}
		})
	}
}

// A path that accepts connections but never answers (a silently cut link)
// must fail over to the next path within AttemptTimeout.
func TestHTTPReplicationHungPathFailsOver(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered, until the test ends
		}
	}()
	primary, sec := openTest(t), newPeer(t)
	rep := sec.replicator(primary, "https://"+l.Addr().String()+"/peer/v1/db/")
	rep.AttemptTimeout = time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := primary.Update(ctx, rep, func(w Writer) error { return w.Put("b", "k", []byte("v")) }); err != nil {
		t.Fatal(err)
	}
	assertSame(t, primary, sec.store, "b")
}
