package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// defaultStorageTimeout is the guest's limit for a storage request when ctx
// carries no deadline: a GiB written under TCG takes minutes.
const defaultStorageTimeout = 10 * time.Minute

// FailDisk makes one of the PM's disks fail under the running guest, as a
// dead drive would: QEMU deletes the drive (HMP drive_del) while the
// virtio device stays, so every guest I/O on it ends in EIO from then on.
// id is SystemDiskID or DataDiskID(i). The disk comes back, with what it
// held, at the next PowerOn.
func (pm *PM) FailDisk(ctx context.Context, id string) error {
	if !slices.Contains(pm.disks, id) {
		return fmt.Errorf("pm%d: fail disk: unknown disk %q, this PM has %s", pm.n, id, strings.Join(pm.disks, ", "))
	}
	c := pm.QMP()
	if c == nil {
		return fmt.Errorf("pm%d: fail disk %s: powered off", pm.n, id)
	}
	var out string
	if err := c.Execute(ctx, "human-monitor-command", map[string]any{"command-line": "drive_del " + id}, &out); err != nil {
		return fmt.Errorf("pm%d: fail disk %s: %w", pm.n, id, err)
	}
	// HMP reports its errors as text in a successful answer.
	if out = strings.TrimSpace(out); out != "" {
		return fmt.Errorf("pm%d: fail disk %s: drive_del: %s", pm.n, id, out)
	}
	var blocks []struct {
		Device   string          `json:"device"`
		Inserted json.RawMessage `json:"inserted"`
	}
	if err := c.Execute(ctx, "query-block", nil, &blocks); err != nil {
		return fmt.Errorf("pm%d: fail disk %s: %w", pm.n, id, err)
	}
	for _, b := range blocks {
		if b.Device == id && len(b.Inserted) > 0 && string(b.Inserted) != "null" {
			return fmt.Errorf("pm%d: fail disk %s: QEMU still has a medium in it after drive_del", pm.n, id)
		}
	}
	pm.log.Info("disk failed", "pm", pm.n, "disk", id)
	return nil
}

// storageCall sends a storage request with the guest's time limit taken
// from ctx (defaultStorageTimeout without a deadline), and enforces the
// same limit on the host's wait.
func (pm *PM) storageCall(ctx context.Context, req tcRequest) (tcResponse, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultStorageTimeout)
		defer cancel()
	}
	dl, _ := ctx.Deadline()
	req.TimeoutMS = max(time.Until(dl).Milliseconds(), 1)
	return pm.tc.call(ctx, req)
}

// WritePattern writes n bytes of the pattern of seed at offset off of path
// on the PM (a device or an existing file, never created) and fsyncs. With
// direct, the writes use O_DIRECT (off and n multiples of 4096). It returns
// the hex SHA-256 of the bytes written, which Sum of the same range must
// return as long as the data is intact.
func (pm *PM) WritePattern(ctx context.Context, path string, off, n int64, seed int64, direct bool) (string, error) {
	resp, err := pm.storageCall(ctx, tcRequest{Op: "pwrite", Path: path, Offset: off, Length: n, Seed: seed, Direct: direct})
	if err != nil {
		return "", fmt.Errorf("pm%d: write pattern to %s: %w", pm.n, path, err)
	}
	return string(resp.Data), nil
}

// Sum returns the hex SHA-256 of n bytes at offset off of path on the PM,
// read past the page cache (O_DIRECT) where the file allows it.
func (pm *PM) Sum(ctx context.Context, path string, off, n int64) (string, error) {
	resp, err := pm.storageCall(ctx, tcRequest{Op: "sha256", Path: path, Offset: off, Length: n})
	if err != nil {
		return "", fmt.Errorf("pm%d: sha256 of %s: %w", pm.n, path, err)
	}
	return string(resp.Data), nil
}

// DirectWriteResult is what DirectWrite measured. Elapsed includes the
// fsync after the last write.
type DirectWriteResult struct {
	Bytes   int64
	Elapsed time.Duration
	P50     time.Duration // per-write latency percentiles
	P95     time.Duration
	Max     time.Duration
}

// MBps is the throughput in MB (10^6 bytes) per second.
func (r DirectWriteResult) MBps() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Bytes) / 1e6 / r.Elapsed.Seconds()
}

// DirectWrite times count sequential writes of bs bytes from offset off of
// path on the PM, with O_DIRECT (off and bs multiples of 4096) and O_DSYNC
// as asked, for benchmarks.
func (pm *PM) DirectWrite(ctx context.Context, path string, off int64, bs int, count int, direct, dsync bool) (DirectWriteResult, error) {
	resp, err := pm.storageCall(ctx, tcRequest{Op: "dwrite", Path: path, Offset: off, BlockSize: int64(bs), Count: int64(count), Direct: direct, DSync: dsync})
	if err != nil {
		return DirectWriteResult{}, fmt.Errorf("pm%d: direct write to %s: %w", pm.n, path, err)
	}
	var r struct {
		Bytes     int64 `json:"bytes"`
		ElapsedNS int64 `json:"elapsed_ns"`
		P50NS     int64 `json:"lat_p50_ns"`
		P95NS     int64 `json:"lat_p95_ns"`
		MaxNS     int64 `json:"lat_max_ns"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return DirectWriteResult{}, fmt.Errorf("pm%d: direct write to %s: answer %q: %w", pm.n, path, resp.Data, err)
	}
	return DirectWriteResult{
		Bytes:   r.Bytes,
		Elapsed: time.Duration(r.ElapsedNS),
		P50:     time.Duration(r.P50NS),
		P95:     time.Duration(r.P95NS),
		Max:     time.Duration(r.MaxNS),
	}, nil
}

// WriteFile creates or replaces a file under /run or /tmp of the PM, such
// as a configuration file for a tool a test runs with Exec.
func (pm *PM) WriteFile(ctx context.Context, path string, data []byte) error {
	if _, err := pm.tc.call(ctx, tcRequest{Op: "writefile", Path: path, Data: data}); err != nil {
		return fmt.Errorf("pm%d: write %s: %w", pm.n, path, err)
	}
	return nil
}
