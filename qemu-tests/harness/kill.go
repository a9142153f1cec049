package harness

import (
	"context"
	"fmt"
	"strconv"
)

// KillPidfile sends signal (KILL, TERM, QUIT, ...) to the process whose pid
// the file pidfile on the PM holds, and returns once it is sent: a test
// crashes a VM this way by killing its QEMU
// (/run/dyad/vm/<id>/qemu.pid). Whether and when the process ends is for
// the caller to watch. A missing or stale pid file is an error.
func (pm *PM) KillPidfile(ctx context.Context, pidfile, signal string) error {
	resp, err := pm.tc.call(ctx, tcRequest{Op: "killpid", Path: pidfile, Signal: signal})
	if err != nil {
		return fmt.Errorf("pm%d: kill -%s the pid in %s: %w", pm.n, signal, pidfile, err)
	}
	if _, err := strconv.Atoi(string(resp.Data)); err != nil {
		return fmt.Errorf("pm%d: kill -%s the pid in %s: the PM answered %q, not the pid signalled", pm.n, signal, pidfile, resp.Data)
	}
	pm.log.Info("process signalled", "pm", pm.n, "pidfile", pidfile, "signal", signal, "pid", string(resp.Data))
	return nil
}
