package reap

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func startReaper(t *testing.T) *Reaper {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r := New()
	go r.Run(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)))
	return r
}

func TestStartRoutesExit(t *testing.T) {
	r := startReaper(t)
	for _, tc := range []struct {
		argv []string
		code int
		str  string
	}{
		{[]string{"/bin/true"}, 0, "exit status 0"},
		{[]string{"/bin/sh", "-c", "exit 3"}, 3, "exit status 3"},
		{[]string{"/bin/sh", "-c", "kill -9 $$"}, 128 + 9, "killed by signal 9 (killed)"},
	} {
		p, ch, err := r.Start(tc.argv, &os.ProcAttr{})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case e := <-ch:
			if e.Pid != p.Pid || e.Code() != tc.code || e.String() != tc.str {
				t.Errorf("%v: got pid %d code %d %q, want pid %d code %d %q", tc.argv, e.Pid, e.Code(), e, p.Pid, tc.code, tc.str)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%v: no exit reported", tc.argv)
		}
		p.Release()
	}
}

func TestStartErrors(t *testing.T) {
	r := New()
	if _, _, err := r.Start(nil, &os.ProcAttr{}); err == nil {
		t.Error("empty argv accepted")
	}
	if _, _, err := r.Start([]string{"/nonexistent/binary"}, &os.ProcAttr{}); err == nil {
		t.Error("missing binary accepted")
	}
}

// An orphan re-parented to us (as to PID 1; here through the subreaper flag)
// must not stay a zombie.
func TestReapsOrphans(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("become subreaper: %v", err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	r := startReaper(t)
	rd, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p, ch, err := r.Start([]string{"/bin/sh", "-c", "/bin/sleep 0.2 & echo $!"}, &os.ProcAttr{Files: []*os.File{nil, wr, os.Stderr}})
	if err != nil {
		t.Fatal(err)
	}
	wr.Close()
	out, err := io.ReadAll(rd)
	if err != nil {
		t.Fatal(err)
	}
	<-ch
	p.Release()
	orphan, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("orphan pid %q: %v", out, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := os.Stat("/proc/" + strconv.Itoa(orphan))
		if os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			st, _ := os.ReadFile("/proc/" + strconv.Itoa(orphan) + "/stat")
			t.Fatalf("orphan %d not reaped: %s", orphan, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
