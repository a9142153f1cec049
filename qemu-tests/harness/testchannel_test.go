package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"testing"
)

// serveTestChannel answers every request on a unix socket as a guest would;
// a request with op "cancel" first calls the CancelFunc waiting in cancels,
// so its caller's context ends while its answer is on the way.
func serveTestChannel(t *testing.T, cancels <-chan context.CancelFunc) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tc")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					var req tcRequest
					if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
						return
					}
					if req.Op == "cancel" {
						(<-cancels)()
					}
					b, _ := json.Marshal(tcResponse{ID: req.ID})
					if _, err := c.Write(append(b, '\n')); err != nil {
						return
					}
				}
			}()
		}
	}()
	return path
}

// TestTestChannelAfterContextEnds checks that a call whose context ends
// just as its answer arrives leaves the channel usable: the deadline that
// ending sets on the connection must not fail the next call.
func TestTestChannelAfterContextEnds(t *testing.T) {
	cancels := make(chan context.CancelFunc, 1)
	tc := &testChannel{path: serveTestChannel(t, cancels)}
	defer tc.close()
	for i := range 200 {
		ctx, cancel := context.WithCancel(t.Context())
		cancels <- cancel
		// Either outcome is right for this call: the answer, or ctx's error.
		tc.call(ctx, tcRequest{Op: "cancel"})
		if _, err := tc.call(t.Context(), tcRequest{Op: "ping"}); err != nil {
			t.Fatalf("round %d: call after one whose context ended: %v", i, err)
		}
	}
}
