package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dyad-ha/dyad/services/bmc"
	"github.com/dyad-ha/dyad/services/store"
	"github.com/dyad-ha/dyad/services/unit"
	"github.com/dyad-ha/dyad/services/vm"
	"github.com/dyad-ha/dyad/webui"
)

// Operator-owned PM and unit state lives in buckets of its own, apart from
// the live PM records the primary rewrites every round.
const (
	bucketPMOps   = "pmops"
	bucketUnitOps = "unitops"
	unitOpsKey    = "unit"
)

// FailureWindow and FailureLimit are the PM failure policy: a PM failing
// FailureLimit times within FailureWindow is powered off and kept out of
// service until Reset Device.
const (
	FailureWindow = time.Hour
	FailureLimit  = 3
)

// pmOps is what operators and the unit decided about a PM.
type pmOps struct {
	ID int `json:"id"`
	// Maintenance: Work On until Finalize.
	Maintenance bool `json:"maintenance,omitempty"`
	// Off: an operator or the unit shut the PM down or powered it off on
	// purpose; its loss is no failure. OffBoot is the boot it ended: the
	// PM seen running in another boot is back.
	Off     bool   `json:"off,omitempty"`
	OffBoot string `json:"off_boot,omitempty"`
	// Rebooting: the unit rebooted the PM (Rolling Reboot); its loss is no
	// failure. RebootedFrom is the boot it left.
	Rebooting    bool   `json:"rebooting,omitempty"`
	RebootedFrom string `json:"rebooted_from,omitempty"`
	// Failures are the PM's unexpected losses within FailureWindow.
	Failures []time.Time `json:"failures,omitempty"`
	// OutOfService: FailureLimit failures; powered off until Reset Device.
	OutOfService bool      `json:"out_of_service,omitempty"`
	BMC          *unit.BMC `json:"bmc,omitempty"`
}

// unitOps is the state of the unit commands that take many steps.
type unitOps struct {
	// Shutdown is a unit Shutdown in progress or done: "vms" while the VMs
	// stop, "pms" while the PMs power off, "off" until both PMs are back.
	Shutdown      string        `json:"shutdown,omitempty"`
	ShutdownSince time.Time     `json:"shutdown_since,omitzero"`
	VMTimeout     time.Duration `json:"vm_timeout,omitempty"`
	// Rolling is a Rolling Reboot in progress.
	Rolling *rolling `json:"rolling,omitempty"`
}

// rolling reboots the PMs in Order one at a time: evacuate, reboot, wait
// for it back and in sync, finalize.
type rolling struct {
	Order []int  `json:"order"`
	Index int    `json:"index"`
	Phase string `json:"phase"` // "evacuate", "reboot", "return"
}

// loadOps reads the operation records of both PMs and of the unit.
func loadOps(r store.Reader) (map[int]*pmOps, *unitOps, error) {
	pms := map[int]*pmOps{1: {ID: 1}, 2: {ID: 2}}
	for id, o := range pms {
		if b := r.Get(bucketPMOps, strconv.Itoa(id)); b != nil {
			if err := json.Unmarshal(b, o); err != nil {
				return nil, nil, fmt.Errorf("pm %d operations: %w", id, err)
			}
		}
	}
	var u unitOps
	if b := r.Get(bucketUnitOps, unitOpsKey); b != nil {
		if err := json.Unmarshal(b, &u); err != nil {
			return nil, nil, fmt.Errorf("unit operations: %w", err)
		}
	}
	return pms, &u, nil
}

func (a *Agent) opsRecords() (map[int]pmOps, unitOps, error) {
	out := map[int]pmOps{}
	var u unitOps
	err := a.db.View(func(r store.Reader) error {
		pms, uo, err := loadOps(r)
		if err != nil {
			return err
		}
		for id, o := range pms {
			out[id] = *o
		}
		u = *uo
		return nil
	})
	return out, u, err
}

// updateOps changes the PM and unit operation records in one transaction.
func (a *Agent) updateOps(ctx context.Context, fn func(pms map[int]*pmOps, u *unitOps) error) error {
	return a.commit(ctx, func(w store.Writer) error {
		pms, u, err := loadOps(w)
		if err != nil {
			return err
		}
		if err := fn(pms, u); err != nil {
			return err
		}
		for id, o := range pms {
			b, err := json.Marshal(o)
			if err != nil {
				return err
			}
			if err := w.Put(bucketPMOps, strconv.Itoa(id), b); err != nil {
				return err
			}
		}
		b, err := json.Marshal(u)
		if err != nil {
			return err
		}
		return w.Put(bucketUnitOps, unitOpsKey, b)
	})
}

// pmUp reports whether PM id runs now as this PM sees it.
func (a *Agent) pmUp(id int) bool {
	return id == a.cfg.Node || a.mon.View(time.Now()).Seen
}

// inService reports whether PM id may hold VMs: running, not in
// Maintenance, not out of service.
func inService(o pmOps, up bool) bool {
	return up && !o.Maintenance && !o.OutOfService && !o.Off
}

// pmAllowed are the commands a PM's state allows.
func pmAllowed(o pmOps, up bool, vmsOn int) []string {
	var out []string
	switch {
	case o.OutOfService:
		out = append(out, unit.PMResetDevice)
	case up && !o.Maintenance:
		out = append(out, unit.PMWorkOn)
	case up && o.Maintenance:
		out = append(out, unit.PMFinalize)
		if vmsOn == 0 {
			out = append(out, unit.PMShutdown, unit.PMPowerOff)
		}
	case !up && o.BMC != nil:
		out = append(out, unit.PMPowerOn)
	}
	if len(o.Failures) > 0 && !o.OutOfService {
		out = append(out, unit.PMResetDevice)
	}
	return out
}

// opsView fills the operator's side of the PM views.
func (a *Agent) opsView(pms []unit.PM) {
	ops, _, err := a.opsRecords()
	if err != nil {
		a.log.Error("pm ops records", "err", err)
		return
	}
	recs, _ := a.vmRecords()
	for i := range pms {
		pm := &pms[i]
		o := ops[pm.ID]
		up := pm.State == unit.PMRunning
		on := 0
		for _, r := range recs {
			if r.Node == pm.ID && r.Run {
				on++
			}
		}
		pm.Maintenance = o.Maintenance
		pm.Failures = len(o.Failures)
		pm.Allowed = pmAllowed(o, up, on)
		if o.BMC != nil {
			pm.BMC = &unit.BMC{Addr: o.BMC.Addr, User: o.BMC.User}
		}
		switch {
		case o.OutOfService && !up:
			pm.State, pm.Activity = unit.PMPoweredOff, fmt.Sprintf("%d failures within %s: out of service until Reset Device", len(o.Failures), FailureWindow)
		case o.OutOfService:
			pm.State, pm.Activity = unit.PMPoweredOff, "out of service: being powered off"
		case o.Maintenance && up && on > 0:
			pm.State, pm.Activity = unit.PMEvacuating, fmt.Sprintf("moving %d VMs to the other PM", on)
		case o.Maintenance && up:
			pm.State = unit.PMMaintenance
		case !up && (o.Maintenance || o.Off):
			pm.State, pm.Activity = unit.PMOffMaintenance, "powered down by an operator"
		}
	}
}

// PMCommand implements webui.OpsSource.
func (a *Agent) PMCommand(ctx context.Context, id int, cmd string, args unit.PMAction) (unit.PM, error) {
	if id != 1 && id != 2 {
		return unit.PM{}, fmt.Errorf("pm %d: %w", id, webui.ErrNotFound)
	}
	if !slices.Contains(unit.PMCommands(), cmd) {
		return unit.PM{}, fmt.Errorf("%w: unknown PM command %q; the commands are %s", webui.ErrInvalid, cmd, strings.Join(unit.PMCommands(), ", "))
	}
	cur, err := a.PM(ctx, id)
	if err != nil {
		return cur, err
	}
	if !slices.Contains(cur.Allowed, cmd) {
		return cur, fmt.Errorf("%w: %s is not allowed while pm%d is %s; allowed: %s", webui.ErrConflict, cmd, id, cur.State, strings.Join(cur.Allowed, ", "))
	}
	other := 3 - id
	ops, _, err := a.opsRecords()
	if err != nil {
		return cur, err
	}
	switch cmd {
	case unit.PMWorkOn:
		err = a.workOn(ctx, id, inService(ops[other], a.pmUp(other)), args.Confirm)
	case unit.PMFinalize:
		err = a.updateOps(ctx, func(pms map[int]*pmOps, _ *unitOps) error {
			pms[id].Maintenance, pms[id].Off = false, false
			return nil
		})
	case unit.PMShutdown, unit.PMPowerOff:
		err = a.updateOps(ctx, func(pms map[int]*pmOps, _ *unitOps) error {
			pms[id].Off, pms[id].OffBoot = true, cur.BootID
			return nil
		})
		if err == nil {
			action := "shutdown"
			if cmd == unit.PMPowerOff {
				action = "poweroff"
			}
			err = a.powerPM(ctx, id, action, ops[id].BMC)
		}
	case unit.PMPowerOn:
		err = a.powerPM(ctx, id, "poweron", ops[id].BMC)
	case unit.PMResetDevice:
		err = a.updateOps(ctx, func(pms map[int]*pmOps, _ *unitOps) error {
			pms[id].Failures, pms[id].OutOfService = nil, false
			return nil
		})
	}
	if err != nil {
		return cur, err
	}
	a.log.Info("PM command", "pm", id, "command", cmd)
	return a.PM(ctx, id)
}

// workOn puts PM id in Maintenance; the primary's upkeep moves its VMs to
// the other PM. When the other PM cannot take them, the operator must
// confirm, and they are shut down instead.
func (a *Agent) workOn(ctx context.Context, id int, otherInService, confirm bool) error {
	recs, err := a.vmRecords()
	if err != nil {
		return err
	}
	var stuck []string
	for _, r := range recs {
		if r.Node == id && r.Run && (!otherInService || r.Placement.Policy == unit.PlaceManual) {
			stuck = append(stuck, r.Name)
		}
	}
	if len(stuck) > 0 && !confirm {
		return fmt.Errorf("%w: needs confirmation: VMs %s cannot move to PM %d and would be shut down; send Work On again with confirm", webui.ErrConflict, strings.Join(stuck, ", "), 3-id)
	}
	for _, r := range recs {
		if slices.Contains(stuck, r.Name) {
			if err := a.updateVM(ctx, r.ID, func(r *vm.Record) error {
				r.ShutdownSeq, r.ShutdownTimeout = r.ShutdownSeq+1, 2*time.Minute
				return nil
			}); err != nil {
				return err
			}
		}
	}
	return a.updateOps(ctx, func(pms map[int]*pmOps, _ *unitOps) error {
		pms[id].Maintenance = true
		return nil
	})
}

// SetBMC implements webui.OpsSource.
func (a *Agent) SetBMC(ctx context.Context, id int, b unit.BMC) (unit.PM, error) {
	if id != 1 && id != 2 {
		return unit.PM{}, fmt.Errorf("pm %d: %w", id, webui.ErrNotFound)
	}
	var stored *unit.BMC
	if b.Addr != "" {
		if err := bmcConfig(b).Validate(); err != nil {
			return unit.PM{}, fmt.Errorf("%w: %w", webui.ErrInvalid, err)
		}
		stored = &b
	}
	if err := a.updateOps(ctx, func(pms map[int]*pmOps, _ *unitOps) error {
		pms[id].BMC = stored
		return nil
	}); err != nil {
		return unit.PM{}, err
	}
	return a.PM(ctx, id)
}

func bmcConfig(b unit.BMC) bmc.Config {
	return bmc.Config{Addr: b.Addr, User: b.User, Password: b.Password}
}

// powerPM powers PM id on, off or down: through its BMC when it has one,
// else by asking the PM's own agent (which cannot power a PM on).
func (a *Agent) powerPM(ctx context.Context, id int, action string, b *unit.BMC) error {
	if b != nil {
		c := bmcConfig(*b)
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		var err error
		switch action {
		case "poweron":
			err = bmc.PowerOn(ctx, c)
		case "poweroff":
			err = bmc.PowerOff(ctx, c)
		case "shutdown":
			err = bmc.SoftOff(ctx, c)
		case "reboot":
			err = bmc.Reset(ctx, c)
		}
		if err != nil {
			return fmt.Errorf("pm%d's BMC: %w", id, err)
		}
		a.log.Info("power through the BMC", "pm", id, "action", action)
		return nil
	}
	if action == "poweron" {
		return fmt.Errorf("%w: pm%d has no BMC configured: power it on with its power button, or configure its BMC (dyadctl pm bmc)", webui.ErrConflict, id)
	}
	if id == a.cfg.Node {
		a.powerSelf(action)
		return nil
	}
	return a.callPeerPower(ctx, action)
}

// powerSelf has init shut this PM down, power it off or reboot it, a
// moment after the answer to the caller went out.
func (a *Agent) powerSelf(action string) {
	a.log.Warn("this PM powers down", "action", action)
	go func() {
		time.Sleep(500 * time.Millisecond)
		if a.quorum != nil && len(a.cfg.Quorum) > 0 {
			// The peer need not wait for the lease to run out.
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			a.mu.Lock()
			server := a.cfg.Quorum[a.quorumUse]
			a.mu.Unlock()
			a.quorum.Release(ctx, server)
			cancel()
		}
		if err := a.opt.Power(action); err != nil {
			a.log.Error("power", "action", action, "err", err)
		}
	}()
}

// InitPower asks init for an orderly power-off (SIGUSR2) or reboot (SIGINT).
func InitPower(action string) error {
	if action == "reboot" {
		return unix.Kill(1, unix.SIGINT)
	}
	return unix.Kill(1, unix.SIGUSR2)
}

func (a *Agent) callPeerPower(ctx context.Context, action string) error {
	body, _ := json.Marshal(map[string]string{"action": action})
	status, err := a.postPeer(ctx, "peer/v1/power", body)
	if err == nil && status != http.StatusAccepted {
		err = fmt.Errorf("the peer answered %d", status)
	}
	if err != nil {
		return fmt.Errorf("asking the peer PM to %s: %w", action, err)
	}
	return nil
}

// servePower is the peer's request to power this PM down.
func (a *Agent) servePower(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Action string `json:"action"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<10)).Decode(&body); err != nil {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	switch body.Action {
	case "shutdown", "poweroff", "reboot":
	default:
		http.Error(w, "unknown action", http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusAccepted)
	a.powerSelf(body.Action)
}

// UnitCommand implements webui.OpsSource.
func (a *Agent) UnitCommand(ctx context.Context, cmd string, args unit.UnitAction) (unit.Unit, error) {
	pms, err := a.pms(false)
	if err != nil {
		return unit.Unit{}, err
	}
	for _, pm := range pms {
		if pm.State != unit.PMRunning && pm.State != unit.PMMaintenance {
			return unit.Unit{}, fmt.Errorf("%w: %s needs both PMs running; %s is %s", webui.ErrConflict, cmd, pm.Name, pm.State)
		}
	}
	_, uo, err := a.opsRecords()
	if err != nil {
		return unit.Unit{}, err
	}
	if uo.Shutdown != "" || uo.Rolling != nil {
		return unit.Unit{}, fmt.Errorf("%w: a unit %s is in progress", webui.ErrConflict, map[bool]string{true: "Shutdown", false: "Rolling Reboot"}[uo.Shutdown != ""])
	}
	switch cmd {
	case unit.UnitShutdown:
		timeout := time.Duration(args.TimeoutSeconds) * time.Second
		if timeout <= 0 {
			timeout = 2 * time.Minute
		}
		err = a.unitShutdown(ctx, timeout)
	case unit.UnitRollingReboot:
		for _, pm := range pms {
			if pm.Maintenance {
				return unit.Unit{}, fmt.Errorf("%w: Rolling Reboot needs both PMs in service; %s is in Maintenance", webui.ErrConflict, pm.Name)
			}
		}
		order := []int{a.cfg.Peer(), a.cfg.Node} // the secondary first: the primary moves once
		err = a.updateOps(ctx, func(_ map[int]*pmOps, u *unitOps) error {
			u.Rolling = &rolling{Order: order, Phase: "evacuate"}
			return nil
		})
	default:
		return unit.Unit{}, fmt.Errorf("%w: unknown unit command %q; the commands are shutdown, rolling-reboot, force-quorum", webui.ErrInvalid, cmd)
	}
	if err != nil {
		return unit.Unit{}, err
	}
	a.log.Info("unit command", "command", cmd)
	return a.Unit(ctx)
}

// unitShutdown records the shutdown of every running VM; the upkeep then
// powers the PMs off.
func (a *Agent) unitShutdown(ctx context.Context, timeout time.Duration) error {
	recs, err := a.vmRecords()
	if err != nil {
		return err
	}
	for _, r := range recs {
		if !r.Run {
			continue
		}
		if err := a.updateVM(ctx, r.ID, func(r *vm.Record) error {
			r.Resume, r.ShutdownSeq, r.ShutdownTimeout = true, r.ShutdownSeq+1, timeout
			return nil
		}); err != nil {
			return err
		}
	}
	return a.updateOps(ctx, func(_ map[int]*pmOps, u *unitOps) error {
		u.Shutdown, u.ShutdownSince, u.VMTimeout = "vms", time.Now().UTC(), timeout
		return nil
	})
}
