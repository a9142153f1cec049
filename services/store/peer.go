package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strings"
	"time"
)

// ErrDeposed: the peer holds a newer epoch than this PM; this PM is no longer
// the primary and must step down.
var ErrDeposed = errors.New("the peer has a newer epoch: this PM is deposed")

// Error codes of the peer protocol, in the "code" field of an error body.
const (
	codeGap        = "gap"
	codeStaleEpoch = "stale_epoch"
	codeInvalid    = "invalid"
	codeTooLarge   = "too_large"
	codeClosed     = "closed"
	codeInternal   = "internal"
)

// peerState is the answer of GET position and of a successful apply or snapshot.
type peerState struct {
	Epoch  uint64 `json:"epoch"`
	Seq    uint64 `json:"seq"`
	Digest string `json:"digest"`
}

type peerError struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// PeerHandler serves the database replication protocol to the peer (mount it
// behind mutual TLS, e.g. under /peer/v1/db/). It dispatches on the last path
// element so it works with or without http.StripPrefix:
//
//	POST apply     JSON Batch (at most MaxBatchBytes)       -> 200 position
//	PUT  snapshot  a database file from WriteSnapshot       -> 200 position
//	GET  position                                           -> 200 position
//
// Errors are {"error": "...", "code": "..."}; 409 with code "gap" or
// "stale_epoch" for ErrGap and ErrStaleEpoch.
func (s *Store) PeerHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var method string
		var serve func(http.ResponseWriter, *http.Request)
		switch path.Base(r.URL.Path) {
		case "apply":
			method, serve = http.MethodPost, s.serveApply
		case "snapshot":
			method, serve = http.MethodPut, s.serveSnapshot
		case "position":
			method, serve = http.MethodGet, s.servePosition
		default:
			writePeerError(w, http.StatusNotFound, codeInvalid, fmt.Errorf("no such database peer endpoint %q", r.URL.Path))
			return
		}
		if r.Method != method {
			w.Header().Set("Allow", method)
			writePeerError(w, http.StatusMethodNotAllowed, codeInvalid, fmt.Errorf("%s needs %s, not %s", path.Base(r.URL.Path), method, r.Method))
			return
		}
		serve(w, r)
	})
}

func (s *Store) serveApply(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBatchBytes))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		writePeerError(w, http.StatusRequestEntityTooLarge, codeTooLarge, fmt.Errorf("batch larger than %d bytes", MaxBatchBytes))
		return
	}
	if err != nil {
		writePeerError(w, http.StatusBadRequest, codeInvalid, fmt.Errorf("read batch: %w", err))
		return
	}
	b, err := decodeBatch(body)
	if err != nil {
		writePeerError(w, http.StatusBadRequest, codeInvalid, err)
		return
	}
	if err := s.Apply(b); err != nil {
		s.log.Info("refused a batch from the peer", "epoch", b.Epoch, "seq", b.Seq, "err", err)
		writeStoreError(w, err)
		return
	}
	s.servePosition(w, r)
}

func (s *Store) serveSnapshot(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > MaxSnapshotBytes {
		writePeerError(w, http.StatusRequestEntityTooLarge, codeTooLarge, fmt.Errorf("snapshot larger than %d bytes", MaxSnapshotBytes))
		return
	}
	if err := s.RestoreSnapshot(r.Body); err != nil {
		s.log.Warn("refused a snapshot from the peer", "err", err)
		writeStoreError(w, err)
		return
	}
	s.servePosition(w, r)
}

func (s *Store) servePosition(w http.ResponseWriter, _ *http.Request) {
	st, err := s.state()
	if err != nil {
		writeStoreError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(peerState{st.Epoch, st.Seq, st.Digest})
}

func writeStoreError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrGap):
		writePeerError(w, http.StatusConflict, codeGap, err)
	case errors.Is(err, ErrStaleEpoch):
		writePeerError(w, http.StatusConflict, codeStaleEpoch, err)
	case errors.Is(err, errInvalid):
		writePeerError(w, http.StatusBadRequest, codeInvalid, err)
	case errors.Is(err, ErrClosed):
		writePeerError(w, http.StatusServiceUnavailable, codeClosed, err)
	default:
		writePeerError(w, http.StatusInternalServerError, codeInternal, err)
	}
}

func writePeerError(w http.ResponseWriter, status int, code string, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(peerError{Error: err.Error(), Code: code})
}

// HTTPReplicator replicates to the peer's PeerHandler over HTTPS.
type HTTPReplicator struct {
	// Client carries the mutual TLS configuration.
	Client *http.Client
	// URLs returns the base URLs of the peer's handler (".../peer/v1/db/"),
	// preferred path first; the next is tried when one does not answer.
	URLs func() []string
	// Source is the local database, sent as a snapshot when the peer has a gap.
	Source *Store
	// AttemptTimeout bounds one apply or position request on one URL, so a
	// dead path (a silently cut link) fails over to the next one before the
	// caller's deadline; 0 leaves only the context. Snapshots are bounded by
	// the context only, as their size varies.
	AttemptTimeout time.Duration
}

// unreachableError: the URL gave no HTTP answer; try the next one.
type unreachableError struct{ err error }

func (e *unreachableError) Error() string { return e.err.Error() }
func (e *unreachableError) Unwrap() error { return e.err }

// Replicate sends the batch to the first URL that answers. If the peer has a
// gap it sends a full snapshot of Source first and then the batch again; if
// the peer has a newer epoch it returns an error wrapping ErrDeposed.
func (r *HTTPReplicator) Replicate(ctx context.Context, b Batch) error {
	body, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("encode batch: %w", err)
	}
	if len(body) > MaxBatchBytes {
		return fmt.Errorf("batch %d encodes to %d bytes, the peer accepts at most %d", b.Seq, len(body), MaxBatchBytes)
	}
	return r.eachURL(func(base string) error {
		err := r.apply(ctx, base, body)
		if !errors.Is(err, ErrGap) {
			return err
		}
		if err := r.Source.withSnapshot(false, func(st state, writeTo func(io.Writer) error) error {
			return r.putSnapshot(ctx, base, st, writeTo)
		}); err != nil {
			return fmt.Errorf("peer missed changes and the snapshot failed: %w", err)
		}
		return r.apply(ctx, base, body)
	})
}

// Sync pushes a snapshot of Source if the peer's position or history differs
// (a secondary that joins or rejoins). Updates wait meanwhile, so no change
// can slip between the snapshot and the next batch.
func (r *HTTPReplicator) Sync(ctx context.Context) error {
	if r.Source == nil {
		return errors.New("database replicator needs a Source")
	}
	return r.Source.withSnapshot(true, func(st state, writeTo func(io.Writer) error) error {
		return r.eachURL(func(base string) error {
			peer, err := r.position(ctx, base)
			if err != nil {
				return err
			}
			if peer == (peerState{st.Epoch, st.Seq, st.Digest}) {
				return nil
			}
			return r.putSnapshot(ctx, base, st, writeTo)
		})
	})
}

// eachURL runs fn on the base URLs in order until one answers.
func (r *HTTPReplicator) eachURL(fn func(base string) error) error {
	if r.Client == nil || r.URLs == nil || r.Source == nil {
		return errors.New("database replicator needs a Client, URLs and a Source")
	}
	urls := r.URLs()
	if len(urls) == 0 {
		return errors.New("no address of the peer is known")
	}
	var errs []error
	for _, base := range urls {
		err := fn(base)
		var unreachable *unreachableError
		if !errors.As(err, &unreachable) {
			return err
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("peer unreachable on every path: %w", errors.Join(errs...))
}

func endpoint(base, name string) string {
	return strings.TrimSuffix(base, "/") + "/" + name
}

func (r *HTTPReplicator) attempt(ctx context.Context) (context.Context, context.CancelFunc) {
	if r.AttemptTimeout > 0 {
		return context.WithTimeout(ctx, r.AttemptTimeout)
	}
	return context.WithCancel(ctx)
}

func (r *HTTPReplicator) apply(ctx context.Context, base string, body []byte) error {
	ctx, cancel := r.attempt(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint(base, "apply"), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	_, err = r.do(req)
	return err
}

func (r *HTTPReplicator) position(ctx context.Context, base string) (peerState, error) {
	ctx, cancel := r.attempt(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint(base, "position"), nil)
	if err != nil {
		return peerState{}, err
	}
	return r.do(req)
}

func (r *HTTPReplicator) putSnapshot(ctx context.Context, base string, st state, writeTo func(io.Writer) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	written := make(chan struct{})
	go func() {
		defer close(written)
		pw.CloseWithError(writeTo(pw))
	}()
	// The transaction behind writeTo must outlive the copy.
	defer func() {
		pr.CloseWithError(errors.New("snapshot upload ended"))
		<-written
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, endpoint(base, "snapshot"), pr)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	got, err := r.do(req)
	if err != nil {
		return err
	}
	if got.Epoch != st.Epoch || got.Seq != st.Seq || got.Digest != st.Digest {
		return fmt.Errorf("peer restored a snapshot but reports epoch %d seq %d, sent epoch %d seq %d", got.Epoch, got.Seq, st.Epoch, st.Seq)
	}
	return nil
}

// do sends the request and decodes a position answer or a peer error.
func (r *HTTPReplicator) do(req *http.Request) (peerState, error) {
	resp, err := r.Client.Do(req)
	if err != nil {
		return peerState{}, &unreachableError{fmt.Errorf("%s %s: %w", req.Method, req.URL, err)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return peerState{}, &unreachableError{fmt.Errorf("%s %s: read answer: %w", req.Method, req.URL, err)}
	}
	if resp.StatusCode != http.StatusOK {
		var pe peerError
		if json.Unmarshal(data, &pe) != nil || pe.Error == "" {
			pe.Error = strings.TrimSpace(string(data))
		}
		err := fmt.Errorf("%s %s: %s: %s", req.Method, req.URL, resp.Status, pe.Error)
		switch pe.Code {
		case codeGap:
			return peerState{}, fmt.Errorf("%w (%w)", ErrGap, err)
		case codeStaleEpoch:
			return peerState{}, fmt.Errorf("%w (%w)", ErrDeposed, err)
		}
		return peerState{}, err
	}
	var st peerState
	if err := json.Unmarshal(data, &st); err != nil {
		return peerState{}, fmt.Errorf("%s %s: bad answer: %w", req.Method, req.URL, err)
	}
	return st, nil
}
