package supervise

import (
	"bytes"
	"sync"
)

// ring keeps the most recent output of a service, whole lines only, at most
// max bytes, so a crash report always shows complete lines.
type ring struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func newRing(max int) *ring {
	return &ring{max: max}
}

// add appends one line (ending in '\n'), dropping the oldest lines that no
// longer fit.
func (r *ring) add(line []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(line) > r.max {
		line = line[len(line)-r.max:]
	}
	r.buf = append(r.buf, line...)
	if over := len(r.buf) - r.max; over > 0 {
		cut := over
		if i := bytes.IndexByte(r.buf[cut:], '\n'); i >= 0 && cut > 0 && r.buf[cut-1] != '\n' {
			cut += i + 1
		}
		// Copy so the backing array does not grow without bound.
		r.buf = append([]byte(nil), r.buf[cut:]...)
	}
}

// bytes returns a copy of the buffered output.
func (r *ring) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.buf...)
}

// tail returns a copy of the last n lines.
func (r *ring) tail(n int) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	end := len(r.buf)
	start := end
	for i := 0; i < n && start > 0; i++ {
		j := bytes.LastIndexByte(r.buf[:start-1], '\n')
		start = j + 1
		if j < 0 {
			break
		}
	}
	return append([]byte(nil), r.buf[start:end]...)
}
