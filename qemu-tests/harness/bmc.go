package harness

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// bmcBasePort + N is the UDP port on OperatorIP of PM N's simulated BMC
// (the IPMI port 623 cannot hold one BMC per PM on one address).
const bmcBasePort = 6230

// bmcUser is the IPMI user of every simulated BMC; the password is new for
// each BMC.
const bmcUser = "admin"

const (
	// bmcStartTimeout bounds the start of ipmi_sim until it answers.
	bmcStartTimeout = 10 * time.Second
	// bmcPowerTimeout bounds one power action a BMC takes on its PM.
	bmcPowerTimeout = time.Minute
	// bmcScriptWait is how long the chassis program waits for the harness
	// to answer, in seconds: longer than any power action.
	bmcScriptWait = 90
	// maxChassisLine bounds a request of the chassis program.
	maxChassisLine = 256
)

// simCommands is the ipmi_sim command file (ipmi_sim_cmd(5)) of every
// simulated BMC: one management controller, the BMC at IPMB address 0x20,
// with the device id values of OpenIPMI's example ipmisim1.emu.
const simCommands = `mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02
mc_enable 0x20
`

// simConfig is the configuration of one ipmi_sim: lanConf turns it into
// a lan.conf (ipmi_lan(5)).
type simConfig struct {
	Name           string // names the BMC's directory under the state dir
	IP             string
	Port           int
	User           string
	Password       string // at most 20 bytes (IPMI 2.0)
	GUID           string // 32 hex digits, the BMC's GUID for RMCP+
	ChassisControl string // program run as "PROG get power", "PROG set power 1", ...
}

// lanConf renders the configuration: one LAN channel on IP:Port (RMCP+;
// IPMI 1.5 sessions only with MD5), one admin user, and the chassis
// program that ipmi_sim runs for Chassis Control and Get Chassis Status.
func (c simConfig) lanConf() (string, error) {
	// lan.conf quotes strings with "..." and has no escapes.
	for _, f := range []struct{ name, v string }{
		{"name", c.Name}, {"user", c.User}, {"password", c.Password}, {"chassis control program", c.ChassisControl},
	} {
		if f.v == "" || strings.ContainsFunc(f.v, func(r rune) bool { return r <= ' ' || r == '"' || r == '\\' || r > '~' }) {
			return "", fmt.Errorf("ipmi_sim %s %q: empty, or has a space, quote, backslash or non-ASCII character", f.name, f.v)
		}
	}
	if ip := net.ParseIP(c.IP); ip == nil || ip.To4() == nil {
		return "", fmt.Errorf("ipmi_sim address %q is not an IPv4 address", c.IP)
	}
	if c.Port < 1 || c.Port > 65535 {
		return "", fmt.Errorf("ipmi_sim port %d out of range", c.Port)
	}
	if len(c.User) > 16 || len(c.Password) > 20 {
		return "", errors.New("ipmi_sim user longer than 16 bytes or password longer than 20")
	}
	if g, err := hex.DecodeString(c.GUID); err != nil || len(g) != 16 {
		return "", fmt.Errorf("ipmi_sim GUID %q is not 32 hex digits", c.GUID)
	}
	return fmt.Sprintf(`# Written by the Dyad lab harness; see ipmi_lan(5).
name "%s"
set_working_mc 0x20
  startlan 1
    addr %s %d
    priv_limit admin
    allowed_auths_callback md5
    allowed_auths_user md5
    allowed_auths_operator md5
    allowed_auths_admin md5
    guid %s
  endlan
  chassis_control "%s"
  user 2 true "%s" "%s" admin 10 md5
`, c.Name, c.IP, c.Port, c.GUID, c.ChassisControl, c.User, c.Password), nil
}

// chassisScript is the chassis control program of a simulated BMC.
// ipmi_sim runs it inside the namespace for every chassis command; it
// hands the request over to the harness listening on the namespace's
// 127.0.0.1:port and prints the answer as ipmi_sim wants it.
func chassisScript(port int) string {
	return fmt.Sprintf(`#!/bin/bash
# Written by the Dyad lab harness: the chassis control program of ipmi_sim.
# ipmi_sim runs "$0 get power" (wants "power:0" or "power:1" on stdout) and
# "$0 set NAME VALUE" (power 0/1, reset 1, shutdown 1); a non-zero exit is
# an error for the IPMI client.
exec 3<>/dev/tcp/127.0.0.1/%d || { echo "chassis control: harness not listening" >&2; exit 1; }
printf '%%s\n' "$*" >&3
IFS=' ' read -r -t %d status reply <&3 || { echo "chassis control: harness did not answer $*" >&2; exit 1; }
if [ "$status" = ok ]; then
	[ -z "$reply" ] || printf '%%s\n' "$reply"
	exit 0
fi
echo "chassis control: $* failed: $reply" >&2
exit 1
`, port, bmcScriptWait)
}

// powerTarget is what a BMC powers: a *PM, or a fake in tests.
type powerTarget interface {
	PowerOn(ctx context.Context) error
	PowerOff(ctx context.Context) error
	PowerDown(ctx context.Context) error
	Running() bool
}

// chassisRequest is one call of the chassis control program: "get NAME..."
// or "set NAME VALUE [NAME VALUE]...".
type chassisRequest struct {
	set    bool
	params []chassisParam
}

type chassisParam struct {
	name, value string // value is empty for get
}

// parseChassisRequest parses a request line of the chassis control
// program. The program runs what ipmi_sim asks, but any process in the
// namespace can connect: the line is untrusted.
func parseChassisRequest(line string) (chassisRequest, error) {
	if len(line) > maxChassisLine {
		return chassisRequest{}, fmt.Errorf("request of %d bytes, at most %d", len(line), maxChassisLine)
	}
	f := strings.Fields(line)
	if len(f) < 2 {
		return chassisRequest{}, fmt.Errorf("request %q: want get NAME... or set NAME VALUE...", line)
	}
	var req chassisRequest
	switch f[0] {
	case "get":
		for _, name := range f[1:] {
			req.params = append(req.params, chassisParam{name: name})
		}
	case "set":
		req.set = true
		if len(f)%2 == 0 {
			return chassisRequest{}, fmt.Errorf("request %q: a name without a value", line)
		}
		for i := 1; i < len(f); i += 2 {
			req.params = append(req.params, chassisParam{name: f[i], value: f[i+1]})
		}
	default:
		return chassisRequest{}, fmt.Errorf("request %q: unknown verb %q", line, f[0])
	}
	for _, p := range req.params {
		if !isChassisWord(p.name) || (req.set && !isChassisWord(p.value)) {
			return chassisRequest{}, fmt.Errorf("request %q: names and values are lower-case letters, digits and _", line)
		}
	}
	return req, nil
}

func isChassisWord(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// chassisControl carries out the requests of one BMC's chassis control
// program on its PM, one at a time.
type chassisControl struct {
	pm     int
	target powerTarget
	log    *slog.Logger
	ctx    context.Context // ends when the BMC closes
	mu     sync.Mutex      // one power action at a time
	wg     sync.WaitGroup  // connections being answered
	served chan struct{}   // closed when serve returns
}

// serve answers connections on ln until it is closed.
func (c *chassisControl) serve(ln net.Listener) {
	defer close(c.served)
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		c.wg.Go(func() { c.answer(conn) })
	}
}

// answer reads one request line and writes one reply line: "ok", "ok
// power:1" (a line for the program to print) or "err MESSAGE".
func (c *chassisControl) answer(conn net.Conn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(bmcPowerTimeout + 10*time.Second))
	line, err := bufio.NewReader(io.LimitReader(conn, maxChassisLine+1)).ReadString('\n')
	if err != nil {
		c.log.Warn("bmc: reading chassis control request", "pm", c.pm, "err", err)
		fmt.Fprintf(conn, "err no request line of at most %d bytes\n", maxChassisLine)
		return
	}
	reply, err := c.do(line)
	c.log.Info("bmc: chassis control", "pm", c.pm, "request", strings.TrimSpace(line), "reply", reply, "err", err)
	if err != nil {
		reply = "err " + strings.Join(strings.Fields(err.Error()), " ")
	} else {
		reply = strings.TrimSpace("ok " + reply)
	}
	io.WriteString(conn, reply+"\n")
}

// do carries out a request line and returns what the program prints.
func (c *chassisControl) do(line string) (string, error) {
	req, err := parseChassisRequest(line)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, p := range req.params {
		if !req.set {
			if p.name != "power" {
				return "", fmt.Errorf("get %s: not simulated, only power", p.name)
			}
			state := "power:0"
			if c.target.Running() {
				state = "power:1"
			}
			out = append(out, state)
			continue
		}
		if err := c.set(p.name, p.value); err != nil {
			return "", fmt.Errorf("set %s %s: %w", p.name, p.value, err)
		}
	}
	return strings.Join(out, " "), nil
}

// set carries out one chassis command. Powering on a running PM and
// powering off or shutting down a PM that is off change nothing: a client
// that resends a command whose answer it missed gets the same result.
func (c *chassisControl) set(name, value string) error {
	ctx, cancel := context.WithTimeout(c.ctx, bmcPowerTimeout)
	defer cancel()
	t := c.target
	switch name + " " + value {
	case "power 1":
		if t.Running() {
			return nil
		}
		return t.PowerOn(ctx)
	case "power 0":
		return t.PowerOff(ctx)
	case "reset 1":
		if !t.Running() {
			return errors.New("powered off, nothing to reset")
		}
		if err := t.PowerOff(ctx); err != nil {
			return err
		}
		return t.PowerOn(ctx)
	case "shutdown 1":
		if !t.Running() {
			return nil
		}
		return t.PowerDown(ctx)
	}
	return errors.New("not simulated: only power 0/1, reset 1 and shutdown 1 are")
}

// BMC is a simulated BMC (ipmi_sim) for one PM, reachable from the PMs on the unit's namespace.
//
// It speaks IPMI 2.0 over LAN (RMCP+) on OperatorIP, UDP port 6230+N for
// PM N, to the user User with Password (new for each BMC, with admin
// privilege), and obeys chassis commands on its PM: power
// off is PM.PowerOff (the plug pulled), power on PM.PowerOn, hard reset
// PowerOff then PowerOn, soft off (ACPI) PM.PowerDown, and the chassis
// status is PM.Running. Power on while running and power or soft off while
// off change nothing; reset while off is refused. Other chassis commands
// (power cycle aside, which ipmi_sim turns into off and on) are refused.
//
// Its files (lan.conf, the chassis program, ipmi_sim's output in
// ipmi_sim.log) are in the unit's work dir under pmN-bmc.
type BMC struct {
	Addr     string // "10.99.0.254:PORT" as the PMs reach it
	User     string
	Password string

	pm      int
	log     *slog.Logger
	dir     string
	ln      net.Listener
	ctl     *chassisControl
	cancel  context.CancelFunc // ends ctl.ctx
	exited  chan struct{}      // closed once ipmi_sim has exited
	pid     int
	untrack func()

	closeOnce sync.Once

	mu   sync.Mutex
	stop func() bool // releases the watch on the context
}

// StartBMC starts a simulated BMC for PM pm (see BMC) inside the unit's
// namespace and returns once it answers. It runs until ctx ends, the BMC
// is closed or the unit is closed. Starting a second BMC for the same PM
// while the first runs fails: the port is taken.
//
// A scenario test gives the unit its PMs' BMCs as an operator would, then
// lets Dyad fence or power a PM through IPMI:
//
//	u := harness.StartT(t, harness.Options{})
//	b, err := u.StartBMC(t.Context(), 2)
//	if err != nil {
//		t.Fatal(err)
//	}
//	// Configure PM2's BMC in the unit: address b.Addr, user b.User,
//	// password b.Password, then make Dyad power PM2 off and watch
//	// u.PM(2).WaitOff.
func (u *Unit) StartBMC(ctx context.Context, pm int) (*BMC, error) {
	if pm < 1 || pm > len(u.pms) {
		return nil, fmt.Errorf("harness: bmc: unit has %d PMs, no pm%d", len(u.pms), pm)
	}
	return u.startBMC(ctx, pm, u.pms[pm-1])
}

func (u *Unit) startBMC(ctx context.Context, n int, target powerTarget) (_ *BMC, err error) {
	fail := func(err error) error { return fmt.Errorf("harness: bmc for pm%d: %w", n, err) }
	bin, err := exec.LookPath("ipmi_sim")
	if err != nil {
		return nil, fail(fmt.Errorf("ipmi_sim is not installed (Debian package openipmi): %w", err))
	}
	addr := net.JoinHostPort(OperatorIP, strconv.Itoa(bmcBasePort+n))
	// ipmi_sim binds with SO_REUSEADDR: a second one on the port would
	// start and share the traffic. A bind without it finds the port taken.
	err = u.ns.do(func() error {
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		return nil, fail(fmt.Errorf("port %s taken (does a BMC for pm%d run already?): %w", addr, n, err))
	}
	dir := filepath.Join(u.workDir, fmt.Sprintf("pm%d-bmc", n))
	// Users and SDRs that ipmi_sim persisted would override lan.conf.
	if err := os.RemoveAll(dir); err != nil {
		return nil, fail(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o755); err != nil {
		return nil, fail(err)
	}
	secret := make([]byte, 8+16)
	rand.Read(secret)
	b := &BMC{
		Addr:     addr,
		User:     bmcUser,
		Password: hex.EncodeToString(secret[:8]),
		pm:       n,
		log:      u.log,
		dir:      dir,
		exited:   make(chan struct{}),
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	conf, err := simConfig{
		Name:           fmt.Sprintf("pm%d", n),
		IP:             OperatorIP,
		Port:           bmcBasePort + n,
		User:           b.User,
		Password:       b.Password,
		GUID:           hex.EncodeToString(secret[8:]),
		ChassisControl: filepath.Join(dir, "chassis-control"),
	}.lanConf()
	if err != nil {
		return nil, fail(err)
	}

	// The chassis program runs inside the namespace: so does its listener.
	err = u.ns.do(func() error {
		var lc net.ListenConfig
		var err error
		b.ln, err = lc.Listen(ctx, "tcp", "127.0.0.1:0")
		return err
	})
	if err != nil {
		return nil, fail(fmt.Errorf("chassis control listener: %w", err))
	}
	ctlCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.cancel = cancel
	b.ctl = &chassisControl{pm: n, target: target, log: b.log, ctx: ctlCtx, served: make(chan struct{})}
	go b.ctl.serve(b.ln)
	if !u.track(b) {
		b.shut()
		return nil, fail(errors.New("unit closed"))
	}
	b.untrack = func() { u.untrack(b) }
	defer func() {
		if err != nil {
			b.Close()
		}
	}()

	files := []struct {
		name, data string
		mode       os.FileMode
	}{
		{"chassis-control", chassisScript(b.ln.Addr().(*net.TCPAddr).Port), 0o755},
		{"lan.conf", conf, 0o600},
		{"sim.emu", simCommands, 0o644},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), []byte(f.data), f.mode); err != nil {
			return nil, fail(err)
		}
	}
	logPath := filepath.Join(dir, "ipmi_sim.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fail(err)
	}
	defer logf.Close()
	cmd := exec.Command("ip", "netns", "exec", u.ns.name, bin,
		"-c", filepath.Join(dir, "lan.conf"), "-f", filepath.Join(dir, "sim.emu"), "-s", filepath.Join(dir, "state"), "-n")
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that Close also ends a chassis program
	// ipmi_sim is waiting on; Pdeathsig ends it with the test process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := startHeld(cmd, b.exited, nil); err != nil {
		close(b.exited)
		return nil, fail(fmt.Errorf("start ipmi_sim: %w", err))
	}
	b.pid = cmd.Process.Pid

	startCtx, cancelStart := context.WithTimeout(ctx, bmcStartTimeout)
	defer cancelStart()
	if err := b.waitAnswer(startCtx, u.ns); err != nil {
		return nil, fail(fmt.Errorf("%w; ipmi_sim output: %s", err, tail(readFile(logPath), 20)))
	}
	b.mu.Lock()
	b.stop = context.AfterFunc(ctx, func() { b.Close() })
	b.mu.Unlock()
	u.log.Info("bmc started", "pm", n, "addr", b.Addr, "dir", dir)
	return b, nil
}

// rmcpPing is an RMCP presence ping (ASF), which every IPMI LAN interface
// answers with a pong.
var rmcpPing = []byte{0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x80, 0x00, 0x00, 0x00}

// waitAnswer returns once the BMC's UDP port answers a presence ping. Any
// answer will do: only that ipmi_sim listens matters, not what it says.
func (b *BMC) waitAnswer(ctx context.Context, ns *namespace) error {
	c, err := ns.dial(ctx, "udp", b.Addr)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 64)
	for {
		select {
		case <-b.exited:
			return errors.New("ipmi_sim exited")
		case <-ctx.Done():
			return fmt.Errorf("no answer on %s: %w", b.Addr, ctx.Err())
		default:
		}
		c.Write(rmcpPing)
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil && n > 0 {
			return nil
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			// Not bound yet, and the refusal came at once.
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// Dir is the directory of the BMC's files: lan.conf, the chassis control
// program and ipmi_sim.log.
func (b *BMC) Dir() string { return b.dir }

// Close stops ipmi_sim and the chassis control listener; a power action
// under way is cancelled. Close is idempotent.
func (b *BMC) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		if b.stop != nil {
			b.stop()
		}
		b.mu.Unlock()
		b.shut()
		if b.untrack != nil {
			b.untrack()
		}
		b.log.Info("bmc stopped", "pm", b.pm, "addr", b.Addr)
	})
	return nil
}

// shut ends ipmi_sim, its chassis programs and the listener, and waits for
// the answers under way.
func (b *BMC) shut() {
	b.ln.Close()
	b.cancel()
	if b.pid != 0 {
		// SIGKILL, not SIGTERM, on which ipmi_sim takes seconds to save
		// state that nobody reads. Once the leader is reaped its id may be
		// reused: no signal then.
		select {
		case <-b.exited:
		default:
			syscall.Kill(-b.pid, syscall.SIGKILL)
		}
		<-b.exited
	}
	// No connection is accepted once serve has returned.
	<-b.ctl.served
	b.ctl.wg.Wait()
}
