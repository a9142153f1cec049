package vm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dyad-ha/dyad/services/qmp"
)

// Exit kinds: how a VM's QEMU ended.
const (
	ExitGuestShutdown = "guest-shutdown" // the guest powered off (ACPI or its own choice)
	ExitCrash         = "crash"          // QEMU died or the guest panicked
	ExitPowerOff      = "poweroff"       // the agent quit QEMU (Power Off, a move, an abort)
	ExitMigrated      = "migrated"       // the guest moved to the peer
)

// NodeConfig is a PM's environment for running VMs.
type NodeConfig struct {
	Self int
	// QEMU is the path of qemu-system-x86_64.
	QEMU string
	// RunDir holds each VM's sockets and pid file (/run/dyad/vm/<id>);
	// DataDir its serial log and dumps (/data/dyad/vm/<id>).
	RunDir  string
	DataDir string
	// GuestDir holds the test guest's vmlinuz, initrd.img and cmdline.
	GuestDir string
	// VCDDir holds the VCDs (ISO images) VMs boot from.
	VCDDir      string
	Accel       Accel
	CPU         string
	CPUFeatures []string
	// Taps attaches a started VM's taps to their networks' bridges.
	Taps Taps
	// Changed is called when a VM's QEMU ended or changed state, so that
	// the agent reconciles at once.
	Changed func()
	Log     *slog.Logger
}

// Taps connects VM taps to shared networks.
type Taps interface {
	// Attach puts tap into the bridge of shared network network and sets
	// it up.
	Attach(ctx context.Context, tap, network string) error
}

// NodeDesired is what one reconcile round of a PM needs.
type NodeDesired struct {
	VMs []Record
	// Device returns the block device of volume id when it is writable on
	// this PM.
	Device func(volume int) (string, bool)
}

// VMReport is what a PM reports of one VM.
type VMReport struct {
	ID int `json:"id"`
	// Running: a QEMU process of the VM exists on this PM.
	Running  bool      `json:"running"`
	Incoming bool      `json:"incoming,omitempty"`
	Status   string    `json:"status,omitempty"` // QMP query-status
	Booted   bool      `json:"booted,omitempty"`
	Started  time.Time `json:"started,omitzero"`
	StartSeq int       `json:"start_seq"`
	// Stopping: an ACPI shutdown was sent and the guest is still up;
	// ShutdownTimedOut: it did not power off in time.
	Stopping         bool      `json:"stopping,omitempty"`
	ShutdownTimedOut bool      `json:"shutdown_timed_out,omitempty"`
	Dumping          bool      `json:"dumping,omitempty"`
	LastDump         string    `json:"last_dump,omitempty"`
	LastExit         *Exit     `json:"last_exit,omitempty"`
	Crashes          []Crash   `json:"crashes,omitempty"`
	Critical         bool      `json:"critical,omitempty"`
	Error            string    `json:"error,omitempty"`
	At               time.Time `json:"at"`
}

// Exit is how a VM's QEMU ended on a PM.
type Exit struct {
	Kind     string    `json:"kind"`
	StartSeq int       `json:"start_seq"`
	At       time.Time `json:"at"`
	Detail   string    `json:"detail,omitempty"`
}

// Crash is one crash a PM saw, with the operator start it belonged to.
type Crash struct {
	At       time.Time `json:"at"`
	StartSeq int       `json:"start_seq"`
}

// NodeReport is a PM's report of its VMs.
type NodeReport struct {
	Node int        `json:"node"`
	At   time.Time  `json:"at"`
	VMs  []VMReport `json:"vms"`
}

// VM returns the report of VM id.
func (r *NodeReport) VM(id int) (VMReport, bool) {
	if r == nil {
		return VMReport{}, false
	}
	for _, v := range r.VMs {
		if v.ID == id {
			return v, true
		}
	}
	return VMReport{}, false
}

// Node runs the VMs the unit database assigns to one PM: one QEMU process
// each, controlled over QMP. Its methods are safe for concurrent use.
type Node struct {
	cfg NodeConfig
	log *slog.Logger

	mu    sync.Mutex
	procs map[int]*proc
	// vms is the newest state per VM, including those without a process.
	vms map[int]*vmState
}

// vmState is what a PM remembers of a VM between rounds.
type vmState struct {
	lastExit *Exit
	crashes  []Crash
	critical bool
	err      string
	lastDump string
}

// proc is one QEMU process.
type proc struct {
	id       int
	pid      int
	qmp      *qmp.Client
	serial   *serialMux
	started  time.Time
	startSeq int
	incoming bool
	booted   bool
	status   string
	// quit is set when the agent ends the process itself: its exit is
	// then of that kind, not a crash.
	quit string
	// guestShutdown: QEMU announced a shutdown the guest asked for.
	guestShutdown bool
	panicked      bool
	shutdownSeq   int
	stopDeadline  time.Time
	timedOut      bool
	dumpSeq       int
	dumping       bool
	announced     bool
	// migrated: the guest now runs on the peer; this QEMU is an empty
	// shell (postmigrate) to quit.
	migrated bool
	done     chan struct{}
}

// NewNode prepares a PM's VM runner and adopts the QEMU processes a
// previous agent left running.
func NewNode(ctx context.Context, cfg NodeConfig) (*Node, error) {
	if cfg.QEMU == "" || cfg.RunDir == "" || cfg.DataDir == "" {
		return nil, errors.New("vm node: QEMU, RunDir and DataDir must be set")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Changed == nil {
		cfg.Changed = func() {}
	}
	for _, d := range []string{cfg.RunDir, cfg.DataDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("vm node: %w", err)
		}
	}
	n := &Node{cfg: cfg, log: cfg.Log, procs: map[int]*proc{}, vms: map[int]*vmState{}}
	n.adopt(ctx)
	return n, nil
}

func (n *Node) dir(id int) string     { return filepath.Join(n.cfg.RunDir, strconv.Itoa(id)) }
func (n *Node) dataDir(id int) string { return filepath.Join(n.cfg.DataDir, strconv.Itoa(id)) }

// PidFile is where the QEMU of VM id writes its pid.
func (n *Node) PidFile(id int) string { return filepath.Join(n.dir(id), "qemu.pid") }

// adopt takes over the QEMU processes of a previous agent: a restart of
// the agent must never stop or duplicate a running VM.
func (n *Node) adopt(ctx context.Context) {
	ents, err := os.ReadDir(n.cfg.RunDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		id, err := strconv.Atoi(e.Name())
		if err != nil || id <= 0 {
			continue
		}
		b, err := os.ReadFile(n.PidFile(id))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || syscall.Kill(pid, 0) != nil {
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := qmp.Dial(dctx, filepath.Join(n.dir(id), "qmp.sock"))
		cancel()
		if err != nil {
			n.log.Warn("cannot adopt a running QEMU", "vm", id, "pid", pid, "err", err)
			continue
		}
		p := &proc{id: id, pid: pid, qmp: c, started: time.Now(), startSeq: -1, booted: true, done: make(chan struct{})}
		p.serial = n.openSerial(id)
		n.log.Info("adopted a running VM", "vm", id, "pid", pid)
		n.procs[id] = p
		n.state(id)
		go n.watch(p, nil)
	}
}

// state returns VM id's memory; n.mu must be held or the Node unshared.
func (n *Node) state(id int) *vmState {
	s := n.vms[id]
	if s == nil {
		s = &vmState{}
		n.vms[id] = s
	}
	return s
}

// Report returns the PM's view of its VMs.
func (n *Node) Report() NodeReport {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := time.Now().UTC()
	r := NodeReport{Node: n.cfg.Self, At: now, VMs: []VMReport{}}
	ids := make([]int, 0, len(n.vms))
	for id := range n.vms {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		s := n.vms[id]
		v := VMReport{ID: id, LastExit: s.lastExit, Crashes: slices.Clone(s.crashes), Critical: s.critical, Error: s.err, LastDump: s.lastDump, At: now}
		if p := n.procs[id]; p != nil {
			v.Running, v.Incoming, v.Status, v.Booted = true, p.incoming, p.status, p.booted
			v.Started, v.StartSeq, v.Dumping = p.started, p.startSeq, p.dumping
			v.Stopping = !p.stopDeadline.IsZero() && !p.timedOut
			v.ShutdownTimedOut = p.timedOut
		}
		r.VMs = append(r.VMs, v)
	}
	return r
}

// Reconcile brings the PM's QEMU processes to d.
func (n *Node) Reconcile(ctx context.Context, d NodeDesired) {
	recs := map[int]Record{}
	for _, r := range d.VMs {
		recs[r.ID] = r
	}
	n.mu.Lock()
	procs := make(map[int]*proc, len(n.procs))
	for id, p := range n.procs {
		procs[id] = p
	}
	for id := range n.vms {
		if _, ok := recs[id]; !ok && procs[id] == nil {
			delete(n.vms, id)
		}
	}
	n.mu.Unlock()

	for id, p := range procs {
		if _, ok := recs[id]; !ok {
			n.stop(p, ExitPowerOff, "the VM was removed")
		}
	}
	for _, r := range d.VMs {
		p := procs[r.ID]
		if p != nil {
			n.tend(ctx, r, p)
			continue
		}
		n.maybeStart(ctx, r, d)
	}
}

// tend handles a VM whose QEMU runs here.
func (n *Node) tend(ctx context.Context, r Record, p *proc) {
	self := n.cfg.Self
	n.mu.Lock()
	quitting := p.quit != ""
	if p.startSeq < 0 {
		// Adopted from a previous agent: what the record asked before now
		// was done by that agent.
		p.startSeq, p.shutdownSeq, p.dumpSeq = r.StartSeq, r.ShutdownSeq, r.DumpSeq
	}
	incoming := p.incoming
	n.mu.Unlock()
	if quitting {
		return
	}
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var st struct {
		Status string `json:"status"`
	}
	if err := p.qmp.Execute(qctx, "query-status", nil, &st); err == nil {
		n.mu.Lock()
		p.status = st.Status
		n.mu.Unlock()
	}
	switch {
	case incoming && r.Node == self && p.status == "running":
		// The migration completed and the unit database says the VM is
		// ours: tell the switches where its MACs went.
		n.mu.Lock()
		p.incoming, p.booted, p.startSeq = false, true, r.StartSeq
		n.mu.Unlock()
		n.announce(ctx, p)
	case incoming && r.Migration.Active() && r.Migration.To == self:
		return // waiting for the source
	case incoming:
		n.stop(p, ExitPowerOff, "the migration was abandoned")
		return
	case r.Node != self && r.Migration.Active() && r.Migration.From == self && !p.migrated:
		// Source of a migration in progress.
	case r.Node != self:
		n.stop(p, ExitMigrated, fmt.Sprintf("the VM runs on PM %d", r.Node))
		return
	case !r.Run || r.Critical:
		n.stop(p, ExitPowerOff, "powered off")
		return
	}
	n.mu.Lock()
	if r.StartSeq > p.startSeq {
		p.startSeq = r.StartSeq
	}
	doShutdown := r.ShutdownSeq > p.shutdownSeq
	if doShutdown {
		p.shutdownSeq = r.ShutdownSeq
		timeout := r.ShutdownTimeout
		if timeout <= 0 {
			timeout = 2 * time.Minute
		}
		p.stopDeadline, p.timedOut = time.Now().Add(timeout), false
	}
	if !p.stopDeadline.IsZero() && !p.timedOut && time.Now().After(p.stopDeadline) {
		p.timedOut = true
		n.log.Warn("the guest did not shut down in time; it keeps running", "vm", r.Name)
	}
	doDump := r.DumpSeq > p.dumpSeq && !p.dumping
	if doDump {
		p.dumpSeq, p.dumping = r.DumpSeq, true
	}
	booted := p.booted
	n.mu.Unlock()

	if !booted && guestDidIO(qctx, p.qmp) {
		n.mu.Lock()
		p.booted = true
		n.mu.Unlock()
		n.cfg.Changed()
	}
	if doShutdown {
		n.log.Info("asking the guest to shut down (ACPI power button)", "vm", r.Name)
		if err := p.qmp.Execute(qctx, "system_powerdown", nil, nil); err != nil {
			n.log.Error("system_powerdown", "vm", r.Name, "err", err)
		}
	}
	if doDump {
		go n.dump(p, r)
	}
}

// guestDidIO reports whether the guest has read or written any of its
// disks: past that, it has left the firmware and is running.
func guestDidIO(ctx context.Context, c *qmp.Client) bool {
	var stats []struct {
		Stats struct {
			RdOps int64 `json:"rd_operations"`
			WrOps int64 `json:"wr_operations"`
		} `json:"stats"`
	}
	if err := c.Execute(ctx, "query-blockstats", nil, &stats); err != nil {
		return false
	}
	for _, s := range stats {
		if s.Stats.RdOps+s.Stats.WrOps > 0 {
			return true
		}
	}
	return false
}

func (n *Node) announce(ctx context.Context, p *proc) {
	n.mu.Lock()
	done := p.announced
	p.announced = true
	n.mu.Unlock()
	if done {
		return
	}
	// Gratuitous ARP and RARP for every NIC, as after any move (DESIGN §5).
	args := map[string]any{"initial": 50, "max": 550, "rounds": 5, "step": 100}
	if err := p.qmp.Execute(ctx, "announce-self", args, nil); err != nil {
		n.log.Warn("announce-self", "vm", p.id, "err", err)
	}
}

// dump writes the guest's memory to the data partition and restarts the
// guest (the command Dump).
func (n *Node) dump(p *proc, r Record) {
	defer n.cfg.Changed()
	path := filepath.Join(n.dataDir(r.ID), "dump-"+time.Now().UTC().Format("20060102T150405Z")+".elf")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	err := os.MkdirAll(filepath.Dir(path), 0o700)
	if err == nil {
		n.log.Info("dumping guest memory", "vm", r.Name, "file", path)
		err = p.qmp.Execute(ctx, "dump-guest-memory", map[string]any{"paging": false, "protocol": "file:" + path}, nil)
	}
	if err == nil {
		err = p.qmp.Execute(ctx, "system_reset", nil, nil)
	}
	n.mu.Lock()
	p.dumping = false
	s := n.state(r.ID)
	if err != nil {
		s.err = fmt.Sprintf("dump failed: %v", err)
	} else {
		s.lastDump, s.err = path, ""
	}
	n.mu.Unlock()
	if err != nil {
		n.log.Error("dump", "vm", r.Name, "err", err)
	}
}

// maybeStart starts VM r here if the unit database wants it to run here.
func (n *Node) maybeStart(ctx context.Context, r Record, d NodeDesired) {
	if r.Node != n.cfg.Self || !r.Run || r.Critical || r.Migration.Active() {
		n.setErr(r.ID, "")
		return
	}
	n.mu.Lock()
	s := n.state(r.ID)
	// A guest that shut itself down stays off until the operator starts
	// it again.
	if s.lastExit != nil && s.lastExit.Kind == ExitGuestShutdown && s.lastExit.StartSeq >= r.StartSeq {
		n.mu.Unlock()
		return
	}
	s.crashes = slices.DeleteFunc(s.crashes, func(c Crash) bool { return c.StartSeq < r.StartSeq })
	var times []time.Time
	for _, c := range s.crashes {
		times = append(times, c.At)
	}
	times = append(times, r.Crashes...)
	crashed := s.lastExit != nil && s.lastExit.Kind == ExitCrash && s.lastExit.StartSeq >= r.StartSeq
	if crashed && len(s.crashes) > 0 && (MTBF{}).Decide(slices.CompactFunc(sortedTimes(times), time.Time.Equal), time.Now()) == VerdictCritical {
		if !s.critical {
			n.log.Warn("the VM crashed too often; it stays down until Reset Device", "vm", r.Name, "crashes", len(s.crashes))
		}
		s.critical = true
		n.mu.Unlock()
		return
	}
	s.critical = false
	n.mu.Unlock()
	if err := n.start(ctx, r, d, false); err != nil {
		n.setErr(r.ID, err.Error())
		return
	}
	n.setErr(r.ID, "")
}

func sortedTimes(ts []time.Time) []time.Time {
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	return ts
}

func (n *Node) setErr(id int, msg string) {
	n.mu.Lock()
	s := n.state(id)
	changed := s.err != msg
	s.err = msg
	n.mu.Unlock()
	if changed && msg != "" {
		n.log.Warn("cannot start VM", "vm", id, "reason", msg)
	}
}

// machine builds the QEMU configuration of r on this PM.
func (n *Node) machine(r Record, d NodeDesired, incoming bool) (Machine, error) {
	dir := n.dir(r.ID)
	m := Machine{
		Name: r.Name, UUID: r.UUID, Accel: n.cfg.Accel, CPU: n.cfg.CPU, CPUFeatures: n.cfg.CPUFeatures,
		VCPUs: r.VCPUs, MemoryBytes: r.MemoryBytes,
		SerialSocket: filepath.Join(dir, "serial.sock"),
		QMPSocket:    filepath.Join(dir, "qmp.sock"),
		VNCSocket:    filepath.Join(dir, "vnc.sock"),
		Incoming:     incoming,
		Paused:       !incoming,
	}
	for i, v := range r.Volumes {
		dev, ok := d.Device(v.ID)
		if !ok {
			return Machine{}, fmt.Errorf("waiting for volume %d to be writable on this PM", v.ID)
		}
		if v.Boot {
			m.BootDisk = i
		}
		m.Disks = append(m.Disks, Disk{Path: dev, Direct: true})
	}
	for i, nic := range r.NICs {
		mac, err := net.ParseMAC(nic.MAC)
		if err != nil {
			return Machine{}, fmt.Errorf("NIC %d: %w", i, err)
		}
		m.NICs = append(m.NICs, Tap{Ifname: TapName(r.ID, i), MAC: mac})
	}
	switch {
	case r.Boot == BootTestGuest:
		cmd, err := os.ReadFile(filepath.Join(n.cfg.GuestDir, "cmdline"))
		if err != nil {
			return Machine{}, fmt.Errorf("test guest: %w", err)
		}
		m.Kernel = filepath.Join(n.cfg.GuestDir, "vmlinuz")
		m.Initrd = filepath.Join(n.cfg.GuestDir, "initrd.img")
		m.Append = strings.TrimSpace(string(cmd))
	case r.Boot == BootCD || r.StartCD:
		m.BootFromCD = true
	}
	if r.CD != "" {
		if err := CheckCD(r.CD); err != nil {
			return Machine{}, err
		}
		m.CDROM = filepath.Join(n.cfg.VCDDir, r.CD)
		if _, err := os.Stat(m.CDROM); err != nil {
			return Machine{}, fmt.Errorf("CD image: %w", err)
		}
	}
	if m.BootFromCD && m.CDROM == "" {
		return Machine{}, errors.New("boot from CD: the VM has no CD image")
	}
	return m, nil
}

// TapName is the tap of NIC i of VM id.
func TapName(id, i int) string { return fmt.Sprintf("vm%dn%d", id, i) }

// start runs QEMU for r: paused, then taps and serial console connected,
// then resumed. An incoming QEMU waits for a migration instead.
func (n *Node) start(ctx context.Context, r Record, d NodeDesired, incoming bool) error {
	m, err := n.machine(r, d, incoming)
	if err != nil {
		return err
	}
	argv, err := Argv(m)
	if err != nil {
		return err
	}
	dir := n.dir(r.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, f := range []string{"qmp.sock", "serial.sock", "vnc.sock", "qemu.pid"} {
		os.Remove(filepath.Join(dir, f))
	}
	argv = append(argv, "-pidfile", n.PidFile(r.ID))
	logf, err := os.OpenFile(filepath.Join(dir, "qemu.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(n.cfg.QEMU, argv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A process group of its own: signals meant for the agent must not
	// reach the VM, and the VM outlives an agent restart.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	n.log.Info("starting QEMU", "vm", r.Name, "incoming", incoming, "accel", m.Accel)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting QEMU: %w", err)
	}
	logf.Close()
	renice(cmd.Process.Pid)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	c, err := waitQMP(ctx, m.QMPSocket, exited)
	if err != nil {
		cmd.Process.Kill()
		out, _ := os.ReadFile(filepath.Join(dir, "qemu.log"))
		return fmt.Errorf("QEMU did not come up: %w: %s", err, lastLine(out))
	}
	// Its vCPU threads exist now; they take the nice value of the thread
	// that made them only if that one was reniced in time.
	renice(cmd.Process.Pid)
	p := &proc{id: r.ID, pid: cmd.Process.Pid, qmp: c, started: time.Now().UTC(), startSeq: r.StartSeq, incoming: incoming,
		shutdownSeq: r.ShutdownSeq, dumpSeq: r.DumpSeq, done: make(chan struct{})}
	p.serial = n.openSerial(r.ID)
	fail := func(err error) error {
		p.quit = ExitPowerOff
		c.Execute(context.Background(), "quit", nil, nil)
		cmd.Process.Kill()
		c.Close()
		if p.serial != nil {
			p.serial.Close()
		}
		return err
	}
	for i, nic := range r.NICs {
		if n.cfg.Taps == nil {
			return fail(errors.New("this PM cannot attach VM network interfaces"))
		}
		if err := n.cfg.Taps.Attach(ctx, TapName(r.ID, i), nic.Network); err != nil {
			return fail(fmt.Errorf("NIC %d on network %s: %w", i, nic.Network, err))
		}
	}
	if !incoming {
		if err := c.Execute(ctx, "cont", nil, nil); err != nil {
			return fail(fmt.Errorf("resuming the VM: %w", err))
		}
	}
	n.mu.Lock()
	n.procs[r.ID] = p
	s := n.state(r.ID)
	s.err = ""
	n.mu.Unlock()
	go n.watch(p, exited)
	n.cfg.Changed()
	return nil
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// waitQMP waits for QEMU's QMP socket, or for QEMU to exit.
func waitQMP(ctx context.Context, path string, exited <-chan error) (*qmp.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if _, err := os.Stat(path); err == nil {
			c, err := qmp.Dial(ctx, path)
			if err == nil {
				return c, nil
			}
		}
		select {
		case err := <-exited:
			return nil, fmt.Errorf("QEMU exited: %v", err)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// exitReleased marks a process the agent let go of without stopping it.
const exitReleased = "released"

// Release lets go of every QEMU without stopping it, for an agent that
// stops: the next agent adopts them.
func (n *Node) Release() {
	n.mu.Lock()
	procs := n.procs
	n.procs = map[int]*proc{}
	for _, p := range procs {
		p.quit = exitReleased
	}
	n.mu.Unlock()
	for _, p := range procs {
		p.qmp.Close()
		if p.serial != nil {
			p.serial.Close()
		}
		<-p.done
	}
}

// watch follows p's QMP events until QEMU ends, then records how it ended.
func (n *Node) watch(p *proc, exited <-chan error) {
	for ev := range p.qmp.Events() {
		switch ev.Name {
		case "SHUTDOWN":
			var d struct {
				Guest bool `json:"guest"`
			}
			json.Unmarshal(ev.Data, &d)
			n.mu.Lock()
			p.guestShutdown = d.Guest
			n.mu.Unlock()
		case "GUEST_PANICKED":
			n.log.Warn("the guest panicked", "vm", p.id)
			n.mu.Lock()
			p.panicked = true
			n.mu.Unlock()
			// -action panic=pause keeps the guest for a dump; the crash
			// policy restarts it.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			p.qmp.Execute(ctx, "quit", nil, nil)
			cancel()
		}
	}
	n.mu.Lock()
	released := p.quit == exitReleased
	n.mu.Unlock()
	if released {
		if exited != nil {
			// Reap it in the background should it end while this
			// process still lives; the next agent watches it over QMP.
			go func() { <-exited }()
		}
		close(p.done)
		return
	}
	var werr error
	if exited != nil {
		select {
		case werr = <-exited:
		case <-time.After(10 * time.Second):
			syscall.Kill(p.pid, syscall.SIGKILL)
			werr = <-exited
		}
	} else {
		// Adopted: not our child; wait until the pid is gone.
		for i := 0; i < 100 && syscall.Kill(p.pid, 0) == nil; i++ {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if p.serial != nil {
		p.serial.Close()
	}
	now := time.Now().UTC()
	n.mu.Lock()
	ex := &Exit{StartSeq: p.startSeq, At: now}
	switch {
	case p.quit != "":
		ex.Kind = p.quit
	case p.guestShutdown && !p.panicked:
		ex.Kind = ExitGuestShutdown
	default:
		ex.Kind = ExitCrash
		if p.panicked {
			ex.Detail = "the guest panicked"
		} else if werr != nil {
			ex.Detail = "QEMU ended: " + werr.Error()
		} else {
			ex.Detail = "QEMU ended without a shutdown"
		}
	}
	s := n.state(p.id)
	s.lastExit = ex
	if ex.Kind == ExitCrash {
		s.crashes = append(s.crashes, Crash{At: now, StartSeq: p.startSeq})
		s.crashes = slices.DeleteFunc(s.crashes, func(c Crash) bool { return now.Sub(c.At) > DefaultMTBFWindow })
	}
	if n.procs[p.id] == p {
		delete(n.procs, p.id)
	}
	n.mu.Unlock()
	close(p.done)
	n.log.Info("QEMU ended", "vm", p.id, "kind", ex.Kind, "detail", ex.Detail)
	n.cfg.Changed()
}

// stop ends p's QEMU as kind (never a crash) and waits for it.
func (n *Node) stop(p *proc, kind, why string) {
	n.mu.Lock()
	if p.quit != "" {
		n.mu.Unlock()
		return
	}
	p.quit = kind
	n.mu.Unlock()
	n.log.Info("stopping QEMU", "vm", p.id, "why", why)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := p.qmp.Execute(ctx, "quit", nil, nil)
	cancel()
	if err != nil {
		syscall.Kill(p.pid, syscall.SIGKILL)
	}
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		syscall.Kill(p.pid, syscall.SIGKILL)
	}
}

// PrepareIncoming starts VM r's QEMU here as a migration target listening
// on listen (host:port on the replication link) and returns the URI the
// source migrates to.
func (n *Node) PrepareIncoming(ctx context.Context, r Record, d NodeDesired, listen string) (string, error) {
	n.mu.Lock()
	old := n.procs[r.ID]
	n.mu.Unlock()
	if old != nil {
		return "", fmt.Errorf("VM %s already has a QEMU on PM %d", r.Name, n.cfg.Self)
	}
	if err := n.start(ctx, r, d, true); err != nil {
		return "", err
	}
	n.mu.Lock()
	p := n.procs[r.ID]
	n.mu.Unlock()
	uri := "tcp:" + listen
	if err := p.qmp.Execute(ctx, "migrate-incoming", map[string]any{"uri": uri}, nil); err != nil {
		n.stop(p, ExitPowerOff, "the target could not listen")
		return "", fmt.Errorf("target listening on %s: %w", listen, err)
	}
	return uri, nil
}

// AbortIncoming ends an incoming QEMU of VM id that did not receive the VM.
func (n *Node) AbortIncoming(id int) {
	n.mu.Lock()
	p := n.procs[id]
	n.mu.Unlock()
	if p != nil && p.incoming {
		n.stop(p, ExitPowerOff, "the migration failed")
	}
}

// Migrate moves VM id's running guest to the incoming QEMU at uri. On
// failure the guest keeps running here.
func (n *Node) Migrate(ctx context.Context, id int, uri string, opt MigrateOptions) (MigrateStats, error) {
	n.mu.Lock()
	p := n.procs[id]
	n.mu.Unlock()
	if p == nil || p.incoming {
		return MigrateStats{}, fmt.Errorf("VM %d does not run on PM %d", id, n.cfg.Self)
	}
	if opt.Log == nil {
		opt.Log = n.log.With("vm", id)
	}
	st, err := LiveMigrate(ctx, p.qmp, nil, uri, opt)
	if err == nil {
		n.mu.Lock()
		p.migrated = true
		n.mu.Unlock()
	}
	return st, err
}

// DialConsole connects to a running VM's serial ("serial") or graphical
// ("vnc") console.
func (n *Node) DialConsole(ctx context.Context, id int, kind string) (net.Conn, error) {
	n.mu.Lock()
	p := n.procs[id]
	n.mu.Unlock()
	if p == nil {
		return nil, fmt.Errorf("VM %d does not run on PM %d", id, n.cfg.Self)
	}
	switch kind {
	case "serial":
		if p.serial == nil {
			return nil, errors.New("the serial console is not connected")
		}
		return p.serial.Attach(), nil
	case "vnc":
		var d net.Dialer
		return d.DialContext(ctx, "unix", filepath.Join(n.dir(id), "vnc.sock"))
	}
	return nil, fmt.Errorf("console %q: want serial or vnc", kind)
}

// SerialLog returns the newest serial output of VM id kept on this PM.
func (n *Node) SerialLog(id int) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(n.dataDir(id), "serial.log"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

// Runs reports whether a QEMU of VM id runs on this PM.
func (n *Node) Runs(id int) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.procs[id] != nil
}

func (n *Node) openSerial(id int) *serialMux {
	if err := os.MkdirAll(n.dataDir(id), 0o700); err != nil {
		n.log.Error("serial log", "vm", id, "err", err)
		return nil
	}
	s, err := openSerialMux(filepath.Join(n.dir(id), "serial.sock"), filepath.Join(n.dataDir(id), "serial.log"), n.log.With("vm", id))
	if err != nil {
		n.log.Error("serial console", "vm", id, "err", err)
		return nil
	}
	return s
}

// vmNice is the scheduling priority of QEMU's threads: below the agent's,
// so that a busy guest never delays the heartbeats (a late heartbeat looks
// like a dead PM to the peer). An idle CPU still goes to the guest.
const vmNice = 10

// renice lowers the priority of every thread of process pid.
func renice(pid int) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return
	}
	for _, t := range tasks {
		if tid, err := strconv.Atoi(t.Name()); err == nil {
			syscall.Setpriority(syscall.PRIO_PROCESS, tid, vmNice)
		}
	}
}
