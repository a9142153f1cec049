// Package reap owns every wait for child processes of PID 1. Orphans are
// re-parented to PID 1 and must be reaped with wait4(-1), which would steal the
// exit status of children that someone else waits for; so every child that init
// starts itself is started here and its exit is routed back to its owner.
package reap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"

	"golang.org/x/sys/unix"
)

// Exit is how a child process ended.
type Exit struct {
	Pid    int
	Status unix.WaitStatus
}

// Code is the exit code, or 128+signal when the process was killed by a signal
// (the shell convention operators know).
func (e Exit) Code() int {
	switch {
	case e.Status.Exited():
		return e.Status.ExitStatus()
	case e.Status.Signaled():
		return 128 + int(e.Status.Signal())
	}
	return -1
}

// String describes the exit for logs.
func (e Exit) String() string {
	switch {
	case e.Status.Exited():
		return fmt.Sprintf("exit status %d", e.Status.ExitStatus())
	case e.Status.Signaled():
		return fmt.Sprintf("killed by signal %d (%v)", int(e.Status.Signal()), e.Status.Signal())
	}
	return fmt.Sprintf("wait status %#x", uint32(e.Status))
}

// Reaper reaps all children of this process. The zero value is not usable;
// call New.
type Reaper struct {
	// mu is held across wait4 and across starting+registering a child, so a
	// child can never be reaped before its owner is registered.
	mu      sync.Mutex
	waiters map[int]chan Exit
}

// New returns a Reaper. Call Run to start reaping.
func New() *Reaper {
	return &Reaper{waiters: map[int]chan Exit{}}
}

// Start starts argv[0] like os.StartProcess and returns a channel that receives
// the exit exactly once. The caller must not call Wait on the process; it
// should call Release on it after the exit arrives.
func (r *Reaper) Start(argv []string, attr *os.ProcAttr) (*os.Process, <-chan Exit, error) {
	if len(argv) == 0 {
		return nil, nil, errors.New("start process: empty argv")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	p, err := os.StartProcess(argv[0], argv, attr)
	if err != nil {
		return nil, nil, err
	}
	ch := make(chan Exit, 1)
	r.waiters[p.Pid] = ch
	return p, ch, nil
}

// Run reaps children whenever SIGCHLD arrives until ctx is done. Exits of
// children started with Start go to their owners; orphans are logged at debug
// level and dropped.
func (r *Reaper) Run(ctx context.Context, log *slog.Logger) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, unix.SIGCHLD)
	defer signal.Stop(sig)
	// Children may have exited before Notify took effect.
	r.reapAll(log)
	for {
		select {
		case <-ctx.Done():
			return
		case <-sig:
			r.reapAll(log)
		}
	}
}

func (r *Reaper) reapAll(log *slog.Logger) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			// ECHILD: no children left; 0: the rest are still running.
			return
		}
		if ws.Stopped() || ws.Continued() {
			continue
		}
		e := Exit{Pid: pid, Status: ws}
		if ch, ok := r.waiters[pid]; ok {
			delete(r.waiters, pid)
			ch <- e
			continue
		}
		log.Debug("dyad-init: reaped orphan", "pid", pid, "exit", e.String())
	}
}
