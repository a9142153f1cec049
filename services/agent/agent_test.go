package agent

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/services/cluster"
	"github.com/dyad-ha/dyad/services/network"
	"github.com/dyad-ha/dyad/services/pmconfig"
	"github.com/dyad-ha/dyad/services/store"
	"github.com/dyad-ha/dyad/services/unit"
)

func newTestAgent(t *testing.T, dir string, node int, uptime time.Duration) *Agent {
	t.Helper()
	a, err := New(Options{
		Config: pmconfig.Config{
			Node: node, Unit: "lab", Mgmt: netip.MustParsePrefix("10.99.0.10/24"),
			UnitKey: bytes.Repeat([]byte{7}, 32),
		},
		DataDir: dir,
		BootID:  "boot-a",
		Uptime:  func() time.Duration { return uptime },
		Log:     slog.New(slog.DiscardHandler),
		Net:     &fakeNet{},
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// init restarts a crashed agent within the same boot of the PM, so with the
// same boot ID: the peer must go on taking its beats.
func TestBeatsOfARestartedAgentAreTaken(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Now()
	peer := cluster.NewMonitor(DeadAfter, "priv0")
	from := netip.MustParseAddrPort("[fe80::2%priv0]:7410")

	uptime := 30 * time.Second
	first := newTestAgent(t, dir, 2, uptime)
	var last cluster.Beat
	for range 500 { // 100 s of beats
		last = first.beat(t0)
		peer.Observe("priv0", last, from, t0)
		uptime += BeatInterval
	}
	first.db.Close()

	// The restarted agent starts a second later.
	restarted := newTestAgent(t, dir, 2, uptime+time.Second)
	b := restarted.beat(t0)
	now := t0.Add(2 * DeadAfter)
	peer.Observe("priv0", b, from, now)
	if v := peer.View(now); !v.Seen || v.Peer.Seq != b.Seq {
		t.Fatalf("beat %d of the restarted agent ignored after beat %d of the first: %+v", b.Seq, last.Seq, v)
	}
	restarted.db.Close()
}

// fakeNet records what the agent holds.
type fakeNet struct {
	mu   sync.Mutex
	mgmt bool
}

func (n *fakeNet) Setup(context.Context, pmconfig.Config) (network.PortPlan, error) {
	return network.PortPlan{}, nil
}

func (n *fakeNet) Apply(context.Context, network.Desired) error { return nil }

func (n *fakeNet) Links(context.Context) ([]unit.Link, error) { return nil, nil }

func (n *fakeNet) HoldMgmt(context.Context, ...netip.Prefix) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.mgmt = true
	return nil
}

func (n *fakeNet) ReleaseMgmt(context.Context, ...netip.Prefix) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.mgmt = false
	return nil
}

// A primary whose peer refuses its changes as from an older epoch gives up
// the role and the management address, so the newer database can win.
func TestDeposedPrimaryStepsDown(t *testing.T) {
	ctx := t.Context()
	a := newTestAgent(t, t.TempDir(), 1, time.Minute)
	defer a.db.Close()
	if err := a.db.SetEpoch(ctx, nil, 5); err != nil {
		t.Fatal(err)
	}
	net := a.opt.Net.(*fakeNet)
	net.HoldMgmt(ctx, a.cfg.Mgmt)
	a.role, a.epoch, a.noneSince = unit.RolePrimary, 5, time.Now().Add(-time.Hour)

	a.replicationFailed("test", fmt.Errorf("not replicated to the peer: %w", store.ErrGap))
	a.elect(ctx)
	if a.Role() != unit.RolePrimary || !net.mgmt {
		t.Fatalf("stepped down on an error that is not a deposition: role %s, holding %v", a.Role(), net.mgmt)
	}

	a.replicationFailed("test", fmt.Errorf("not replicated to the peer: %w", store.ErrDeposed))
	a.elect(ctx)
	if a.Role() != unit.RoleNone || net.mgmt || a.epoch != 5 {
		t.Fatalf("after deposition: role %s epoch %d, holding the management address %v", a.Role(), a.epoch, net.mgmt)
	}
	// Undecided again: the boot wait counts anew, so it does not run the
	// unit alone at once if the peer falls silent.
	if d := time.Since(a.noneSince); d > time.Minute {
		t.Fatalf("boot wait not restarted: %s", d)
	}
}
