// Command init is PID 1 of a Dyad PM: it boots the PM through a list of
// phases, supervises the services, feeds the watchdog and turns power-off
// requests into an orderly shutdown. It never exits.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/dyad-ha/dyad/init/phase"
	"github.com/dyad-ha/dyad/init/shutdown"
	"golang.org/x/sys/unix"
)

// feedInterval is well inside the watchdog timeout, so a few slow iterations
// of the main loop do not reset the PM.
const feedInterval = 5 * time.Second

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "dyad-init: not running as PID 1; refusing to mount, load modules and supervise on this system")
		os.Exit(1)
	}
	st := newState(os.Stderr)
	ctx := context.Background()

	// Ctrl-alt-del then becomes SIGINT to us instead of an immediate reboot.
	if err := (shutdown.Linux{}).Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF); err != nil {
		st.Log.Warn("dyad-init: cannot route ctrl-alt-del to init", "err", err)
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGUSR2, unix.SIGUSR1)
	go func() {
		for sig := range sigs {
			if sig == unix.SIGUSR1 {
				select {
				case st.Fence <- struct{}{}:
				default: // one is pending already
				}
				continue
			}
			if req, ok := shutdown.FromSignal(sig); ok {
				st.Requests <- req
			}
		}
	}()

	if err := phase.Run(ctx, st.Log, bootPhases(), st); err != nil {
		st.Log.Error("dyad-init: boot failed; staying up for diagnosis", "err", err)
	} else {
		st.Log.Info("dyad-init: ready")
	}
	mainLoop(ctx, st)
}

// mainLoop feeds the watchdog for as long as init is alive and serves
// shutdown requests. If reboot(2) fails it keeps going: PID 1 must not exit.
func mainLoop(ctx context.Context, st *State) {
	feed := time.NewTicker(feedInterval)
	defer feed.Stop()
	for {
		select {
		case <-feed.C:
			if st.Watchdog != nil {
				if err := st.Watchdog.Feed(); err != nil {
					st.Log.Error("dyad-init: watchdog", "err", err)
				}
			}
		case <-st.Fence:
			fence(st)
		case req := <-st.Requests:
			seq := &shutdown.Sequence{
				Log:         st.Log,
				System:      shutdown.Linux{},
				Services:    st.Services,
				Files:       []io.Closer{st.Console},
				Unmount:     []string{dataDir, "/tmp", "/run"},
				StopTimeout: 15 * time.Second,
			}
			if st.Watchdog != nil {
				seq.Watchdog = st.Watchdog
				st.Watchdog = nil
			}
			if err := seq.Run(ctx, req); err != nil {
				st.Log.Error("dyad-init: shutdown failed; staying up", "err", err)
			}
		}
	}
}

// fence resets the PM at once, without an orderly shutdown: the agent asks
// for it (SIGUSR1) when it has lost the right to run VMs on a partition,
// and nothing it holds (VMs, DRBD legs, the management address) may linger.
// The watchdog does it, as the peer expects of a PM that lost: its
// timeout drops to one second and init stops feeding it. Without a watchdog
// init resets the PM itself.
func fence(st *State) {
	st.Log.Error("dyad-init: fencing this PM: reset by the watchdog")
	if st.Watchdog != nil {
		err := st.Watchdog.Fence()
		st.Watchdog = nil
		if err == nil {
			return
		}
		st.Log.Error("dyad-init: watchdog cannot fence; resetting", "err", err)
	}
	if err := (shutdown.Linux{}).Reboot(unix.LINUX_REBOOT_CMD_RESTART); err != nil {
		st.Log.Error("dyad-init: reset failed", "err", err)
	}
}
