package qmp

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// startQEMU runs a QEMU without a guest and returns a connected client and
// a channel closed when the process has exited, so that the client is tested
// against the real protocol.
func startQEMU(t *testing.T) (*Client, <-chan struct{}) {
	t.Helper()
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 is not installed on this host")
	}
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	cmd := exec.Command(bin, "-machine", "none", "-nodefaults", "-display", "none", "-no-user-config",
		"-qmp", "unix:"+sock+",server=on,wait=off")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start QEMU: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := Dial(ctx, sock)
		if err == nil {
			t.Cleanup(func() { c.Close() })
			return c, exited
		}
		select {
		case <-ctx.Done():
			t.Fatalf("QMP socket %s never answered: %v", sock, err)
		case <-exited:
			t.Fatalf("QEMU exited before QMP answered: %v", cmd.ProcessState)
		case <-tick.C:
		}
	}
}

func TestClientAgainstQEMU(t *testing.T) {
	c, exited := startQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	var version struct {
		QEMU struct{ Major, Minor, Micro int } `json:"qemu"`
	}
	if err := c.Execute(ctx, "query-version", nil, &version); err != nil {
		t.Fatal(err)
	}
	if version.QEMU.Major < 7 {
		t.Errorf("query-version: QEMU %+v, want major >= 7", version.QEMU)
	}

	var status struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	if err := c.Execute(ctx, "query-status", nil, &status); err != nil {
		t.Fatal(err)
	}
	if status.Status == "" {
		t.Errorf("query-status returned no status")
	}

	err := c.Execute(ctx, "no-such-command", nil, nil)
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Errorf("unknown command: got %v, want a *Error of class CommandNotFound", err)
	}

	err = c.Execute(ctx, "human-monitor-command", map[string]any{"command-line": "info version", "bogus": 1}, nil)
	if !errors.As(err, &qe) || qe.Class != "GenericError" {
		t.Errorf("bad arguments: got %v, want a *Error of class GenericError", err)
	}

	var hmp string
	if err := c.Execute(ctx, "human-monitor-command", map[string]string{"command-line": "info version"}, &hmp); err != nil || hmp == "" {
		t.Errorf("human-monitor-command with arguments: %q, %v", hmp, err)
	}

	// Replies must reach the caller that sent the request even when many
	// requests are in flight at once.
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Go(func() {
			var v struct {
				QEMU struct{ Major int } `json:"qemu"`
			}
			if err := c.Execute(ctx, "query-version", nil, &v); err != nil {
				errs <- err
			} else if v.QEMU.Major != version.QEMU.Major {
				errs <- errors.New("reply delivered to the wrong request")
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	if err := c.Execute(ctx, "stop", nil, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-c.Events():
		if ev.Name != "STOP" || ev.Time.IsZero() {
			t.Errorf("after stop: event %+v, want STOP with a timestamp", ev)
		}
	case <-ctx.Done():
		t.Fatal("no STOP event after stop")
	}

	cancelled, cancelNow := context.WithCancel(ctx)
	cancelNow()
	if err := c.Execute(cancelled, "query-status", nil, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Execute with a cancelled context: %v, want context.Canceled", err)
	}

	// quit may race its own reply with the end of the connection.
	if err := c.Execute(ctx, "quit", nil, nil); err != nil && !errors.Is(err, ErrClosed) {
		t.Fatalf("quit: %v", err)
	}
	select {
	case <-c.Done():
	case <-ctx.Done():
		t.Fatal("connection still open after quit")
	}
	if err := c.Execute(ctx, "query-status", nil, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Execute after quit: %v, want ErrClosed", err)
	}
	for range c.Events() {
		// Drain: the channel must be closed once the connection ended.
	}
	select {
	case <-exited:
	case <-ctx.Done():
		t.Fatal("QEMU still running after quit")
	}
}
