package lvm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// stderrTail is how much of lvm's stderr an error keeps: the last lines
// say what failed, and the first may be a screenful of device warnings.
const stderrTail = 2048

// cancelGrace is how long lvm may take to stop after SIGINT before it is
// killed.
const cancelGrace = 10 * time.Second

// ExecRunner runs the lvm binary at path (e.g. /sbin/lvm). Its stdin is
// /dev/null, so any prompt reads end of file and is answered no. The
// environment adds LVM_SUPPRESS_FD_WARNINGS=1, since the agent's inherited
// descriptors are expected, and LC_ALL=C so messages are not translated. A
// failure returns an error that wraps the *exec.ExitError (or start error)
// and holds the end of stderr.
func ExecRunner(path string) Runner {
	return func(ctx context.Context, argv []string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, path, argv...)
		cmd.Env = append(os.Environ(), "LVM_SUPPRESS_FD_WARNINGS=1", "LC_ALL=C")
		// On cancellation ask lvm to stop rather than kill it: lvm blocks
		// signals while it holds a VG lock, so an interrupt waits for the
		// metadata commit a kill could cut in half.
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
		cmd.WaitDelay = cancelGrace
		var stdout bytes.Buffer
		stderr := &tailBuffer{max: stderrTail}
		cmd.Stdout = &stdout
		cmd.Stderr = stderr
		err := cmd.Run()
		if err == nil {
			return stdout.Bytes(), nil
		}
		if cerr := ctx.Err(); cerr != nil {
			err = fmt.Errorf("%w (%w)", cerr, err)
		}
		if msg := stderr.String(); msg != "" {
			return stdout.Bytes(), fmt.Errorf("%s: %w: %s", path, err, msg)
		}
		return stdout.Bytes(), fmt.Errorf("%s: %w", path, err)
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max       int
	buf       []byte
	truncated bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.truncated = true
	}
	return n, nil
}

// String is the kept stderr on one line: lvm indents its messages and
// writes one per line, which reads better in a log joined by "; ".
func (t *tailBuffer) String() string {
	var lines []string
	for _, l := range strings.Split(string(t.buf), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	s := strings.Join(lines, "; ")
	if t.truncated && s != "" {
		s = "..." + s
	}
	return s
}
