package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/dyad-ha/dyad/qemu-tests/harness"
	"github.com/dyad-ha/dyad/services/apiclient"
	"github.com/dyad-ha/dyad/services/unit"
	"github.com/dyad-ha/dyad/services/vm"
)

// fenceLine is what init prints when a PM that lost a partition resets.
var fenceLine = []byte("dyad-init: fencing this PM")

// partitionTimeout covers the loser's reset, its boot and the resync after
// the heal.
const partitionTimeout = 5 * time.Minute

// opsBench measures the unit operations on the VM bench's unit, the guest
// running and redundant: evacuation_seconds_per_vm (Work On of the guest's
// PM until the guest runs on the other PM; one VM, so per VM) and
// partition_resolution_seconds (every link between the PMs cut, both
// reaching the quorum server: until the losing PM has reset itself and the
// guest runs on the winner alone). The unit is back in step afterwards.
func opsBench(ctx context.Context, log *slog.Logger, u *harness.Unit, poll, slow *apiclient.Client, id int) ([]sample, error) {
	v, err := waitVM(ctx, poll, id, vmStateTimeout, "the VM Running before Work On", inState(vm.Running))
	if err != nil {
		return nil, err
	}
	from, to := v.Node, 3-v.Node
	log.Info("Work On the guest's PM", "pm", from)
	start := time.Now()
	if _, err := slow.PMCommand(ctx, from, unit.PMWorkOn, unit.PMAction{}); err != nil {
		return nil, err
	}
	if _, err := waitVM(ctx, poll, id, migrationTimeout, fmt.Sprintf("the guest evacuated to pm%d", to), func(v unit.VM) (bool, error) {
		if m := v.Migration; m != nil && m.Status == vm.MigrationFailed && m.To == to {
			return true, fmt.Errorf("evacuation failed: %s", m.Error)
		}
		if v.Node != to {
			return false, fmt.Errorf("on pm%d", v.Node)
		}
		return inState(vm.Running, vm.Alert)(v)
	}); err != nil {
		return nil, err
	}
	s := []sample{{"evacuation_seconds_per_vm", time.Since(start).Seconds(), "s"}}
	if _, err := slow.PMCommand(ctx, from, unit.PMFinalize, unit.PMAction{}); err != nil {
		return nil, err
	}
	if _, err := waitVM(ctx, poll, id, migrationTimeout+volumeSyncTimeout, "the guest back on its home PM", func(v unit.VM) (bool, error) {
		if v.Node != v.Home {
			return false, fmt.Errorf("on pm%d, home pm%d", v.Node, v.Home)
		}
		return inState(vm.Running)(v)
	}); err != nil {
		return nil, err
	}

	var un unit.Unit
	err = harness.WaitFor(ctx, vmStateTimeout, "the primary holding the quorum lease", func(ctx context.Context) (bool, error) {
		if un, err = poll.Unit(ctx); err != nil {
			return false, err
		}
		if un.Quorum.Holder != 0 && un.Quorum.Holder == un.Primary {
			return true, nil
		}
		return false, fmt.Errorf("quorum %+v", un.Quorum)
	})
	if err != nil {
		return nil, err
	}
	fenced := func() map[int]int {
		out := map[int]int{}
		for _, pm := range u.PMs() {
			out[pm.N()] = bytes.Count(pm.SerialLog(), fenceLine)
		}
		return out
	}
	before := fenced()
	log.Info("cutting every link between the PMs")
	cut := time.Now()
	if err := u.Partition(ctx, true); err != nil {
		return nil, err
	}
	loser := 0
	err = harness.WaitFor(ctx, partitionTimeout, "a PM to fence itself", func(ctx context.Context) (bool, error) {
		now := fenced()
		for n := 1; n <= 2; n++ {
			if now[n] > before[n] {
				loser = n
			}
		}
		return loser != 0, nil
	})
	if err != nil {
		return nil, err
	}
	log.Info("a PM fenced itself", "pm", loser, "seconds", time.Since(cut).Seconds())
	winner := 3 - loser
	if _, err := waitVM(ctx, poll, id, vmFailoverTimeout, fmt.Sprintf("the guest running on pm%d", winner), func(v unit.VM) (bool, error) {
		if v.Node != winner || v.Started.IsZero() {
			return false, fmt.Errorf("on pm%d", v.Node)
		}
		return inState(vm.Booting, vm.Running, vm.Alert)(v)
	}); err != nil {
		return nil, err
	}
	s = append(s, sample{"partition_resolution_seconds", time.Since(cut).Seconds(), "s"})
	log.Info("partition resolved", "loser", loser, "seconds", time.Since(cut).Seconds())
	if err := harness.WaitFor(ctx, partitionTimeout, fmt.Sprintf("pm%d back from its reset", loser), func(ctx context.Context) (bool, error) {
		return u.PM(loser).Ping(ctx) == nil, nil
	}); err != nil {
		return nil, err
	}
	if err := u.Partition(ctx, false); err != nil {
		return nil, err
	}
	if _, err := waitVM(ctx, poll, id, partitionTimeout, "the VM Running (redundant) after the heal", func(v unit.VM) (bool, error) {
		for _, vol := range v.Volumes {
			if vol.State == string(unit.SyncSplitBrain) {
				return true, errors.New("split brain after the heal")
			}
		}
		return inState(vm.Running)(v)
	}); err != nil {
		return nil, err
	}
	return s, nil
}
