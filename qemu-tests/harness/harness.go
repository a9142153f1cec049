package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Artifact names inside Options.Out.
const (
	KernelFile    = "dyad-kernel"
	InitramfsFile = "dyad-initramfs.cpio.gz"
)

// Addresses of the lab network.
const (
	MgmtIP     = "10.99.0.10" // the unit's management (console) IP
	OperatorIP = "10.99.0.254"
	UnitName   = "lab"
)

// Drive ids of a PM's disks in QEMU: the names FailDisk takes.
const SystemDiskID = "disk0"

// DataDiskID is the drive id of data disk i, 0-based: data0, data1, ...
func DataDiskID(i int) string { return fmt.Sprintf("data%d", i) }

// maxDataDisks keeps every PCI device of the largest layout within the
// 32 slots of the i440FX bus.
const maxDataDisks = 8

// priv0BasePort + N is the UDP port of PM N's priv0 on the namespace's
// loopback; the namespace is private, so fixed ports cannot collide.
const priv0BasePort = 20000

// forwardDialTimeout bounds the connection to the target of a forwarder.
const forwardDialTimeout = 10 * time.Second

// closeTimeout bounds the power-off of every PM when a unit is closed.
const closeTimeout = 30 * time.Second

// Options describe a unit to boot. Zero values take the defaults.
type Options struct {
	Out       string // artifacts dir; default $DYAD_OUT, else out/ at the module root
	N         int    // number of PMs, 1 or 2; default 2
	WorkDir   string // disks, logs; default a new temp dir (kept)
	MemoryMiB int    // per PM; default 1024
	DiskGiB   int    // sparse raw virtio disk per PM; default 2
	// DataDisks is the number of further disks per PM for storage groups,
	// default 2, -1 for none. They are sparse raw files of DataDiskMiB
	// (default 1024) in WorkDir, attached as virtio-blk after the system
	// disk in PCI order (the guest names them vdb, vdc, ...), with drive
	// ids DataDiskID(i) (see FailDisk) and serials LAB-PM<n>-DATA<i>.
	DataDisks   int
	DataDiskMiB int
	// PrepareDataDisk, if set, is called with each blank data disk file
	// before the PMs power on, e.g. to put foreign data on one.
	PrepareDataDisk func(pm, disk int, path string) error
	ExtraCmdline    []string
	Log             *slog.Logger // default discards

	// NIC layout; without these each PM has priv0 and ibiz0 only. PCI
	// order: priv0, sync0, ibiz0 (or ibiz0a, ibiz0b), biz1..bizK.
	Ibiz0Bond     bool // two NICs (LinkIbiz0A, LinkIbiz0B) on the ibiz bridge instead of one; cmdline dyad.port.ibiz0=MAC,MAC
	SyncLink      bool // a second point-to-point link like priv0 (LinkSync0); cmdline dyad.port.sync0=MAC
	BusinessLinks int  // K segments, bridges biz1..bizK, one NIC LinkBiz(k) per PM on each; at most 9
	CrossBusiness bool // PM2's biz1 NIC is plugged into segment biz2 and its biz2 NIC into biz1
	// NoQuorum runs the unit without a quorum server. By default the
	// harness runs one in the namespace at QuorumAddr and gives it to
	// the PMs (dyad.quorum).
	NoQuorum bool
}

// Unit is a running lab unit. Close it.
type Unit struct {
	log     *slog.Logger
	ns      *namespace
	workDir string
	sockDir string
	accel   accel
	pms     []*PM
	http    *http.Transport

	mu       sync.Mutex
	closed   bool
	forwards map[io.Closer]struct{}
}

// Start creates the unit's namespace and network and powers on every PM.
// It returns once QEMU runs for each PM; the guests boot in the background.
func Start(ctx context.Context, opts Options) (_ *Unit, err error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	kernel := filepath.Join(opts.Out, KernelFile)
	initramfs := filepath.Join(opts.Out, InitramfsFile)
	for _, f := range []string{kernel, initramfs} {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("harness: artifact missing (run make image): %w", err)
		}
	}
	qemu, err := qemuBinary()
	if err != nil {
		return nil, err
	}
	acc, why, err := chooseAccel(ctx, qemu, kernel)
	if err != nil {
		return nil, err
	}
	opts.Log.Info("accelerator chosen", "accel", acc, "why", why)
	if err := os.MkdirAll(opts.WorkDir, 0o755); err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	// Unix socket paths are limited to 108 bytes, and test work dirs can be
	// longer: sockets live in a short dir of their own.
	sockDir, err := os.MkdirTemp("", "dyad-")
	if err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	u := &Unit{
		log:      opts.Log,
		workDir:  opts.WorkDir,
		sockDir:  sockDir,
		accel:    acc,
		forwards: make(map[io.Closer]struct{}),
	}
	u.http = &http.Transport{DialContext: u.Dial, MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second}
	defer func() {
		if err != nil {
			u.Close()
		}
	}()

	if u.ns, err = newNamespace(ctx); err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	setup := [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", BridgeIbiz, "type", "bridge"},
		{"addr", "add", OperatorIP + "/24", "dev", BridgeIbiz},
		{"link", "set", BridgeIbiz, "up"},
	}
	for _, b := range opts.businessBridges() {
		setup = append(setup,
			[]string{"link", "add", b, "type", "bridge"},
			[]string{"link", "set", b, "up"})
	}
	for n := 1; n <= opts.N; n++ {
		for _, c := range opts.layout(n) {
			if c.tap == "" {
				continue
			}
			setup = append(setup,
				[]string{"tuntap", "add", "dev", c.tap, "mode", "tap"},
				[]string{"link", "set", c.tap, "master", c.Bridge},
				[]string{"link", "set", c.tap, "up"})
		}
	}
	for _, args := range setup {
		if err := u.ns.run(ctx, args...); err != nil {
			return nil, fmt.Errorf("harness: network setup: %w", err)
		}
	}

	key := make([]byte, 32)
	rand.Read(key)
	if !opts.NoQuorum {
		if err := u.startQuorum(key); err != nil {
			return nil, fmt.Errorf("harness: %w", err)
		}
	}
	for n := 1; n <= opts.N; n++ {
		pm := &PM{
			n:       n,
			log:     u.log,
			ns:      u.ns.name,
			serial:  filepath.Join(opts.WorkDir, fmt.Sprintf("pm%d-serial.log", n)),
			qemuLog: filepath.Join(opts.WorkDir, fmt.Sprintf("pm%d-qemu.log", n)),
			qmpPath: filepath.Join(sockDir, fmt.Sprintf("pm%d.qmp", n)),
			tc:      testChannel{path: filepath.Join(sockDir, fmt.Sprintf("pm%d.tc", n))},
			nics:    opts.layout(n),
			disks:   []string{SystemDiskID},
		}
		disk := filepath.Join(opts.WorkDir, fmt.Sprintf("pm%d-disk.raw", n))
		if err := blankDisk(disk, int64(opts.DiskGiB)<<30); err != nil {
			return nil, fmt.Errorf("harness: pm%d: %w", n, err)
		}
		var dataDisks []string
		for i := range opts.dataDisks() {
			d := filepath.Join(opts.WorkDir, fmt.Sprintf("pm%d-data%d.raw", n, i))
			if err := blankDisk(d, int64(opts.DataDiskMiB)<<20); err != nil {
				return nil, fmt.Errorf("harness: pm%d: %w", n, err)
			}
			if opts.PrepareDataDisk != nil {
				if err := opts.PrepareDataDisk(n, i, d); err != nil {
					return nil, fmt.Errorf("harness: pm%d: preparing data disk %d: %w", n, i, err)
				}
			}
			dataDisks = append(dataDisks, d)
			pm.disks = append(pm.disks, DataDiskID(i))
		}
		for _, f := range []string{pm.serial, pm.qemuLog} {
			if err := os.Truncate(f, 0); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("harness: %w", err)
			}
		}
		cmdline := append([]string{
			"console=ttyS0", "panic=-1",
			"dyad.node=" + strconv.Itoa(n),
			"dyad.unit=" + UnitName,
			"dyad.mgmt=" + MgmtIP + "/24",
			fmt.Sprintf("dyad.ibiz0=10.99.0.%d/24", n),
			"dyad.unitkey=" + hex.EncodeToString(key),
			"dyad.testchannel=1",
		}, opts.portCmdline(n)...)
		if !opts.NoQuorum {
			cmdline = append(cmdline, "dyad.quorum="+QuorumAddr)
		}
		cmdline = append(cmdline, opts.ExtraCmdline...)
		pm.argv = qemuArgs(qemu, acc, qemuConfig{
			n:         n,
			memoryMiB: opts.MemoryMiB,
			kernel:    kernel,
			initramfs: initramfs,
			cmdline:   strings.Join(cmdline, " "),
			disk:      disk,
			dataDisks: dataDisks,
			serial:    pm.serial,
			qmp:       pm.qmpPath,
			tc:        pm.tc.path,
			nics:      pm.nics,
		})
		u.pms = append(u.pms, pm)
	}
	u.log.Info("starting unit", "namespace", u.ns.name, "accel", acc, "pms", opts.N, "workdir", opts.WorkDir)
	for _, pm := range u.pms {
		if err := pm.PowerOn(ctx); err != nil {
			return nil, fmt.Errorf("harness: %w", err)
		}
	}
	return u, nil
}

func (o *Options) defaults() error {
	if o.N == 0 {
		o.N = 2
	}
	if o.N < 1 || o.N > 2 {
		return fmt.Errorf("harness: %d PMs requested, a unit has 1 or 2", o.N)
	}
	if o.MemoryMiB == 0 {
		o.MemoryMiB = 1024
	}
	if o.DiskGiB == 0 {
		o.DiskGiB = 2
	}
	if o.DataDisks == 0 {
		o.DataDisks = 2
	}
	if o.DataDisks < -1 || o.DataDisks > maxDataDisks {
		return fmt.Errorf("harness: %d data disks requested, want -1 (none) to %d", o.DataDisks, maxDataDisks)
	}
	if o.DataDiskMiB == 0 {
		o.DataDiskMiB = 1024
	}
	if o.DataDiskMiB < 0 {
		return fmt.Errorf("harness: data disks of %d MiB requested", o.DataDiskMiB)
	}
	if err := o.checkLayout(); err != nil {
		return err
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Out == "" {
		out, err := DefaultOut()
		if err != nil {
			return err
		}
		o.Out = out
	}
	if o.WorkDir == "" {
		d, err := os.MkdirTemp("", "dyad-unit-")
		if err != nil {
			return fmt.Errorf("harness: %w", err)
		}
		o.WorkDir = d
	}
	return nil
}

// dataDisks is the number of data disks per PM once defaults applied.
func (o *Options) dataDisks() int { return max(o.DataDisks, 0) }

// DefaultOut is $DYAD_OUT, else the out/ dir at the root of the module that
// contains the working directory (tests run in their package's dir).
func DefaultOut() (string, error) {
	if d := os.Getenv("DYAD_OUT"); d != "" {
		return d, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("harness: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "out"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("harness: no go.mod above the working directory; set DYAD_OUT")
		}
		dir = parent
	}
}

// blankDisk creates (or empties) a sparse raw disk image of size bytes.
func blankDisk(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// PM returns PM n (1-based); it panics for a PM the unit does not have,
// which is a bug in the test.
func (u *Unit) PM(n int) *PM {
	if n < 1 || n > len(u.pms) {
		panic(fmt.Sprintf("harness: unit has %d PMs, no pm%d", len(u.pms), n))
	}
	return u.pms[n-1]
}

// PMs returns every PM in order.
func (u *Unit) PMs() []*PM { return slices.Clone(u.pms) }

// Namespace is the name of the unit's network namespace, for debugging with
// "ip netns exec NAME ...".
func (u *Unit) Namespace() string { return u.ns.name }

// WorkDir holds the disks and logs of the unit.
func (u *Unit) WorkDir() string { return u.workDir }

// Accel is the QEMU accelerator the PMs run with: "kvm" or "tcg".
func (u *Unit) Accel() string { return string(u.accel) }

// Dial connects to addr (such as "10.99.0.10:80") from inside the unit's
// namespace, as the operator host on the ibiz bridge would.
func (u *Unit) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return u.ns.dial(ctx, network, addr)
}

// HTTPClient returns a client whose connections start inside the unit's
// namespace, with a cookie jar of its own (one login session per client).
func (u *Unit) HTTPClient() *http.Client {
	jar, _ := cookiejar.New(nil) // never fails without options
	return &http.Client{Transport: u.http, Jar: jar}
}

// Forward accepts TCP connections on listenAddr of the host and relays each
// to targetAddr inside the namespace, until ctx ends, the listener is closed
// or the unit is closed.
func (u *Unit) Forward(ctx context.Context, listenAddr, targetAddr string) (net.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", listenAddr)
	if err != nil {
		return nil, fmt.Errorf("harness: forward %s: %w", listenAddr, err)
	}
	if !u.track(ln) {
		ln.Close()
		return nil, errors.New("harness: forward: unit closed")
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	go func() {
		defer stop()
		defer u.untrack(ln)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go u.relay(ctx, c, targetAddr)
		}
	}()
	return ln, nil
}

func (u *Unit) relay(ctx context.Context, c net.Conn, targetAddr string) {
	defer c.Close()
	if !u.track(c) {
		return
	}
	defer u.untrack(c)
	dialCtx, cancel := context.WithTimeout(ctx, forwardDialTimeout)
	t, err := u.Dial(dialCtx, "tcp", targetAddr)
	cancel()
	if err != nil {
		u.log.Debug("forward: dial failed", "target", targetAddr, "err", err)
		return
	}
	defer t.Close()
	if !u.track(t) {
		return
	}
	defer u.untrack(t)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		// Pass the half-close on so request/response protocols finish.
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(t, c)
	go pipe(c, t)
	<-done
	<-done
}

// track registers something Close must close; false once the unit closed.
func (u *Unit) track(c io.Closer) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return false
	}
	u.forwards[c] = struct{}{}
	return true
}

func (u *Unit) untrack(c io.Closer) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.forwards, c)
}

// Close powers every PM off, stops the forwarders and removes the
// namespace. The work dir with the logs stays. Close is idempotent.
func (u *Unit) Close() error {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return nil
	}
	u.closed = true
	forwards := u.forwards
	u.forwards = nil
	u.mu.Unlock()

	for c := range forwards {
		c.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	var errs []error
	var wg sync.WaitGroup
	for _, pm := range u.pms {
		wg.Go(func() {
			if err := pm.PowerOff(ctx); err != nil {
				u.log.Warn("power off on close", "pm", pm.n, "err", err)
			}
			pm.tc.close()
		})
	}
	wg.Wait()
	u.http.CloseIdleConnections()
	if u.ns != nil {
		if err := u.ns.remove(ctx); err != nil {
			errs = append(errs, fmt.Errorf("harness: %w", err))
		}
	}
	if err := os.RemoveAll(u.sockDir); err != nil {
		errs = append(errs, fmt.Errorf("harness: %w", err))
	}
	u.log.Info("unit closed", "workdir", u.workDir)
	return errors.Join(errs...)
}
