package testchan

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// ioChunk is the buffer of OpPWrite and OpSHA256: large enough to keep a
// disk busy, small enough for a PM's memory.
const ioChunk = 1 << 20

// DWriteResult is the answer of OpDWrite, in Response.Data as JSON.
// Elapsed covers every write and the fsync after the last one, so that
// buffered writes are not reported faster than the disk took them.
type DWriteResult struct {
	Bytes     int64 `json:"bytes"`
	ElapsedNS int64 `json:"elapsed_ns"`
	LatP50NS  int64 `json:"lat_p50_ns"`
	LatP95NS  int64 `json:"lat_p95_ns"`
	LatMaxNS  int64 `json:"lat_max_ns"`
}

// Pattern is the byte stream OpPWrite writes for seed: byte i of a write is
// byte i of the ChaCha8 stream keyed with seed, wherever the write starts.
// ChaCha8 (C2SP chacha8rand) is a fixed algorithm, so a host can compute
// the same bytes.
func Pattern(seed int64) io.Reader {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:8], uint64(seed))
	copy(key[8:], "dyad testchan pattern")
	return rand.NewChaCha8(key)
}

// storageContext applies the request's timeout, if any.
func storageContext(ctx context.Context, req Request) (context.Context, context.CancelFunc) {
	if req.TimeoutMS == 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, time.Duration(req.TimeoutMS)*time.Millisecond)
}

// alignedBuffer returns n bytes aligned to a page, as O_DIRECT needs; Go's
// allocator promises no alignment. free unmaps it.
func alignedBuffer(n int) (buf []byte, free func(), err error) {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, nil, fmt.Errorf("buffer of %d bytes: %w", n, err)
	}
	return b, func() { unix.Munmap(b) }, nil
}

// openForWrite opens an existing file or device; it never creates one, so
// a path that names no device (a volume not set up yet) fails instead of
// leaving a regular file in /dev that the test would then read back.
func openForWrite(path string, direct, dsync bool) (*os.File, error) {
	flags := os.O_WRONLY
	if direct {
		flags |= unix.O_DIRECT
	}
	if dsync {
		flags |= unix.O_DSYNC
	}
	return os.OpenFile(path, flags, 0)
}

// pwrite writes req.Length bytes of Pattern(req.Seed) at req.Offset and
// fsyncs, returning the hex SHA-256 of what it wrote.
func pwrite(ctx context.Context, req Request) (string, error) {
	f, err := openForWrite(req.Path, req.Direct, false)
	if err != nil {
		return "", err
	}
	defer f.Close()
	buf, free, err := alignedBuffer(int(min(ioChunk, req.Length)))
	if err != nil {
		return "", err
	}
	defer free()
	pat, h := Pattern(req.Seed), sha256.New()
	for done := int64(0); done < req.Length; {
		if err := ctx.Err(); err != nil {
			return "", fmt.Errorf("after %d of %d bytes: %w", done, req.Length, err)
		}
		b := buf[:min(int64(len(buf)), req.Length-done)]
		if _, err := io.ReadFull(pat, b); err != nil {
			return "", err
		}
		if _, err := f.WriteAt(b, req.Offset+done); err != nil {
			return "", fmt.Errorf("after %d of %d bytes: %w", done, req.Length, err)
		}
		h.Write(b)
		done += int64(len(b))
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("fsync: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// sum returns the hex SHA-256 of [req.Offset, req.Offset+req.Length) of
// req.Path. It reads with O_DIRECT, over the aligned range that covers the
// requested one, so that what the page cache holds cannot stand in for
// what the device holds; files that refuse O_DIRECT (tmpfs) are read
// through the cache.
func sum(ctx context.Context, req Request) (string, error) {
	off, end := req.Offset, req.Offset+req.Length
	if end <= math.MaxInt64-DirectAlign {
		alignedEnd := (end + DirectAlign - 1) &^ (DirectAlign - 1)
		s, err := hashRange(ctx, req.Path, true, off&^(DirectAlign-1), alignedEnd, off, end)
		if !errors.Is(err, unix.EINVAL) {
			return s, err
		}
	}
	return hashRange(ctx, req.Path, false, off, end, off, end)
}

// hashRange reads [from, to) of path and hashes the part in [off, end).
func hashRange(ctx context.Context, path string, direct bool, from, to, off, end int64) (string, error) {
	flags := os.O_RDONLY
	if direct {
		flags |= unix.O_DIRECT
	}
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	buf, free, err := alignedBuffer(int(min(ioChunk, to-from)))
	if err != nil {
		return "", err
	}
	defer free()
	h := sha256.New()
	for pos := from; pos < end; {
		if err := ctx.Err(); err != nil {
			return "", fmt.Errorf("at offset %d: %w", pos, err)
		}
		b := buf[:min(int64(len(buf)), to-pos)]
		n, err := f.ReadAt(b, pos)
		// The part of what was read that lies in [off, end).
		lo, hi := max(pos, off), min(pos+int64(n), end)
		if lo < hi {
			h.Write(b[lo-pos : hi-pos])
		}
		pos += int64(n)
		if errors.Is(err, io.EOF) && pos < end {
			return "", fmt.Errorf("%s ends at %d, before the end of the range at %d", path, pos, end)
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("read at offset %d: %w", pos, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// dwrite times req.Count sequential writes of req.BlockSize bytes from
// req.Offset, then fsyncs.
func dwrite(ctx context.Context, req Request) (DWriteResult, error) {
	f, err := openForWrite(req.Path, req.Direct, req.DSync)
	if err != nil {
		return DWriteResult{}, err
	}
	defer f.Close()
	buf, free, err := alignedBuffer(int(req.BlockSize))
	if err != nil {
		return DWriteResult{}, err
	}
	defer free()
	// Random rather than zero bytes: nothing on the way may shortcut them.
	if _, err := io.ReadFull(Pattern(req.Seed), buf); err != nil {
		return DWriteResult{}, err
	}
	lat := make([]int64, req.Count)
	start := time.Now()
	for i := range req.Count {
		if err := ctx.Err(); err != nil {
			return DWriteResult{}, fmt.Errorf("after %d of %d writes: %w", i, req.Count, err)
		}
		t := time.Now()
		if _, err := f.WriteAt(buf, req.Offset+i*req.BlockSize); err != nil {
			return DWriteResult{}, fmt.Errorf("write %d of %d: %w", i+1, req.Count, err)
		}
		lat[i] = int64(time.Since(t))
	}
	if err := f.Sync(); err != nil {
		return DWriteResult{}, fmt.Errorf("fsync: %w", err)
	}
	elapsed := time.Since(start)
	if err := f.Close(); err != nil {
		return DWriteResult{}, err
	}
	slices.Sort(lat)
	return DWriteResult{
		Bytes:     req.BlockSize * req.Count,
		ElapsedNS: int64(elapsed),
		LatP50NS:  percentile(lat, 50),
		LatP95NS:  percentile(lat, 95),
		LatMaxNS:  lat[len(lat)-1],
	}, nil
}

// percentile is the nearest-rank percentile p of sorted, which is not empty.
func percentile(sorted []int64, p int) int64 {
	rank := (len(sorted)*p + 99) / 100 // ceil(p% of n)
	return sorted[max(rank, 1)-1]
}

// writeFile creates or replaces req.Path, and its missing parents, with
// req.Data.
func writeFile(req Request) error {
	if err := os.MkdirAll(filepath.Dir(req.Path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(req.Path, req.Data, 0o644)
}

// storage answers OpPWrite, OpSHA256, OpDWrite and OpWriteFile.
func (s *Server) storage(ctx context.Context, req Request) Response {
	resp := Response{ID: req.ID}
	ctx, cancel := storageContext(ctx, req)
	defer cancel()
	var data string
	var err error
	switch req.Op {
	case OpPWrite:
		data, err = pwrite(ctx, req)
	case OpSHA256:
		data, err = sum(ctx, req)
	case OpDWrite:
		var r DWriteResult
		if r, err = dwrite(ctx, req); err == nil {
			var b []byte
			b, err = json.Marshal(r)
			data = string(b)
		}
	case OpWriteFile:
		err = writeFile(req)
	}
	if err != nil {
		resp.Error = fmt.Sprintf("%s %s: %v", req.Op, req.Path, err)
		return resp
	}
	if data != "" {
		resp.Data = []byte(data)
	}
	return resp
}
