package vm

import (
	"fmt"
	"time"

	"github.com/dyad-ha/dyad/services/unit"
)

// Situation is what Summarize needs besides the records.
type Situation struct {
	// Reports are the PMs' VM reports: this PM's, and the peer's while it
	// is heard.
	Reports map[int]*NodeReport
	// Volumes are the unit's volumes as the storage view shows them.
	Volumes map[int]unit.Volume
	// BothPMs is true while both PMs run and hear each other.
	BothPMs bool
	Now     time.Time
}

// Summarize turns the records and the PMs' reports into the API's view.
func Summarize(recs []Record, s Situation) []unit.VM {
	out := make([]unit.VM, 0, len(recs))
	for _, r := range recs {
		out = append(out, view(r, s))
	}
	return out
}

func view(r Record, s Situation) unit.VM {
	v := unit.VM{
		ID: r.ID, UUID: r.UUID, Name: r.Name, Node: r.Node, VCPUs: r.VCPUs, MemoryBytes: r.MemoryBytes,
		Boot: r.Boot, CD: r.CD, Critical: r.Critical, Starts: r.StartSeq,
		Volumes:   []unit.VMVolume{},
		Placement: unit.Placement{Policy: r.Placement.Policy, PM: r.Placement.PM}, Home: r.Home,
	}
	if v.Placement.Policy == "" {
		v.Placement.Policy = unit.PlaceAuto
	}
	for _, c := range r.Crashes {
		if s.Now.Sub(c) < DefaultMTBFWindow {
			v.Crashes++
		}
	}
	busy, degraded := false, !s.BothPMs
	for _, ref := range r.Volumes {
		vv := unit.VMVolume{VolumeID: ref.ID, Boot: ref.Boot}
		vol, ok := s.Volumes[ref.ID]
		if ok {
			vv.Name, vv.SizeBytes, vv.State = vol.Name, vol.SizeBytes, string(vol.State)
		}
		switch {
		case !ok || vol.State == unit.SyncCreating:
			busy = true
		case r.StartSeq == 0 && (vol.State == unit.SyncSyncing || vol.State == unit.SyncDegraded && s.BothPMs):
			// A new VM is being installed until its volumes are mirrored;
			// with a PM away it may start on one leg.
			busy = true
		case vol.State != unit.SyncUpToDate:
			degraded = true
		}
		v.Volumes = append(v.Volumes, vv)
	}
	for _, n := range r.NICs {
		v.NICs = append(v.NICs, unit.VMNIC{Network: n.Network, MAC: n.MAC})
	}
	if m := r.Migration; m != nil {
		v.Migration = &unit.VMMigration{From: m.From, To: m.To, Status: m.Status, Started: m.Started, Finished: m.Finished,
			TotalMs: m.TotalMs, DowntimeMs: m.DowntimeMs, Error: m.Error}
	}
	rep, heard := s.Reports[r.Node].VM(r.ID)
	st, act := state(r, rep, heard, busy, degraded)
	v.State, v.Activity = string(st), act
	if rep.Running && !rep.Incoming {
		v.Started = rep.Started
	}
	if rep.ShutdownTimedOut && rep.Running {
		v.Warnings = append(v.Warnings, "the guest did not shut down within the timeout; it keeps running")
	}
	if rep.Error != "" {
		v.Warnings = append(v.Warnings, rep.Error)
	}
	for _, c := range Allowed(st) {
		v.Allowed = append(v.Allowed, string(c))
	}
	if v.Allowed == nil {
		v.Allowed = []string{}
	}
	return v
}

func state(r Record, rep VMReport, heard, busy, degraded bool) (State, string) {
	on := fmt.Sprintf("PM %d", r.Node)
	if rep.Incoming && r.Migration.Active() {
		// The record names the target once the guest runs there; the
		// target takes the QEMU over as its own a moment later.
		rep.Incoming, rep.Booted = false, true
	}
	running := heard && rep.Running && !rep.Incoming
	switch {
	case busy && !running:
		return Busy, "creating and synchronizing its volumes"
	case r.Critical || (heard && rep.Critical && r.Run):
		return Critical, fmt.Sprintf("crashed %d times within %s; waiting for Reset Device", max(len(r.Crashes), len(rep.Crashes)), DefaultMTBFWindow)
	case running && rep.Dumping:
		return Dumping, "writing guest memory to the data partition on " + on
	case running && r.Migration.Active():
		if degraded {
			return Alert, fmt.Sprintf("migrating from PM %d to PM %d", r.Migration.From, r.Migration.To)
		}
		return Running, fmt.Sprintf("migrating from PM %d to PM %d", r.Migration.From, r.Migration.To)
	case running && rep.Stopping:
		return Stopping, "shutting down on " + on
	case running && !rep.Booted:
		return Booting, "booting on " + on
	case running && degraded:
		return Alert, "running on " + on + ", not fully redundant"
	case running:
		return Running, "running on " + on
	case !r.Run:
		return Stopped, ""
	case heard && rep.LastExit != nil && rep.LastExit.Kind == ExitGuestShutdown && rep.LastExit.StartSeq >= r.StartSeq:
		return Stopped, "the guest shut down"
	case heard && rep.LastExit != nil && rep.LastExit.Kind == ExitCrash && rep.LastExit.StartSeq >= r.StartSeq:
		return Crashed, "restarting after a crash on " + on + ": " + rep.LastExit.Detail
	case !heard:
		return Booting, "starting; " + on + " is not heard"
	}
	return Booting, "starting on " + on
}
