package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dyad-ha/dyad/services/qmp"
)

// qmpConnectTimeout bounds how long a freshly started QEMU may take to open
// its QMP socket.
const qmpConnectTimeout = 30 * time.Second

// PM is one physical machine of the unit: a QEMU process that can be
// powered off and on again with the same disk.
type PM struct {
	n       int
	log     *slog.Logger
	ns      string
	argv    []string
	serial  string
	qemuLog string
	tc      testChannel
	qmpPath string
	nics    []nic    // in PCI order
	disks   []string // QEMU drive ids: SystemDiskID, then DataDiskID(i)

	mu   sync.Mutex
	proc *process
}

// process is one run of QEMU.
type process struct {
	cmd    *exec.Cmd
	qmp    *qmp.Client
	exited chan struct{}
	err    error // exit status, valid once exited is closed
}

func (p *process) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// N is the PM's number, 1 or 2.
func (pm *PM) N() int { return pm.n }

// Addr is the PM's own address on ibiz0.
func (pm *PM) Addr() string { return fmt.Sprintf("10.99.0.%d", pm.n) }

// SerialLogPath is the file that receives the PM's serial console across
// all its power cycles.
func (pm *PM) SerialLogPath() string { return pm.serial }

// SerialLog returns everything the PM printed on its serial console so far,
// with a harness line before each power-on.
func (pm *PM) SerialLog() []byte {
	b, err := os.ReadFile(pm.serial)
	if err != nil {
		return fmt.Appendf(nil, "harness: reading serial log: %v\n", err)
	}
	return b
}

// Running reports whether the PM's QEMU process is alive.
func (pm *PM) Running() bool {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	return pm.proc != nil && pm.proc.running()
}

// QMP returns the QMP client of the running QEMU, or nil while powered off.
func (pm *PM) QMP() *qmp.Client {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	if pm.proc == nil || !pm.proc.running() {
		return nil
	}
	return pm.proc.qmp
}

// PowerOn starts QEMU with the PM's disk as it was left and returns once QMP
// answers; the guest boots in the background.
func (pm *PM) PowerOn(ctx context.Context) error {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	if pm.proc != nil && pm.proc.running() {
		return fmt.Errorf("pm%d: power on: already running", pm.n)
	}
	// A connection to the previous QEMU's socket would fail the next call.
	pm.tc.reset()
	if err := appendLine(pm.serial, fmt.Sprintf("\n=== harness: pm%d power on at %s ===\n", pm.n, time.Now().UTC().Format(time.RFC3339Nano))); err != nil {
		return fmt.Errorf("pm%d: %w", pm.n, err)
	}
	logf, err := os.OpenFile(pm.qemuLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pm%d: %w", pm.n, err)
	}
	defer logf.Close()

	cmd := exec.Command("ip", append([]string{"netns", "exec", pm.ns}, pm.argv...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Setpgid keeps a Ctrl-C on the terminal away from QEMU so that the lab
	// can power off in order; Pdeathsig ends QEMU with the test process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	if err := startHeld(cmd, p.exited, &p.err); err != nil {
		return fmt.Errorf("pm%d: start QEMU: %w", pm.n, err)
	}
	pm.log.Info("pm powered on", "pm", pm.n, "pid", cmd.Process.Pid)

	c, err := pm.dialQMP(ctx, p)
	if err != nil {
		cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("pm%d: %w; QEMU output: %s", pm.n, err, tail(readFile(pm.qemuLog), 20))
	}
	p.qmp = c
	if pm.proc != nil {
		// The guest powered itself off (or was pulled by PowerOff): its
		// QMP connection is dead, but still holds a descriptor.
		pm.proc.qmp.Close()
	}
	pm.proc = p
	return nil
}

func (pm *PM) dialQMP(ctx context.Context, p *process) (*qmp.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, qmpConnectTimeout)
	defer cancel()
	tick := time.NewTicker(PollInterval / 4)
	defer tick.Stop()
	for {
		c, err := qmp.Dial(ctx, pm.qmpPath)
		if err == nil {
			return c, nil
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("QEMU exited before QMP answered (%v)", p.err)
		case <-ctx.Done():
			return nil, fmt.Errorf("QMP did not answer: %w", err)
		case <-tick.C:
		}
	}
}

// PowerOff pulls the plug: QEMU quits at once, the guest gets no say.
// Powering off a PM that is off is not an error.
func (pm *PM) PowerOff(ctx context.Context) error {
	pm.mu.Lock()
	p := pm.proc
	pm.mu.Unlock()
	if p == nil || !p.running() {
		return nil
	}
	err := p.qmp.Execute(ctx, "quit", nil, nil)
	if err != nil && !errors.Is(err, qmp.ErrClosed) {
		pm.log.Warn("QMP quit failed, killing QEMU", "pm", pm.n, "err", err)
		p.cmd.Process.Kill()
	}
	var killed error
	select {
	case <-p.exited:
	case <-ctx.Done():
		p.cmd.Process.Kill()
		<-p.exited
		killed = fmt.Errorf("pm%d: QEMU did not quit, killed it: %w", pm.n, ctx.Err())
	}
	p.qmp.Close()
	pm.log.Info("pm powered off", "pm", pm.n)
	return killed
}

// PowerDown presses the ACPI power button; the guest decides what to do.
// Use WaitOff to wait for the result.
func (pm *PM) PowerDown(ctx context.Context) error {
	c := pm.QMP()
	if c == nil {
		return fmt.Errorf("pm%d: power down: powered off", pm.n)
	}
	if err := c.Execute(ctx, "system_powerdown", nil, nil); err != nil {
		return fmt.Errorf("pm%d: power down: %w", pm.n, err)
	}
	return nil
}

// WaitOff waits until QEMU has exited, for instance after the guest shut
// itself down.
func (pm *PM) WaitOff(ctx context.Context) error {
	pm.mu.Lock()
	p := pm.proc
	pm.mu.Unlock()
	if p == nil {
		return nil
	}
	select {
	case <-p.exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("pm%d: waiting for power off: %w", pm.n, ctx.Err())
	}
}

// Ports returns the PM's NICs in PCI order.
func (pm *PM) Ports() []Port {
	ports := make([]Port, len(pm.nics))
	for i, c := range pm.nics {
		ports[i] = c.Port
	}
	return ports
}

// SetLink plugs (up) or unplugs the cable of one of the PM's links (see
// Ports): LinkPriv0 and LinkIbiz0 (LinkIbiz0A and LinkIbiz0B instead with
// Options.Ibiz0Bond), LinkSync0 with Options.SyncLink, LinkBiz(k) with
// Options.BusinessLinks.
func (pm *PM) SetLink(ctx context.Context, link string, up bool) error {
	if !slices.ContainsFunc(pm.nics, func(c nic) bool { return c.Link == link }) {
		return fmt.Errorf("pm%d: set link: unknown link %q, this PM has %s", pm.n, link, linkNames(pm.nics))
	}
	c := pm.QMP()
	if c == nil {
		return fmt.Errorf("pm%d: set link %s: powered off", pm.n, link)
	}
	if err := c.Execute(ctx, "set_link", map[string]any{"name": link, "up": up}, nil); err != nil {
		return fmt.Errorf("pm%d: set link %s: %w", pm.n, link, err)
	}
	return nil
}

// SetAllLinks plugs (up) or unplugs the cable of every link of the PM,
// as a PM that loses (or gets back) all its network would.
func (pm *PM) SetAllLinks(ctx context.Context, up bool) error {
	for _, c := range pm.nics {
		if err := pm.SetLink(ctx, c.Link, up); err != nil {
			return err
		}
	}
	return nil
}

// ExecResult is what a command run over the test channel produced.
type ExecResult struct {
	Exit   int
	Stdout []byte
	Stderr []byte
}

// Exec runs argv on the PM over the test channel. A non-zero exit status is
// returned as an error that quotes stderr, together with the result. The
// guest is told to give up when ctx's deadline passes (one minute without).
func (pm *PM) Exec(ctx context.Context, argv ...string) (ExecResult, error) {
	if len(argv) == 0 {
		return ExecResult{}, fmt.Errorf("pm%d: exec: empty argv", pm.n)
	}
	timeout := defaultExecTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	resp, err := pm.tc.call(ctx, tcRequest{Op: "exec", Argv: argv, TimeoutMS: max(timeout.Milliseconds(), 1)})
	if err != nil {
		return ExecResult{}, fmt.Errorf("pm%d: %s: %w", pm.n, strings.Join(argv, " "), err)
	}
	res := ExecResult{Exit: resp.Exit, Stdout: resp.Stdout, Stderr: resp.Stderr}
	if res.Exit != 0 {
		return res, fmt.Errorf("pm%d: %s: exit status %d: %s", pm.n, strings.Join(argv, " "), res.Exit, bytes.TrimSpace(res.Stderr))
	}
	return res, nil
}

// ReadFile reads a file of the PM over the test channel.
func (pm *PM) ReadFile(ctx context.Context, path string) ([]byte, error) {
	resp, err := pm.tc.call(ctx, tcRequest{Op: "read", Path: path})
	if err != nil {
		return nil, fmt.Errorf("pm%d: read %s: %w", pm.n, path, err)
	}
	return resp.Data, nil
}

// ServiceLog returns the log ring buffer of a service supervised by init.
func (pm *PM) ServiceLog(ctx context.Context, service string) ([]byte, error) {
	resp, err := pm.tc.call(ctx, tcRequest{Op: "log", Service: service})
	if err != nil {
		return nil, fmt.Errorf("pm%d: log of %s: %w", pm.n, service, err)
	}
	return resp.Data, nil
}

// Signal sends a signal (QUIT, TERM, KILL, USR1, ...) to a service that init
// supervises on the PM. SIGQUIT makes a Go service print all its goroutines
// to its log: see ServiceLog.
func (pm *PM) Signal(ctx context.Context, service, signal string) error {
	resp, err := pm.tc.call(ctx, tcRequest{Op: "signal", Service: service, Signal: signal})
	if err == nil && resp.Error != "" {
		err = errors.New(resp.Error)
	}
	if err != nil {
		return fmt.Errorf("pm%d: signal %s to %s: %w", pm.n, signal, service, err)
	}
	return nil
}

// Ping returns once the PM's test channel server answers.
func (pm *PM) Ping(ctx context.Context) error {
	if _, err := pm.tc.call(ctx, tcRequest{Op: "ping"}); err != nil {
		return fmt.Errorf("pm%d: %w", pm.n, err)
	}
	return nil
}

func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(line)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func readFile(path string) []byte {
	b, _ := os.ReadFile(path)
	return b
}

// tail returns the last n lines of b.
func tail(b []byte, n int) []byte {
	b = bytes.TrimRight(b, "\n")
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == '\n' {
			n--
			if n == 0 {
				return b[i+1:]
			}
		}
	}
	return b
}
