package scenario

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/qemu-tests/harness"
	"github.com/dyad-ha/dyad/services/apiclient"
	"github.com/dyad-ha/dyad/services/unit"
	"github.com/dyad-ha/dyad/services/vm"
)

const (
	// vmPMMemoryMiB gives each PM room for the test guest: a VM may have
	// at most the smaller PM's memory less the 1 GiB system reserve.
	vmPMMemoryMiB = 2048
	// guestBootTimeout covers QEMU starting inside an emulated PM and the
	// guest kernel booting under TCG inside TCG (30-90 s measured), on a
	// host shared with the other PM.
	guestBootTimeout = 7 * time.Minute
	// vmStateTimeout covers a state change that needs no guest boot: a
	// command taking effect, the unit database and the PMs' reports
	// catching up.
	vmStateTimeout = time.Minute
	// vmRestartTimeout covers the agent seeing its QEMU die and starting
	// a new one (QEMU starts in seconds even under emulation).
	vmRestartTimeout = 2 * time.Minute
	// guestShutdownTimeout covers the guest's ACPI power-off; the agent's
	// own shutdown limit (guestShutdownSeconds) is below it.
	guestShutdownTimeout = 3 * time.Minute
	guestShutdownSeconds = 120
	// vmMigrateTimeout covers a live migration of a 256 MiB guest between
	// two emulated PMs, with the volumes made dual-primary and back.
	vmMigrateTimeout = 3 * time.Minute
	// vmFailoverTimeout covers the survivor declaring its peer lost (and
	// taking the management IP when the peer was the primary), promoting
	// the volumes and starting QEMU.
	vmFailoverTimeout = 3 * time.Minute
	// peerReturnTimeout covers a PM booting again, rejoining the unit and
	// resynchronizing the guest's volumes.
	peerReturnTimeout = 8 * time.Minute
	// qemuCheckTimeout bounds the wait for the QEMU processes on the PMs
	// to match what the API shows (a QEMU quitting after a migration, one
	// starting after a restart the API already shows).
	qemuCheckTimeout = time.Minute
)

// guestSpec is the tiny test guest (qemu-tests/guest) as a VM: it boots
// the image's guest kernel directly and counts on its boot volume.
func guestSpec() unit.VMCreate {
	return unit.VMCreate{
		Name:      "guest",
		VCPUs:     1,
		MemoryMiB: 256,
		Boot:      "test-guest",
		Volumes:   []unit.VMVolumeRequest{{Name: "guest-boot", SizeMiB: 16, Boot: true}},
	}
}

// startVMUnit boots a two-PM unit whose PMs can hold the test guest.
func startVMUnit(t *testing.T) (*harness.Unit, *apiclient.Client) {
	t.Helper()
	u := harness.StartT(t, harness.Options{N: 2, MemoryMiB: vmPMMemoryMiB})
	return u, client(u)
}

// testVM follows one VM of a test through the API: every state it was
// seen in, and everything its guest printed in any serial log read.
type testVM struct {
	t     *testing.T
	u     *harness.Unit
	c     *apiclient.Client
	id    int
	trace *harness.GuestTrace
	// seen are the states in the order seen, repeats folded.
	seen []string
}

func (g *testVM) observe(v unit.VM) {
	if n := len(g.seen); n == 0 || g.seen[n-1] != v.State {
		g.seen = append(g.seen, v.State)
	}
}

// seenSince reports whether the VM was seen in state at or after index
// mark of g.seen (take mark as len(g.seen) before a command).
func (g *testVM) seenSince(mark int, state vm.State) bool {
	return slices.Contains(g.seen[max(mark-1, 0):], string(state))
}

// stopWaiting marks a condition the VM cannot leave by waiting longer (a
// failed migration, Critical too early): testVM.wait fails at once.
type stopWaiting struct{ msg string }

func (e *stopWaiting) Error() string { return e.msg }

func stop(format string, args ...any) error {
	return &stopWaiting{fmt.Sprintf(format, args...)}
}

// wait polls the VM until cond accepts it and returns it as last seen.
func (g *testVM) wait(ctx context.Context, timeout time.Duration, what string, cond func(v unit.VM) error) unit.VM {
	g.t.Helper()
	var v unit.VM
	var fatal error
	err := harness.WaitFor(ctx, timeout, what, func(ctx context.Context) (bool, error) {
		got, err := g.c.VM(ctx, g.id)
		if err != nil {
			return false, err
		}
		v = got
		g.observe(v)
		if err := cond(v); err != nil {
			if _, ok := errors.AsType[*stopWaiting](err); ok {
				fatal = err
				return true, nil
			}
			return false, fmt.Errorf("%w (VM: %s)", err, vmString(v))
		}
		return true, nil
	})
	if err != nil {
		g.t.Fatalf("%v; states seen: %s", err, strings.Join(g.seen, " → "))
	}
	if fatal != nil {
		g.t.Fatalf("waiting for %s: %v (VM: %s; states seen: %s)", what, fatal, vmString(v), strings.Join(g.seen, " → "))
	}
	return v
}

// command runs an action on the VM (slug as in the API: start, shutdown,
// migrate, reset-device, ...) and returns the VM as the answer shows it.
func (g *testVM) command(ctx context.Context, slug string, args unit.VMAction) unit.VM {
	g.t.Helper()
	v, err := g.c.VMCommand(ctx, g.id, slug, args)
	if err != nil {
		g.t.Fatalf("VM command %s: %v", slug, err)
	}
	g.observe(v)
	return v
}

// serial reads the guest's serial log through the API and adds it to the
// trace, so that every read counts for the whole test.
func (g *testVM) serial(ctx context.Context) ([]byte, error) {
	b, err := g.c.SerialLog(ctx, g.id)
	if err == nil {
		g.trace.Add(b)
	}
	return b, err
}

// waitGuest reads the serial log until cond accepts tr (the whole trace or
// one of the caller's own for reads from now on).
func (g *testVM) waitGuest(ctx context.Context, timeout time.Duration, what string, tr *harness.GuestTrace, cond func(tr *harness.GuestTrace) error) {
	g.t.Helper()
	if err := harness.WaitGuest(ctx, timeout, what, tr, g.serial, cond); err != nil {
		g.t.Fatalf("%v; guest: %s", err, g.trace)
	}
}

// logOnFailure logs what the test saw of the VM and its guest, the
// guest's serial log and the QEMU log of each running PM. It runs as a
// cleanup before the unit is powered off (cleanups run last in, first out).
func (g *testVM) logOnFailure() {
	if !g.t.Failed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g.t.Logf("VM %d states seen: %s", g.id, strings.Join(g.seen, " → "))
	g.t.Logf("guest lines seen: %s", g.trace)
	if v, err := g.c.VM(ctx, g.id); err == nil {
		g.t.Logf("VM at the end: %s", vmString(v))
	}
	if b, err := g.c.SerialLog(ctx, g.id); err != nil {
		g.t.Logf("VM serial log: %v", err)
	} else {
		g.t.Logf("last 60 lines of the VM's serial log:\n%s", lastLines(b, 60))
	}
	for _, pm := range g.u.PMs() {
		if !pm.Running() {
			continue
		}
		path := fmt.Sprintf("/run/dyad/vm/%d/qemu.log", g.id)
		if b, err := pm.ReadFile(ctx, path); err == nil && len(b) > 0 {
			g.t.Logf("pm%d %s:\n%s", pm.N(), path, lastLines(b, 20))
		}
	}
}

func vmString(v unit.VM) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %q on pm%d, starts %d, crashes %d, allowed %q", v.State, v.Activity, v.Node, v.Starts, v.Crashes, v.Allowed)
	if m := v.Migration; m != nil {
		fmt.Fprintf(&b, ", migration pm%d→pm%d %s %s", m.From, m.To, m.Status, m.Error)
	}
	for _, vol := range v.Volumes {
		fmt.Fprintf(&b, ", volume %d %s %s", vol.VolumeID, vol.Name, vol.State)
	}
	if len(v.Warnings) > 0 {
		fmt.Fprintf(&b, ", warnings %q", v.Warnings)
	}
	return b.String()
}

func lastLines(b []byte, n int) []byte {
	b = bytes.TrimRight(b, "\n")
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == '\n' {
			if n--; n == 0 {
				return b[i+1:]
			}
		}
	}
	return b
}

// stateIs accepts a VM in one of states.
func stateIs(states ...vm.State) func(unit.VM) error {
	return func(v unit.VM) error {
		if slices.Contains(states, vm.State(v.State)) {
			return nil
		}
		return fmt.Errorf("state %s, want %q", v.State, states)
	}
}

// runningStates are the states of a VM whose QEMU runs the guest.
var runningStates = []vm.State{vm.Booting, vm.Running, vm.Alert}

// allowedIn is the console's list of commands state allows (DESIGN.md §4).
func allowedIn(s vm.State) []string {
	var out []string
	for _, c := range vm.Allowed(s) {
		out = append(out, string(c))
	}
	return out
}

// wantRefused checks that err is the API's 409 for a command the state
// does not allow, carrying the allowed commands.
func wantRefused(t *testing.T, what string, err error, allowed []string) {
	t.Helper()
	ae, ok := errors.AsType[*apiclient.APIError](err)
	if !ok || ae.StatusCode != http.StatusConflict {
		t.Errorf("%s: %v, want 409 Conflict", what, err)
		return
	}
	if !slices.Equal(ae.Allowed, allowed) {
		t.Errorf("%s: refused with allowed %q, want %q (%s)", what, ae.Allowed, allowed, ae.Message)
	}
}

func wantStatus(t *testing.T, what string, err error, status int) {
	t.Helper()
	if ae, ok := errors.AsType[*apiclient.APIError](err); !ok || ae.StatusCode != status {
		t.Errorf("%s: %v, want %d %s", what, err, status, http.StatusText(status))
	}
}

// createGuest waits for the unit and its storage, creates the test guest
// and waits until its boot volume is mirrored (Busy, then Stopped).
func createGuest(t *testing.T, ctx context.Context, u *harness.Unit, c *apiclient.Client) (*testVM, unit.VM) {
	t.Helper()
	waitFormed(t, ctx, c)
	return createGuestWith(t, ctx, u, c, guestSpec())
}

// createGuestWith is createGuest with another spec, on a formed unit.
func createGuestWith(t *testing.T, ctx context.Context, u *harness.Unit, c *apiclient.Client, spec unit.VMCreate) (*testVM, unit.VM) {
	t.Helper()
	err := harness.WaitFor(ctx, 2*time.Minute, "a storage group on both PMs", func(ctx context.Context) (bool, error) {
		gs, err := c.StorageGroups(ctx)
		if err != nil {
			return false, err
		}
		return met(len(gs) > 0 && gs[0].FreeBytes >= 64<<20, "storage groups %+v", gs)
	})
	if err != nil {
		t.Fatal(err)
	}
	v, err := c.CreateVM(ctx, spec)
	if err != nil {
		t.Fatalf("create VM %+v: %v", spec, err)
	}
	g := &testVM{t: t, u: u, c: c, id: v.ID, trace: harness.NewGuestTrace()}
	t.Cleanup(g.logOnFailure)
	g.observe(v)
	t.Logf("created VM %s (id %d): %s", v.Name, v.ID, vmString(v))
	if err := stateIs(vm.Busy, vm.Stopped)(v); err != nil {
		t.Errorf("new VM: %v", err)
	}
	if v.Name != spec.Name || v.VCPUs != spec.VCPUs || v.MemoryBytes != spec.MemoryMiB<<20 || v.Boot != spec.Boot || len(v.Volumes) != 1 || !v.Volumes[0].Boot {
		t.Errorf("new VM %+v does not match %+v", v, spec)
	}
	v = g.wait(ctx, syncTimeout, "the VM's volumes to be mirrored: Stopped", stateIs(vm.Stopped))
	if vol := v.Volumes[0]; vol.SizeBytes < spec.Volumes[0].SizeMiB<<20 || vol.State != string(unit.SyncUpToDate) {
		t.Errorf("boot volume %+v, want at least %d MiB and %s", vol, spec.Volumes[0].SizeMiB, unit.SyncUpToDate)
	}
	if want := allowedIn(vm.Stopped); !slices.Equal(v.Allowed, want) {
		t.Errorf("Stopped VM allows %q, want %q", v.Allowed, want)
	}
	return g, v
}

// start starts the VM and waits until its guest runs and reports durable
// writes: Booting (QEMU up), then Running, and DURABLE lines in the
// serial log. It returns the VM and the boot seen.
func (g *testVM) start(ctx context.Context) (unit.VM, harness.GuestBoot) {
	g.t.Helper()
	mark := len(g.seen)
	g.command(ctx, "start", unit.VMAction{})
	v := g.wait(ctx, guestBootTimeout, "the guest to boot: Running", func(v unit.VM) error {
		if v.State == string(vm.Critical) {
			return stop("Critical")
		}
		return stateIs(vm.Running)(v)
	})
	if !g.seenSince(mark, vm.Booting) {
		g.t.Errorf("the VM went %s without showing Booting while its guest booted", strings.Join(g.seen[mark:], " → "))
	}
	var boot harness.GuestBoot
	g.waitGuest(ctx, guestBootTimeout, "the guest to report durable writes", g.trace, func(tr *harness.GuestTrace) error {
		var ok bool
		if boot, ok = tr.Latest(); !ok || !boot.Started || boot.Durables < 3 {
			return fmt.Errorf("guest: %s", tr)
		}
		return nil
	})
	g.t.Logf("guest boot %s running on pm%d: read n=%d, durable up to n=%d", boot.ID, v.Node, boot.Start, boot.Durable)
	return v, boot
}

// bootGuest creates the test guest and starts it.
func bootGuest(t *testing.T, ctx context.Context, u *harness.Unit, c *apiclient.Client) (*testVM, unit.VM, harness.GuestBoot) {
	t.Helper()
	g, _ := createGuest(t, ctx, u, c)
	v, boot := g.start(ctx)
	return g, v, boot
}

// pidFile is where a VM's QEMU writes its pid on the PM that runs it.
func pidFile(id int) string { return fmt.Sprintf("/run/dyad/vm/%d/qemu.pid", id) }

// qemuOf returns the pid in VM id's pid file on pm and whether that
// process is a live QEMU. A QEMU killed but not yet reaped (a zombie)
// does not count, nor does a pid file left behind by a dead one.
func qemuOf(ctx context.Context, pm *harness.PM, id int) (pid int, running bool, err error) {
	b, err := pm.ReadFile(ctx, pidFile(id))
	if err != nil {
		if strings.Contains(err.Error(), "no such file") {
			return 0, false, nil
		}
		return 0, false, err
	}
	pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		// QEMU may be writing it.
		return 0, false, fmt.Errorf("pm%d: %s holds %q", pm.N(), pidFile(id), b)
	}
	stat, err := pm.ReadFile(ctx, fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		if strings.Contains(err.Error(), "no such file") {
			return pid, false, nil
		}
		return pid, false, err
	}
	// "pid (comm) state ...": comm may hold spaces and parentheses.
	s := string(stat)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open || len(s) < end+3 {
		return pid, false, fmt.Errorf("pm%d: /proc/%d/stat: %q", pm.N(), pid, s)
	}
	comm, state := s[open+1:end], s[end+2]
	return pid, strings.HasPrefix(comm, "qemu-system") && state != 'Z' && state != 'X', nil
}

// waitQEMU waits until the VM's QEMU runs on PM on (0: on none) and on no
// other PM that is powered on, and returns its pid. With notPid, a QEMU
// of that pid does not count: it is the one the test killed.
func (g *testVM) waitQEMU(ctx context.Context, on, notPid int) int {
	g.t.Helper()
	what := fmt.Sprintf("VM %d's QEMU to run on pm%d only", g.id, on)
	if on == 0 {
		what = fmt.Sprintf("no QEMU of VM %d on any PM", g.id)
	}
	var pid int
	err := harness.WaitFor(ctx, qemuCheckTimeout, what, func(ctx context.Context) (bool, error) {
		for _, pm := range g.u.PMs() {
			if !pm.Running() {
				continue
			}
			p, running, err := qemuOf(ctx, pm, g.id)
			if err != nil {
				return false, err
			}
			switch {
			case pm.N() == on && (!running || p == notPid):
				return false, fmt.Errorf("pm%d runs no new QEMU for the VM (pid file: %d, running %v)", pm.N(), p, running)
			case pm.N() == on:
				pid = p
			case running:
				return false, fmt.Errorf("pm%d runs QEMU pid %d for the VM too", pm.N(), p)
			}
		}
		return true, nil
	})
	if err != nil {
		g.t.Fatal(err)
	}
	return pid
}

func TestVMLifecycle(t *testing.T) {
	ctx := t.Context()
	u, c := startVMUnit(t)
	g, v := createGuest(t, ctx, u, c)
	id := g.id

	v, _ = g.start(ctx)
	if v.Node != 1 && v.Node != 2 {
		t.Fatalf("running VM on node %d", v.Node)
	}
	g.waitQEMU(ctx, v.Node, 0)
	if want := allowedIn(vm.Running); !slices.Equal(v.Allowed, want) {
		t.Errorf("Running VM allows %q, want %q", v.Allowed, want)
	}

	// Refused commands: one the state does not allow, one that does not exist.
	_, err := c.VMCommand(ctx, id, "start", unit.VMAction{})
	wantRefused(t, "start while Running", err, allowedIn(vm.Running))
	_, err = c.VMCommand(ctx, id, "no-such-action", unit.VMAction{})
	wantStatus(t, "unknown action", err, http.StatusNotFound)

	// Shutdown presses the ACPI power button; the guest powers itself off.
	mark := len(g.seen)
	g.command(ctx, "shutdown", unit.VMAction{TimeoutSeconds: guestShutdownSeconds})
	v = g.wait(ctx, guestShutdownTimeout, "the guest to power off: Stopped", func(v unit.VM) error {
		if st := vm.State(v.State); st == vm.Crashed || st == vm.Critical {
			return stop("%s after Shutdown", st)
		}
		return stateIs(vm.Stopped)(v)
	})
	t.Logf("shutdown: %s", strings.Join(g.seen[max(mark-1, 0):], " → "))
	if !g.seenSince(mark, vm.Stopping) {
		t.Logf("Stopping was not seen: the guest powered off between two polls")
	}
	if v.Crashes != 0 {
		t.Errorf("%d crashes after a shutdown", v.Crashes)
	}
	g.waitQEMU(ctx, 0, 0)
	// The guest's own last word on the power button (qemu-tests/guest
	// PowerOffLine): it went down through ACPI, not by being pulled.
	if b, err := c.SerialLog(ctx, id); err != nil {
		t.Error(err)
	} else if !bytes.Contains(b, []byte("GUEST POWER OFF (ACPI power button)")) {
		t.Errorf("the serial log does not show the guest powering off on the ACPI button:\n%s", lastLines(b, 20))
	}

	// Config: refused beyond the resource rules, then re-provisioned.
	tooMany, tooMuch := vm.MaxVCPUs+1, int64(vmPMMemoryMiB)
	_, err = c.ConfigVM(ctx, id, unit.VMConfig{VCPUs: &tooMany, MemoryMiB: &tooMuch})
	wantStatus(t, fmt.Sprintf("config with %d vCPUs and %d MiB", tooMany, tooMuch), err, http.StatusBadRequest)
	vcpus, mem := 2, int64(300)
	v, err = c.ConfigVM(ctx, id, unit.VMConfig{
		VCPUs: &vcpus, MemoryMiB: &mem,
		AddVolumes: []unit.VMVolumeRequest{{Name: "guest-data", SizeMiB: 8}},
	})
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	g.observe(v)
	configured := func(v unit.VM) error {
		if v.VCPUs != vcpus || v.MemoryBytes != mem<<20 || len(v.Volumes) != 2 {
			return stop("config did not take: %d vCPUs, %d bytes, %d volumes", v.VCPUs, v.MemoryBytes, len(v.Volumes))
		}
		return nil
	}
	if err := configured(v); err != nil {
		t.Fatalf("config answered %s: %v", vmString(v), err)
	}
	v = g.wait(ctx, syncTimeout, "the data volume to be mirrored: Stopped, both volumes UpToDate", func(v unit.VM) error {
		if err := configured(v); err != nil {
			return err
		}
		if err := stateIs(vm.Stopped)(v); err != nil {
			return err
		}
		for _, vol := range v.Volumes {
			if vol.State != string(unit.SyncUpToDate) {
				return fmt.Errorf("volume %d is %s", vol.VolumeID, vol.State)
			}
		}
		return nil
	})
	i := slices.IndexFunc(v.Volumes, func(vol unit.VMVolume) bool { return !vol.Boot })
	if i < 0 || v.Volumes[i].SizeBytes < 8<<20 {
		t.Errorf("volumes after config: %+v, want a data volume of at least 8 MiB", v.Volumes)
	}
	if want := allowedIn(vm.Stopped); !slices.Equal(v.Allowed, want) {
		t.Errorf("Stopped VM allows %q, want %q", v.Allowed, want)
	}

	// Remove with the data volumes: the VM and every volume of it go.
	var volIDs []int
	for _, vol := range v.Volumes {
		volIDs = append(volIDs, vol.VolumeID)
	}
	vols, err := c.Volumes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, vid := range volIDs {
		if !slices.ContainsFunc(vols, func(vol unit.Volume) bool { return vol.ID == vid }) {
			t.Errorf("the VM's volume %d is not among the unit's volumes %+v", vid, vols)
		}
	}
	if err := c.RemoveVM(ctx, id, true); err != nil {
		t.Fatalf("remove: %v", err)
	}
	err = harness.WaitFor(ctx, 2*time.Minute, "the VM and its volumes to go", func(ctx context.Context) (bool, error) {
		if _, err := c.VM(ctx, id); err == nil {
			return false, errors.New("GET the VM still answers")
		} else if ae, ok := errors.AsType[*apiclient.APIError](err); !ok || ae.StatusCode != http.StatusNotFound {
			return false, err
		}
		vms, err := c.VMs(ctx)
		if err != nil {
			return false, err
		}
		if slices.ContainsFunc(vms, func(v unit.VM) bool { return v.ID == id }) {
			return false, errors.New("the VM is still listed")
		}
		vols, err := c.Volumes(ctx)
		if err != nil {
			return false, err
		}
		for _, vol := range vols {
			if slices.Contains(volIDs, vol.ID) {
				return false, fmt.Errorf("volume %d (%s) is still there: %s", vol.ID, vol.Name, vol.State)
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestLiveMigration(t *testing.T) {
	ctx := t.Context()
	u, c := startVMUnit(t)
	g, v, boot := bootGuest(t, ctx, u, c)
	home := v.Node
	starts := v.Starts

	for _, to := range []int{3 - home, home} {
		from := v.Node
		v = g.wait(ctx, vmStateTimeout, "Running with Migrate allowed", func(v unit.VM) error {
			if err := stateIs(vm.Running)(v); err != nil {
				return err
			}
			if !slices.Contains(v.Allowed, string(vm.Migrate)) {
				return fmt.Errorf("allowed %q", v.Allowed)
			}
			return nil
		})
		// The guest counting right before the move.
		var before uint64
		g.waitGuest(ctx, vmStateTimeout, fmt.Sprintf("the guest counting on pm%d", from), g.trace, func(tr *harness.GuestTrace) error {
			b, ok := tr.Latest()
			if !ok || b.ID != boot.ID {
				return fmt.Errorf("latest boot %+v, want %s", b, boot.ID)
			}
			if before == 0 {
				before = b.Durable
			}
			if b.Durable < before+3 {
				return fmt.Errorf("durable up to n=%d", b.Durable)
			}
			before = b.Durable
			return nil
		})

		g.command(ctx, "migrate", unit.VMAction{To: to})
		v = g.wait(ctx, vmMigrateTimeout, fmt.Sprintf("the migration pm%d → pm%d to complete", from, to), func(v unit.VM) error {
			m := v.Migration
			switch {
			case m == nil || m.To != to:
				return errors.New("no migration to the target yet")
			case m.Status == "failed":
				return stop("migration failed: %s", m.Error)
			case m.Status != "completed":
				return fmt.Errorf("migration %s", m.Status)
			case v.Node != to:
				return fmt.Errorf("migration completed, node still pm%d", v.Node)
			}
			return nil
		})
		m := *v.Migration
		t.Logf("migration pm%d → pm%d: total %d ms, downtime %d ms", m.From, m.To, m.TotalMs, m.DowntimeMs)
		if m.From != from || m.TotalMs <= 0 {
			t.Errorf("migration %+v, want from pm%d with QEMU's total time", m, from)
		}
		// Exactly one QEMU, on the target: the source's has quit.
		g.waitQEMU(ctx, to, 0)

		// The target's serial log, read from now on: the same boot, counting
		// past what the guest reported before the move.
		after := harness.NewGuestTrace()
		g.waitGuest(ctx, vmStateTimeout, fmt.Sprintf("the guest counting on after the move to pm%d", to), after, func(tr *harness.GuestTrace) error {
			b, ok := tr.Latest()
			switch {
			case !ok:
				return errors.New("no guest line on the target yet")
			case b.ID != boot.ID:
				return fmt.Errorf("latest boot %s, want %s: the guest restarted instead of moving", b.ID, boot.ID)
			case b.Durable <= before:
				return fmt.Errorf("durable up to n=%d, the guest reported n=%d before the move", b.Durable, before)
			}
			return nil
		})
		b, _ := after.Latest()
		t.Logf("guest boot %s: n=%d before the move, n=%d on pm%d", boot.ID, before, b.Durable, to)

		v = g.wait(ctx, vmStateTimeout, "Running on the target", stateIs(vm.Running))
		if v.Starts != starts || v.Crashes != 0 {
			t.Errorf("after the migration: starts %d (was %d), crashes %d: the VM was restarted", v.Starts, starts, v.Crashes)
		}
	}
	if boots := g.trace.Boots(); len(boots) != 1 {
		t.Errorf("the guest booted %d times across two migrations: %s", len(boots), g.trace)
	}
}

func TestFailoverNoAckLoss(t *testing.T) {
	ctx := t.Context()
	u, c := startVMUnit(t)
	g, v, _ := bootGuest(t, ctx, u, c)
	lost := v.Node
	survivor := 3 - lost
	un, err := c.Unit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Either PM may run the guest. Losing the secondary leaves the unit
	// database and the management IP where they are; losing the primary
	// moves them too, which the timeouts cover.
	t.Logf("the guest runs on pm%d; the unit primary is pm%d", lost, un.Primary)
	waitDatabaseInStep(t, ctx, c)

	// The last value the guest reported durable, read right before the
	// plug is pulled: every write reported later is on the disk too, so
	// this is a lower bound of what the disk must hold.
	if _, err := g.serial(ctx); err != nil {
		t.Fatal(err)
	}
	acked := g.trace.MaxDurable()
	old := map[string]bool{}
	for _, b := range g.trace.Boots() {
		old[b.ID] = true
	}
	if err := u.PM(lost).PowerOff(ctx); err != nil {
		t.Fatal(err)
	}
	off := time.Now()
	t.Logf("powered off pm%d after the guest reported n=%d durable", lost, acked)

	alertOnly := func(v unit.VM) error {
		if v.Node == survivor && v.State == string(vm.Running) {
			return stop("Running (fully redundant) while pm%d is off", lost)
		}
		if v.State == string(vm.Critical) {
			return stop("Critical")
		}
		return nil
	}
	v = g.wait(ctx, vmFailoverTimeout, fmt.Sprintf("pm%d to start the VM", survivor), func(v unit.VM) error {
		if err := alertOnly(v); err != nil {
			return err
		}
		if v.Node != survivor {
			return fmt.Errorf("node pm%d", v.Node)
		}
		if err := stateIs(runningStates...)(v); err != nil {
			return err
		}
		// Booting is shown while the volumes are being taken over too;
		// Started only once a QEMU runs the VM.
		if v.Started.IsZero() {
			return errors.New("no QEMU yet")
		}
		return nil
	})
	t.Logf("the VM is %s on pm%d %s after the power-off", v.State, survivor, time.Since(off).Round(time.Millisecond))
	g.waitQEMU(ctx, survivor, 0)

	var nb harness.GuestBoot
	g.waitGuest(ctx, guestBootTimeout, fmt.Sprintf("the guest to boot again on pm%d", survivor), g.trace, func(tr *harness.GuestTrace) error {
		for _, b := range tr.Boots() {
			if !old[b.ID] && b.Started {
				nb = b
				if b.Durables == 0 {
					return fmt.Errorf("new boot %s read n=%d, no durable write yet", b.ID, b.Start)
				}
				return nil
			}
		}
		return fmt.Errorf("no new boot: %s", tr)
	})
	t.Logf("guest boot %s on pm%d read n=%d from the disk (n=%d was reported durable before the power-off) %s after the power-off",
		nb.ID, survivor, nb.Start, acked, time.Since(off).Round(time.Millisecond))
	if nb.Start < acked {
		t.Errorf("ACKNOWLEDGED WRITES LOST: the guest reported n=%d durable on pm%d, the disk on pm%d holds n=%d", acked, lost, survivor, nb.Start)
	}

	v = g.wait(ctx, guestBootTimeout, fmt.Sprintf("Alert (not redundant) while pm%d is off", lost), func(v unit.VM) error {
		if err := alertOnly(v); err != nil {
			return err
		}
		return stateIs(vm.Alert)(v)
	})
	if want := allowedIn(vm.Alert); !slices.Equal(v.Allowed, want) {
		t.Errorf("VM in Alert allows %q, want %q", v.Allowed, want)
	}

	// The peer returns: once it holds the volumes again the VM is
	// redundant again, and the guest never stopped.
	if err := u.PM(lost).PowerOn(ctx); err != nil {
		t.Fatal(err)
	}
	g.wait(ctx, peerReturnTimeout, fmt.Sprintf("Running once pm%d is back and synced", lost), stateIs(vm.Running))
	n := g.trace.MaxDurable()
	g.waitGuest(ctx, vmStateTimeout, "the guest still counting after the peer's return", g.trace, func(tr *harness.GuestTrace) error {
		b, ok := tr.Latest()
		if !ok || b.ID != nb.ID || b.Durable <= n {
			return fmt.Errorf("latest %+v, want boot %s past n=%d", b, nb.ID, n)
		}
		return nil
	})
	if boots := g.trace.Boots(); len(boots) != 2 {
		t.Errorf("the guest booted %d times, want 2 (first start, failover): %s", len(boots), g.trace)
	}
}

func TestMTBFCritical(t *testing.T) {
	ctx := t.Context()
	u, c := startVMUnit(t)
	g, v, _ := bootGuest(t, ctx, u, c)

	for crash := 1; crash <= vm.DefaultMTBFCrashes; crash++ {
		prev := v
		pid := g.waitQEMU(ctx, prev.Node, 0)
		mark := len(g.seen)
		if err := u.PM(prev.Node).KillPidfile(ctx, pidFile(g.id), "KILL"); err != nil {
			t.Fatalf("crash %d: %v", crash, err)
		}
		t.Logf("crash %d: killed QEMU pid %d on pm%d", crash, pid, prev.Node)
		if crash < vm.DefaultMTBFCrashes {
			// Started again at once: a new QEMU (a later start time, or a
			// new start count), the crash counted.
			v = g.wait(ctx, vmRestartTimeout, fmt.Sprintf("crash %d: the VM restarted", crash), func(v unit.VM) error {
				if v.State == string(vm.Critical) {
					return stop("Critical after %d crashes, the threshold is %d", crash, vm.DefaultMTBFCrashes)
				}
				if v.Crashes != crash {
					return fmt.Errorf("%d crashes", v.Crashes)
				}
				if err := stateIs(runningStates...)(v); err != nil {
					return err
				}
				if v.Starts <= prev.Starts && !v.Started.After(prev.Started) {
					return fmt.Errorf("not started again yet (started %s, before %s)", v.Started, prev.Started)
				}
				return nil
			})
			g.waitQEMU(ctx, v.Node, pid)
			t.Logf("crash %d: %s", crash, strings.Join(g.seen[max(mark-1, 0):], " → "))
			continue
		}
		v = g.wait(ctx, vmRestartTimeout, fmt.Sprintf("crash %d: Critical", crash), func(v unit.VM) error {
			if vm.State(v.State) != vm.Critical || !v.Critical {
				return fmt.Errorf("state %s, critical %v", v.State, v.Critical)
			}
			if v.Crashes != crash {
				return fmt.Errorf("%d crashes", v.Crashes)
			}
			return nil
		})
		t.Logf("crash %d: %s", crash, strings.Join(g.seen[max(mark-1, 0):], " → "))
	}
	if want := []string{string(vm.ResetDevice)}; !slices.Equal(v.Allowed, want) {
		t.Errorf("Critical VM allows %q, want %q", v.Allowed, want)
	}
	// Critical stays down.
	g.waitQEMU(ctx, 0, 0)
	_, err := c.VMCommand(ctx, g.id, "start", unit.VMAction{})
	wantRefused(t, "start while Critical", err, []string{string(vm.ResetDevice)})

	prev := v
	g.command(ctx, "reset-device", unit.VMAction{})
	v = g.wait(ctx, vmRestartTimeout, "Reset Device to start the VM again", func(v unit.VM) error {
		if err := stateIs(runningStates...)(v); err != nil {
			return err
		}
		if v.Crashes != 0 || v.Critical {
			return fmt.Errorf("%d crashes, critical %v", v.Crashes, v.Critical)
		}
		if v.Starts <= prev.Starts && !v.Started.After(prev.Started) {
			return errors.New("not started again yet")
		}
		return nil
	})
	g.waitQEMU(ctx, v.Node, 0)
}
