package main

import (
	"io"
	"log/slog"
	"sync"

	"github.com/dyad-ha/dyad/init/cmdline"
	"github.com/dyad-ha/dyad/init/logfile"
	"github.com/dyad-ha/dyad/init/reap"
	"github.com/dyad-ha/dyad/init/shutdown"
	"github.com/dyad-ha/dyad/init/supervise"
	"github.com/dyad-ha/dyad/init/watchdog"
)

// State is what the boot phases share.
type State struct {
	Log      *slog.Logger
	Level    *slog.LevelVar
	Console  *console
	Params   cmdline.Params
	Reaper   *reap.Reaper
	Services *supervise.Supervisor
	Watchdog *watchdog.Watchdog // nil when there is none
	Requests chan shutdown.Request
	// Fence asks for an immediate reset by the watchdog (SIGUSR1 from the agent).
	Fence chan struct{}
}

// serviceEnv is the whole environment of supervised services and test
// channel commands.
func serviceEnv() []string { return []string{"PATH=/bin:/sbin"} }

func newState(out io.Writer) *State {
	con := &console{w: out}
	level := &slog.LevelVar{}
	log := slog.New(slog.NewTextHandler(con, &slog.HandlerOptions{Level: level}))
	r := reap.New()
	return &State{
		Log:     log,
		Level:   level,
		Console: con,
		Params:  cmdline.Params{},
		Reaper:  r,
		Services: supervise.New(log, r, supervise.DefaultConfig(con),
			supervise.Service{Name: "dyad-agent", Path: "/bin/dyad-agent", Env: serviceEnv()}),
		Requests: make(chan shutdown.Request, 1),
		Fence:    make(chan struct{}, 1),
	}
}

// console is the writer for logs and service output. It starts as the
// inherited stderr and moves to /dev/console once devtmpfs is mounted. Once
// the data partition is mounted, everything is also kept in a file there, so
// the reason of the last shutdown or crash survives the reboot.
type console struct {
	mu   sync.Mutex
	w    io.Writer
	file *logfile.File
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.file != nil {
		// The serial console stays the place of record; a failing disk
		// must not silence it.
		_, _ = c.file.Write(p)
	}
	return c.w.Write(p)
}

// persist starts copying the console to f.
func (c *console) persist(f *logfile.File) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.file = f
}

// Close stops the copy to the data partition so that it can be unmounted.
func (c *console) Close() error {
	c.mu.Lock()
	f := c.file
	c.file = nil
	c.mu.Unlock()
	if f == nil {
		return nil
	}
	return f.Close()
}

func (c *console) set(w io.Writer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.w = w
}
