package harness

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestWaitFor(t *testing.T) {
	errBooting := errors.New("connection refused")
	// errCut makes the call block until the wait ends, like a request the
	// deadline interrupts, and fail with the context's error.
	errCut := errors.New("cut")
	tests := []struct {
		name    string
		timeout time.Duration
		// cond is given how many times it has been called before.
		cond    func(calls int) (bool, error)
		wantErr []string // substrings of the error; nil for success
	}{
		{
			name:    "true at once",
			timeout: time.Second,
			cond:    func(int) (bool, error) { return true, nil },
		},
		{
			name:    "true after errors",
			timeout: 5 * time.Second,
			cond: func(calls int) (bool, error) {
				if calls < 2 {
					return false, errBooting
				}
				return true, nil
			},
		},
		{
			name:    "never",
			timeout: 3 * PollInterval,
			cond:    func(int) (bool, error) { return false, nil },
			wantErr: []string{"for the thing", "deadline exceeded"},
		},
		{
			name:    "never, with the last error",
			timeout: 3 * PollInterval,
			cond:    func(int) (bool, error) { return false, errBooting },
			wantErr: []string{"for the thing", "last error: connection refused"},
		},
		{
			name:    "true with an error is not done",
			timeout: 3 * PollInterval,
			cond:    func(int) (bool, error) { return true, errBooting },
			wantErr: []string{"the condition held but came with an error", "connection refused"},
		},
		{
			// The state the wait was for, not the request the deadline
			// interrupted.
			name:    "a call cut short by the deadline keeps the error before it",
			timeout: 3 * PollInterval,
			cond: func(calls int) (bool, error) {
				if calls == 0 {
					return false, errors.New("replication path ibiz0")
				}
				return false, errCut
			},
			wantErr: []string{"last error: replication path ibiz0"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			err := WaitFor(t.Context(), tt.timeout, "the thing", func(ctx context.Context) (bool, error) {
				defer func() { calls++ }()
				ok, err := tt.cond(calls)
				if errors.Is(err, errCut) {
					<-ctx.Done()
					return false, fmt.Errorf("GET /api/v1/unit: %w", ctx.Err())
				}
				return ok, err
			})
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("WaitFor: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("WaitFor succeeded, want an error")
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("error %q does not wrap context.DeadlineExceeded", err)
			}
		})
	}
}

func TestOptionsDefaults(t *testing.T) {
	t.Setenv("DYAD_OUT", "/nonexistent/out")
	tests := []struct {
		name    string
		in      Options
		want    Options
		wantErr bool
	}{
		{name: "zero", in: Options{WorkDir: "w"}, want: Options{Out: "/nonexistent/out", N: 2, WorkDir: "w", MemoryMiB: 1024, DiskGiB: 2, DataDisks: 2, DataDiskMiB: 1024}},
		{name: "kept", in: Options{Out: "o", N: 1, WorkDir: "w", MemoryMiB: 256, DiskGiB: 1, DataDisks: 3, DataDiskMiB: 64},
			want: Options{Out: "o", N: 1, WorkDir: "w", MemoryMiB: 256, DiskGiB: 1, DataDisks: 3, DataDiskMiB: 64}},
		{name: "no data disks", in: Options{WorkDir: "w", DataDisks: -1}, want: Options{Out: "/nonexistent/out", N: 2, WorkDir: "w", MemoryMiB: 1024, DiskGiB: 2, DataDisks: -1, DataDiskMiB: 1024}},
		{name: "three PMs", in: Options{N: 3, WorkDir: "w"}, wantErr: true},
		{name: "negative PMs", in: Options{N: -1, WorkDir: "w"}, wantErr: true},
		{name: "too many data disks", in: Options{WorkDir: "w", DataDisks: 9}, wantErr: true},
		{name: "negative data disks", in: Options{WorkDir: "w", DataDisks: -2}, wantErr: true},
		{name: "negative data disk size", in: Options{WorkDir: "w", DataDiskMiB: -1}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.in
			err := got.defaults()
			if tt.wantErr {
				if err == nil {
					t.Fatalf("defaults accepted %+v", tt.in)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Log == nil {
				t.Error("no default logger")
			}
			got.Log = nil
			if got.Out != tt.want.Out || got.N != tt.want.N || got.WorkDir != tt.want.WorkDir ||
				got.MemoryMiB != tt.want.MemoryMiB || got.DiskGiB != tt.want.DiskGiB ||
				got.DataDisks != tt.want.DataDisks || got.DataDiskMiB != tt.want.DataDiskMiB {
				t.Errorf("defaults: %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestTail(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "b\nc"},
		{"a\nb\nc", 2, "b\nc"},
		{"a\nb\n", 5, "a\nb"},
		{"", 3, ""},
		{"only", 1, "only"},
	}
	for _, tt := range tests {
		if got := string(tail([]byte(tt.in), tt.n)); got != tt.want {
			t.Errorf("tail(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}
