package drbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Runner runs argv (argv[0] an absolute path) and returns its stdout. A
// failure is an error that keeps what the command said on stderr.
type Runner func(ctx context.Context, argv []string) ([]byte, error)

// Default paths of the tools inside a PM image.
const (
	DefaultAdm      = "/lib/drbd/drbdadm-84"
	DefaultSetup    = "/lib/drbd/drbdsetup-84"
	DefaultMeta     = "/sbin/drbdmeta"
	DefaultProcPath = "/proc/drbd"
)

// ExecPath is the PATH ExecRunner gives the tools. drbdadm-84 looks for
// drbdsetup-84 and drbdmeta next to itself (the directory of argv[0]) and
// otherwise by bare name through execvp, i.e. PATH; drbdmeta is not in
// /lib/drbd, so without --drbdmeta it would need /sbin on the PATH. Admin
// passes both paths explicitly; PATH is the fallback.
const ExecPath = "/sbin:/usr/sbin:/bin:/usr/bin:/lib/drbd"

// maxErrText bounds the stderr/stdout kept in an error.
const maxErrText = 4096

// CmdError is a failed command. It unwraps to the *exec.ExitError (and
// to the context error when the context ended the command).
type CmdError struct {
	Argv     []string
	ExitCode int // -1 when the command did not exit normally
	Stderr   string
	Stdout   string
	Err      error
	ctxErr   error
}

// Error is one line: the argv, how it failed, and what it said with line
// breaks turned into "; " (the raw text stays in Stderr and Stdout).
func (e *CmdError) Error() string {
	var b strings.Builder
	b.WriteString(strings.Join(e.Argv, " "))
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	if e.ctxErr != nil {
		b.WriteString(" (")
		b.WriteString(e.ctxErr.Error())
		b.WriteString(")")
	}
	if msg := e.text(); msg != "" {
		b.WriteString(": ")
		b.WriteString(oneLine(msg))
	}
	return b.String()
}

// text is what the tool said: stderr, or stdout when stderr is empty
// (drbdmeta prints some refusals to stdout).
func (e *CmdError) text() string {
	if e.Stderr != "" {
		return e.Stderr
	}
	return e.Stdout
}

func oneLine(s string) string {
	var parts []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}

func (e *CmdError) Unwrap() []error {
	if e.ctxErr != nil {
		return []error{e.Err, e.ctxErr}
	}
	return []error{e.Err}
}

// ExecRunner runs commands with os/exec: stdin is /dev/null (no tool may
// wait for a "yes"), the environment is the agent's with PATH set to
// ExecPath and LC_ALL=C so messages are the English ones matched below.
// The command runs in its own process group, and a cancelled context
// kills the whole group: drbdadm forks drbdsetup and drbdmeta.
func ExecRunner() Runner {
	return func(ctx context.Context, argv []string) ([]byte, error) {
		if len(argv) == 0 {
			return nil, errors.New("drbd: empty command")
		}
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = execEnv(os.Environ())
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error {
			if cmd.Process == nil {
				return nil
			}
			return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
		cmd.WaitDelay = 5 * time.Second
		err := cmd.Run()
		if err == nil {
			return stdout.Bytes(), nil
		}
		ce := &CmdError{
			Argv:     argv,
			ExitCode: -1,
			Stderr:   clip(stderr.String()),
			Stdout:   clip(stdout.String()),
			Err:      err,
			ctxErr:   ctx.Err(),
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			ce.ExitCode = ee.ExitCode()
		}
		return stdout.Bytes(), ce
	}
}

func execEnv(env []string) []string {
	out := make([]string, 0, len(env)+2)
	for _, kv := range env {
		if strings.HasPrefix(kv, "PATH=") || strings.HasPrefix(kv, "LC_ALL=") || strings.HasPrefix(kv, "LANG=") {
			continue
		}
		out = append(out, kv)
	}
	// drbd-utils 9 warns on every call that the 8.4 module is not 9.
	return append(out, "PATH="+ExecPath, "LC_ALL=C", "DRBD_DONT_WARN_ON_VERSION_MISMATCH=1")
}

func clip(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > maxErrText {
		s = s[:maxErrText] + "…"
	}
	return s
}

// ExitCode is the exit status of the failed command in err's chain, or -1.
func ExitCode(err error) int {
	var ce *CmdError
	if errors.As(err, &ce) {
		return ce.ExitCode
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// State-change refusals (enum drbd_state_rv, negative) and configuration
// failures (ERR_*, >= 101) as drbdsetup prints them:
//
//	r3: State change failed: (-2) Need access to UpToDate data
//	3: Failure: (102) Local address(port) already in use.
var codeRe = regexp.MustCompile(`(?:State change failed|Failure): \((-?\d+)\)`)

// State-change codes worth telling apart.
const (
	SSTwoPrimaries   = -1  // "Multiple primaries not allowed by config"
	SSNoUpToDateDisk = -2  // "Need access to UpToDate data"
	SSPrimaryNOP     = -7  // "Refusing to be Primary while peer is not outdated"
	SSDeviceInUse    = -12 // "Device is held open by someone"
)

// Code returns the DRBD result code a failed command reported.
func Code(err error) (int, bool) {
	var ce *CmdError
	if !errors.As(err, &ce) {
		return 0, false
	}
	for _, s := range []string{ce.Stderr, ce.Stdout} {
		if m := codeRe.FindStringSubmatch(s); m != nil {
			if c, err := strconv.Atoi(m[1]); err == nil {
				return c, true
			}
		}
	}
	return 0, false
}

func hasCode(err error, code int) bool {
	c, ok := Code(err)
	return ok && c == code
}

// IsNeedUpToDate: promotion refused because no UpToDate data is reachable
// (local disk not UpToDate and the peer's unknown), or a Primary could not
// outdate its peer.
func IsNeedUpToDate(err error) bool { return hasCode(err, SSNoUpToDateDisk) }

// IsTwoPrimaries: promotion refused because the peer is Primary and
// allow-two-primaries is off.
func IsTwoPrimaries(err error) bool { return hasCode(err, SSTwoPrimaries) }

// IsPeerNotOutdated: promotion refused while the peer may still be
// writing (fencing could not outdate it).
func IsPeerNotOutdated(err error) bool { return hasCode(err, SSPrimaryNOP) }

// IsDeviceInUse: demotion (or down) refused because someone, e.g. QEMU,
// still holds the device open.
func IsDeviceInUse(err error) bool { return hasCode(err, SSDeviceInUse) }

// Admin runs the DRBD 8.4 tools for resources of one config file.
type Admin struct {
	Run    Runner
	Config string // path of the drbd.conf written by Render
	Adm    string // drbdadm-84; DefaultAdm when empty
	Setup  string // drbdsetup-84; DefaultSetup when empty
	Meta   string // drbdmeta; DefaultMeta when empty
	// ProcPath is read by Proc; DefaultProcPath when empty.
	ProcPath string
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// adm builds a drbdadm-84 argv. The tool paths are passed explicitly so
// that nothing depends on argv[0]'s directory or on PATH. Options for
// drbdsetup/drbdmeta go after "--" and before the command: drbdadm hands
// such words to the tool it runs (its documented "drbdadm -- --force
// primary res" form).
func (a *Admin) adm(toolOpts []string, cmd, res string) []string {
	argv := []string{
		orDefault(a.Adm, DefaultAdm),
		"-c", a.Config,
		"--drbdsetup=" + orDefault(a.Setup, DefaultSetup),
		"--drbdmeta=" + orDefault(a.Meta, DefaultMeta),
	}
	if len(toolOpts) > 0 {
		argv = append(argv, "--")
		argv = append(argv, toolOpts...)
	}
	return append(argv, cmd, res)
}

func (a *Admin) run(ctx context.Context, toolOpts []string, cmd, res string) ([]byte, error) {
	if err := validName(res); err != nil {
		return nil, err
	}
	if a.Config == "" {
		return nil, errors.New("drbd: Admin has no Config path")
	}
	if a.Run == nil {
		return nil, errors.New("drbd: Admin has no Runner")
	}
	out, err := a.Run(ctx, a.adm(toolOpts, cmd, res))
	if err != nil {
		return out, fmt.Errorf("drbd %s %s: %w", cmd, res, err)
	}
	return out, nil
}

func (a *Admin) do(ctx context.Context, cmd, res string, toolOpts ...string) error {
	_, err := a.run(ctx, toolOpts, cmd, res)
	return err
}

// CreateMD writes fresh internal meta data (current UUID
// UUIDJustCreated) on the resource's backing disk. drbdmeta asks for a
// typed "yes" when the area holds data or old meta data, and with stdin
// not a terminal it refuses instead; --force, handed through drbdadm,
// answers yes. Call it only on a newly created logical volume.
//
//	drbdadm-84 -c F --drbdsetup=... --drbdmeta=... -- --force create-md res
//	→ drbdmeta <minor> v08 <disk> internal create-md --force
func (a *Admin) CreateMD(ctx context.Context, res string) error {
	return a.do(ctx, "create-md", res, "--force")
}

// Up creates the resource and minor, attaches the disk and connects.
func (a *Admin) Up(ctx context.Context, res string) error { return a.do(ctx, "up", res) }

// Down disconnects, detaches and deletes the minor and resource.
func (a *Admin) Down(ctx context.Context, res string) error { return a.do(ctx, "down", res) }

// Attach attaches the backing disk (after apply-al).
func (a *Admin) Attach(ctx context.Context, res string) error { return a.do(ctx, "attach", res) }

// Detach detaches the backing disk; the leg becomes Diskless.
func (a *Admin) Detach(ctx context.Context, res string) error { return a.do(ctx, "detach", res) }

// Connect starts connecting to the peer. discardMyData makes this leg the
// split-brain victim: on reconnect it becomes SyncTarget and loses the
// writes it made alone.
func (a *Admin) Connect(ctx context.Context, res string, discardMyData bool) error {
	if discardMyData {
		return a.do(ctx, "connect", res, "--discard-my-data")
	}
	return a.do(ctx, "connect", res)
}

// Disconnect drops the connection; the leg becomes StandAlone.
func (a *Admin) Disconnect(ctx context.Context, res string) error {
	return a.do(ctx, "disconnect", res)
}

// Primary promotes the leg. force promotes even without UpToDate data
// reachable (first promotion after CreateMD, or the operator's choice);
// it marks this leg's data as the one that counts.
func (a *Admin) Primary(ctx context.Context, res string, force bool) error {
	if force {
		return a.do(ctx, "primary", res, "--force")
	}
	return a.do(ctx, "primary", res)
}

// Secondary demotes the leg.
func (a *Admin) Secondary(ctx context.Context, res string) error {
	return a.do(ctx, "secondary", res)
}

// Resize makes DRBD use grown backing disks (both legs must have grown).
func (a *Admin) Resize(ctx context.Context, res string) error { return a.do(ctx, "resize", res) }

// Outdate marks this leg's data Outdated.
func (a *Admin) Outdate(ctx context.Context, res string) error { return a.do(ctx, "outdate", res) }

// Adjust makes the running resource match the config file (creating,
// attaching and connecting what is missing).
func (a *Admin) Adjust(ctx context.Context, res string) error { return a.do(ctx, "adjust", res) }

// GetGI reads the generation identifiers of an attached minor with
// drbdsetup-84 get-gi. It fails on a minor without disk.
func (a *Admin) GetGI(ctx context.Context, minor int) (GI, error) {
	if minor < 0 || minor > MaxMinor {
		return GI{}, fmt.Errorf("drbd: minor %d outside 0..%d", minor, MaxMinor)
	}
	if a.Run == nil {
		return GI{}, errors.New("drbd: Admin has no Runner")
	}
	out, err := a.Run(ctx, []string{orDefault(a.Setup, DefaultSetup), "get-gi", strconv.Itoa(minor)})
	if err != nil {
		return GI{}, fmt.Errorf("drbd get-gi %d: %w", minor, err)
	}
	return ParseGI(out)
}

// ResourceGI reads the generation identifiers through drbdadm-84 get-gi,
// which asks the kernel when the disk is attached and otherwise reads the
// meta data on the backing disk with drbdmeta: it works on a leg that is
// down, as a split-brain decision needs.
func (a *Admin) ResourceGI(ctx context.Context, res string) (GI, error) {
	out, err := a.run(ctx, nil, "get-gi", res)
	if err != nil {
		return GI{}, err
	}
	return ParseGI(out)
}

// Proc reads and parses /proc/drbd (ProcPath).
func (a *Admin) Proc(ctx context.Context) (Proc, error) {
	if err := ctx.Err(); err != nil {
		return Proc{}, err
	}
	p := orDefault(a.ProcPath, DefaultProcPath)
	data, err := os.ReadFile(p)
	if err != nil {
		return Proc{}, fmt.Errorf("drbd: %w", err)
	}
	return ParseProc(data)
}
