// Package shutdown turns power-off and reboot requests (power button,
// signals, the test channel) into an orderly end of the PM: services stopped,
// data on disk, file systems unmounted, watchdog disarmed, then reboot(2).
package shutdown

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Action is what happens after the orderly stop.
type Action int

// The two ends of a PM's life.
const (
	PowerOff Action = iota
	Reboot
)

func (a Action) String() string {
	if a == Reboot {
		return "reboot"
	}
	return "power off"
}

// Request asks for a shutdown; Reason is shown on the console.
type Request struct {
	Action Action
	Reason string
}

// FromSignal maps the signals PID 1 honours to requests: SIGTERM and SIGUSR2
// power off (what other inits and container managers send), SIGINT is what
// the kernel sends on ctrl-alt-del once it is told not to reboot by itself.
func FromSignal(sig os.Signal) (Request, bool) {
	switch sig {
	case unix.SIGTERM:
		return Request{PowerOff, "SIGTERM"}, true
	case unix.SIGUSR2:
		return Request{PowerOff, "SIGUSR2"}, true
	case unix.SIGINT:
		return Request{Reboot, "ctrl-alt-del (SIGINT)"}, true
	}
	return Request{}, false
}

// System is the part of the kernel a shutdown needs.
type System interface {
	Sync()
	Unmount(target string, flags int) error
	Reboot(cmd int) error
	// Processes counts the live user processes other than init.
	Processes() (int, error)
	// SignalAll sends sig to every process but init (kill(-1, sig)).
	SignalAll(sig unix.Signal) error
}

// Sequence is an orderly shutdown. Services and Watchdog may be nil.
type Sequence struct {
	Log      *slog.Logger
	System   System
	Services interface{ Stop(context.Context) error }
	Watchdog interface {
		Feed() error
		Disarm() error
	}
	// Files are closed after the services stop and before the unmounts:
	// init's own files on the data partition.
	Files       []io.Closer
	Unmount     []string      // targets in the order to unmount them
	StopTimeout time.Duration // bounds the wait for services
	// StragglerWait bounds the wait for processes other than the services
	// (orphans, test channel commands) to end after SIGTERM, and again
	// after SIGKILL; 3 s when zero.
	StragglerWait time.Duration
}

// Run performs the shutdown. It returns only if reboot(2) failed; each step
// before it is best effort so a stuck service cannot keep the PM up.
//
// The watchdog is fed before every step that can block (stopping services
// takes up to StopTimeout, sync and unmount wait for the disk): a slow but
// moving shutdown must not be cut short by a reset, while a step hung for a
// whole watchdog timeout still resets the PM.
func (q *Sequence) Run(ctx context.Context, req Request) error {
	q.Log.Warn(fmt.Sprintf("dyad-init: shutdown (%s): %s", req.Reason, req.Action))
	if q.Services != nil {
		q.feed()
		sctx, cancel := context.WithTimeout(ctx, q.StopTimeout)
		if err := q.Services.Stop(sctx); err != nil {
			q.Log.Error("dyad-init: services did not stop; going on", "err", err)
		}
		cancel()
	}
	q.endStragglers()
	for _, f := range q.Files {
		if err := f.Close(); err != nil {
			q.Log.Warn("dyad-init: closing a log file", "err", err)
		}
	}
	q.feed()
	q.System.Sync()
	for _, t := range q.Unmount {
		q.feed()
		q.unmount(t)
	}
	q.feed()
	q.System.Sync()
	if q.Watchdog != nil {
		if err := q.Watchdog.Disarm(); err != nil {
			q.Log.Error("dyad-init: watchdog not disarmed; it may reset the PM", "err", err)
		}
	}
	cmd := unix.LINUX_REBOOT_CMD_POWER_OFF
	if req.Action == Reboot {
		cmd = unix.LINUX_REBOOT_CMD_RESTART
	}
	q.Log.Warn(fmt.Sprintf("dyad-init: shutdown complete; %s now", req.Action))
	if err := q.System.Reboot(cmd); err != nil {
		return fmt.Errorf("%s: %w", req.Action, err)
	}
	return nil
}

func (q *Sequence) feed() {
	if q.Watchdog == nil {
		return
	}
	if err := q.Watchdog.Feed(); err != nil {
		q.Log.Error("dyad-init: watchdog", "err", err)
	}
}

func (q *Sequence) unmount(target string) {
	err := q.System.Unmount(target, 0)
	switch {
	case err == nil:
		q.Log.Info("dyad-init: unmounted", "target", target)
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
		q.Log.Debug("dyad-init: not mounted", "target", target)
	case errors.Is(err, unix.EBUSY):
		// Something still holds files open; detach so the tree is gone from
		// the namespace and the kernel finishes when the holders die.
		if err := q.System.Unmount(target, unix.MNT_DETACH); err != nil {
			q.Log.Error("dyad-init: lazy unmount failed", "target", target, "err", err)
			return
		}
		q.Log.Warn("dyad-init: busy; unmounted lazily", "target", target)
	default:
		q.Log.Error("dyad-init: unmount failed", "target", target, "err", err)
	}
}

// endStragglers ends the processes the services left behind: they would
// keep files open on the data partition, which then cannot be unmounted
// cleanly.
func (q *Sequence) endStragglers() {
	wait := q.StragglerWait
	if wait == 0 {
		wait = 3 * time.Second
	}
	for _, sig := range []unix.Signal{unix.SIGTERM, unix.SIGKILL} {
		n, err := q.System.Processes()
		if err != nil {
			q.Log.Warn("dyad-init: cannot list processes", "err", err)
			return
		}
		if n == 0 {
			return
		}
		q.feed()
		q.Log.Warn("dyad-init: ending leftover processes", "count", n, "signal", unix.SignalName(sig))
		if err := q.System.SignalAll(sig); err != nil {
			q.Log.Warn("dyad-init: signalling leftover processes", "err", err)
		}
		deadline := time.Now().Add(wait)
		for time.Now().Before(deadline) {
			if n, err := q.System.Processes(); err != nil || n == 0 {
				break
			}
			time.Sleep(50 * time.Millisecond) // polling /proc, bounded by the deadline
		}
	}
}

// Linux is the real System.
type Linux struct{}

// Sync calls sync(2).
func (Linux) Sync() { unix.Sync() }

// Unmount calls umount2(2).
func (Linux) Unmount(target string, flags int) error {
	if err := unix.Unmount(target, flags); err != nil {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}

// Processes counts the processes in /proc other than init, kernel threads
// and zombies.
func (Linux) Processes() (int, error) {
	return countProcesses("/proc")
}

func countProcesses(proc string) (int, error) {
	ents, err := os.ReadDir(proc)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == 1 {
			continue
		}
		b, err := os.ReadFile(filepath.Join(proc, e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		if userProcess(b) {
			n++
		}
	}
	return n, nil
}

// pfKthread is PF_KTHREAD of the per-process flags in /proc/PID/stat.
const pfKthread = 0x00200000

// userProcess reports whether a /proc/PID/stat line is a live user process.
// The command name may hold spaces and parentheses, so fields are counted
// after the last ')'.
func userProcess(stat []byte) bool {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return false
	}
	f := strings.Fields(string(stat[i+1:]))
	// state ppid pgrp session tty_nr tpgid flags ...
	if len(f) < 7 || f[0] == "Z" || f[0] == "X" {
		return false
	}
	flags, err := strconv.ParseUint(f[6], 10, 64)
	return err == nil && flags&pfKthread == 0
}

// SignalAll calls kill(-1, sig).
func (Linux) SignalAll(sig unix.Signal) error {
	return unix.Kill(-1, sig)
}

// Reboot calls reboot(2).
func (Linux) Reboot(cmd int) error {
	if err := unix.Reboot(cmd); err != nil {
		return fmt.Errorf("reboot(%#x): %w", cmd, err)
	}
	return nil
}
