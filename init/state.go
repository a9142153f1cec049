package main

import (
	"io"
	"log/slog"
	"sync"

	"github.com/dyad-ha/dyad/init/cmdline"
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
	}
}

// console is the writer for logs and service output. It starts as the
// inherited stderr and moves to /dev/console once devtmpfs is mounted.
type console struct {
	mu sync.Mutex
	w  io.Writer
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.w.Write(p)
}

func (c *console) set(w io.Writer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.w = w
}
