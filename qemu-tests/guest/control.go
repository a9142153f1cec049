package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dyad-ha/dyad/init/shutdown"
	"github.com/dyad-ha/dyad/qemu-tests/guest/serial"
)

// Console commands: a line typed on the serial console (the agent's
// console proxy, or a test writing to QEMU's serial chardev).
const (
	// CmdCrash panics the guest kernel (sysrq c), which the pvpanic
	// driver reports to QEMU as GUEST_PANICKED: a VM crash that is the
	// guest's own, for the MTBF tests.
	CmdCrash = "crash"
)

// Lines the guest prints about its control events, besides the counter
// protocol of StartLine and DurableLine.
const (
	PowerOffLine = "GUEST POWER OFF"
	CrashLine    = "GUEST CRASH"
)

// maxCommandLine bounds one console line; longer input is read and
// ignored in pieces.
const maxCommandLine = 256

// ParseCommand returns the command a console line asks for. Surrounding
// white space (a terminal's CR included) is ignored; anything else is not
// a command.
func ParseCommand(line string) (string, bool) {
	switch cmd := strings.TrimSpace(line); cmd {
	case CmdCrash:
		return cmd, true
	default:
		return "", false
	}
}

// guest is the test guest's control: the counter loop holds mu around each
// durable write and its report, so a power-off taken under mu falls
// between two writes.
type guest struct {
	log *slog.Logger
	out io.Writer
	mu  sync.Mutex
}

// report prints one line on the console.
func (g *guest) report(format string, args ...any) {
	fmt.Fprintf(g.out, format+"\n", args...)
}

// serveConsole reads console lines from r and runs the commands in them
// until reading fails. Other lines get a short help, so a person at the
// console learns what the guest takes.
func (g *guest) serveConsole(r io.Reader, run func(cmd string)) error {
	br := bufio.NewReaderSize(r, maxCommandLine)
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// Too long to be a command: drop it up to its end.
			for err == bufio.ErrBufferFull {
				_, err = br.ReadSlice('\n')
			}
			if err != nil {
				return err
			}
			continue
		}
		if cmd, ok := ParseCommand(string(line)); ok {
			run(cmd)
		} else if strings.TrimSpace(string(line)) != "" {
			g.report("GUEST UNKNOWN COMMAND %q (known: %s)", strings.TrimSpace(string(line)), CmdCrash)
		}
		if err != nil {
			return err
		}
	}
}

// run executes a console command.
func (g *guest) run(cmd string) {
	switch cmd {
	case CmdCrash:
		g.crash()
	}
}

// crash panics the kernel at once, as a guest bug would: no lock, no sync.
func (g *guest) crash() {
	g.report("%s requested on the console", CrashLine)
	if err := os.WriteFile("/proc/sysrq-trigger", []byte("c"), 0); err != nil {
		g.report(serial.FailedPrefix+": crash: %v", err)
	}
}

// powerOff stops the counter between two writes, flushes and powers the
// machine off through ACPI, so QEMU sees a guest shutdown. It does not
// return when it works.
func (g *guest) powerOff(reason string) {
	g.mu.Lock()
	g.report("%s (%s)", PowerOffLine, reason)
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	g.report(serial.FailedPrefix+": power off: %v", err)
}

// openPowerButtons waits (up to wait) for the ACPI power button's evdev
// node, which the button and evdev modules create, and opens it. The
// counter starts only afterwards, so a guest that reports DURABLE lines
// is sure to hear a press.
func openPowerButtons(ctx context.Context, sysInput, devInput string, wait time.Duration) ([]*os.File, error) {
	deadline := time.Now().Add(wait)
	for {
		devs, err := shutdown.FindPowerButtons(sysInput, devInput)
		if err != nil {
			return nil, err
		}
		var files []*os.File
		for _, d := range devs {
			f, err := os.Open(d)
			if err != nil {
				// devtmpfs may not have made the node yet.
				continue
			}
			files = append(files, f)
		}
		if len(files) > 0 {
			return files, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no ACPI power button in %s after %s", sysInput, wait)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// watchPowerButton powers off when the power button f is pressed.
func (g *guest) watchPowerButton(f *os.File) {
	defer f.Close()
	if err := shutdown.ReadPowerButton(f); err != nil {
		g.log.Warn("power button", "dev", f.Name(), "err", err)
		return
	}
	g.powerOff("ACPI power button")
}

// quietConsole turns off the echo of the console the guest reads commands
// from: echoed input would land in the middle of the protocol lines.
func quietConsole(f *os.File) error {
	fd := int(f.Fd())
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("console settings: %w", err)
	}
	t.Lflag &^= unix.ECHO | unix.ECHONL
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
		return fmt.Errorf("console settings: %w", err)
	}
	return nil
}
