package cluster

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/services/unit"
)

var key = bytes.Repeat([]byte{1}, 32)

func TestBeatRoundTripAndAuth(t *testing.T) {
	b := Beat{Unit: "lab", Node: 2, BootID: "x", Seq: 9, Role: unit.RolePrimary, Epoch: 4, Paths: map[string]bool{"priv0": true}}
	p, err := Marshal(key, b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Unmarshal(key, p)
	if err != nil || got.Seq != 9 || got.Role != unit.RolePrimary || !got.Paths["priv0"] {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if _, err := Unmarshal(bytes.Repeat([]byte{2}, 32), p); !errors.Is(err, ErrAuth) {
		t.Fatalf("other unit's key: %v", err)
	}
	tampered := bytes.Clone(p)
	tampered[10] ^= 1
	if _, err := Unmarshal(key, tampered); !errors.Is(err, ErrAuth) {
		t.Fatalf("tampered: %v", err)
	}
	bad, _ := Marshal(key, Beat{Node: 5})
	if _, err := Unmarshal(key, bad); err == nil {
		t.Fatal("node 5 accepted")
	}
}

func FuzzUnmarshal(f *testing.F) {
	p, _ := Marshal(key, Beat{Unit: "lab", Node: 1, Paths: map[string]bool{"ibiz0": false}})
	f.Add(p)
	f.Add([]byte("DYHB1{}"))
	f.Fuzz(func(t *testing.T, p []byte) {
		b, err := Unmarshal(key, p)
		if err == nil && b.Node != 1 && b.Node != 2 {
			t.Fatalf("accepted node %d", b.Node)
		}
	})
}

func TestMonitor(t *testing.T) {
	t0 := time.Unix(1000, 0)
	m := NewMonitor(time.Second, "priv0", "ibiz0")
	if v := m.View(t0); v.Seen || v.Lost || v.EverSeen {
		t.Fatalf("fresh monitor: %+v", v)
	}
	from := netip.MustParseAddrPort("[fe80::1%priv0]:7410")
	m.Observe("priv0", Beat{Node: 2, BootID: "a", Seq: 5, Role: unit.RolePrimary}, from, t0)
	m.Observe("ibiz0", Beat{Node: 2, BootID: "a", Seq: 6}, from, t0.Add(100*time.Millisecond))
	m.Observe("ibiz0", Beat{Node: 2, BootID: "a", Seq: 4, Role: unit.RoleNone}, from, t0.Add(200*time.Millisecond))
	v := m.View(t0.Add(500 * time.Millisecond))
	if !v.Seen || v.Peer.Seq != 6 || len(v.Paths) != 2 || !v.Paths[0].Up || !v.Paths[1].Up {
		t.Fatalf("both up: %+v", v)
	}
	// priv0 silent for more than a second, ibiz0 still fresh: one path down.
	m.Observe("ibiz0", Beat{Node: 2, BootID: "a", Seq: 7}, from, t0.Add(1500*time.Millisecond))
	v = m.View(t0.Add(1600 * time.Millisecond))
	if !v.Seen || v.Lost || v.Paths[0].Name != "ibiz0" || !v.Paths[0].Up || v.Paths[1].Up {
		t.Fatalf("priv0 down: %+v", v)
	}
	if _, ok := m.PeerAddr("priv0", t0.Add(1600*time.Millisecond)); ok {
		t.Fatal("stale priv0 address still offered")
	}
	v = m.View(t0.Add(5 * time.Second))
	if v.Seen || !v.Lost {
		t.Fatalf("all down: %+v", v)
	}
	// A new boot of the peer restarts its sequence numbers.
	m.Observe("priv0", Beat{Node: 2, BootID: "b", Seq: 1}, from, t0.Add(6*time.Second))
	if v := m.View(t0.Add(6 * time.Second)); v.Peer.BootID != "b" || !v.Seen {
		t.Fatalf("reboot: %+v", v)
	}
}

// Two PMs that promote without hearing each other, from any pair of epochs,
// never claim the same epoch: the unit database tells histories apart by it.
func TestPromotionsNeverShareAnEpoch(t *testing.T) {
	for e1 := range uint64(6) {
		for e2 := range uint64(6) {
			a := Decide(Situation{Node: 1, Role: unit.RoleNone, Epoch: e1, DBEpoch: e1, Waited: BootWait, Verdict: Run})
			b := Decide(Situation{Node: 2, Role: unit.RoleNone, Epoch: e2, DBEpoch: e2, Waited: BootWait, Verdict: Run})
			if a.Role != unit.RolePrimary || b.Role != unit.RolePrimary || a.Epoch <= e1 || b.Epoch <= e2 || a.Epoch == b.Epoch {
				t.Fatalf("from epochs %d and %d: node 1 %s/%d, node 2 %s/%d", e1, e2, a.Role, a.Epoch, b.Role, b.Epoch)
			}
		}
	}
}

func TestMonitorIgnoresReplays(t *testing.T) {
	t0 := time.Unix(1000, 0)
	m := NewMonitor(time.Second, "priv0", "ibiz0")
	peer := netip.MustParseAddrPort("10.99.0.2:7410")
	last := Beat{Node: 2, BootID: "a", Seq: 7, Role: unit.RolePrimary}
	m.Observe("priv0", last, peer, t0)
	m.Observe("ibiz0", last, peer, t0)
	// The peer dies; someone on ibiz0 replays its last beat every 500 ms.
	replayer := netip.MustParseAddrPort("10.99.0.66:7410")
	for i := 1; i <= 6; i++ {
		m.Observe("ibiz0", last, replayer, t0.Add(time.Duration(i)*500*time.Millisecond))
	}
	now := t0.Add(3 * time.Second)
	if v := m.View(now); v.Seen || !v.Lost {
		t.Fatalf("a replayed beat keeps the peer alive: %+v", v)
	}
	if to, ok := m.PeerAddr("ibiz0", t0.Add(500*time.Millisecond)); !ok || to != peer {
		t.Fatalf("a replayed beat redirected ibiz0 to %v (%v)", to, ok)
	}
	// The same beat on the other path is not a replay.
	m2 := NewMonitor(time.Second, "priv0", "ibiz0")
	m2.Observe("priv0", last, peer, t0)
	m2.Observe("ibiz0", last, peer, t0)
	if v := m2.View(t0); !v.Paths[0].Up || !v.Paths[1].Up {
		t.Fatalf("one beat on two paths: %+v", v)
	}
}

func TestDecide(t *testing.T) {
	seen := func(role unit.Role, epoch uint64, node int) View {
		return View{Seen: true, EverSeen: true, Peer: Beat{Role: role, Epoch: epoch, Node: node}}
	}
	tests := []struct {
		name      string
		s         Situation
		wantRole  unit.Role
		wantEpoch uint64
	}{
		{"booting, nobody heard yet", Situation{Node: 1, Role: unit.RoleNone, Waited: time.Second}, unit.RoleNone, 0},
		{"booting alone past the wait", Situation{Node: 2, Role: unit.RoleNone, Epoch: 3, Waited: BootWait, Verdict: Run}, unit.RolePrimary, 4},
		{"cold start, equal epochs: node 1 wins", Situation{Node: 1, Role: unit.RoleNone, Peer: seen(unit.RoleNone, 0, 2)}, unit.RolePrimary, 1},
		{"cold start, equal epochs: node 2 waits", Situation{Node: 2, Role: unit.RoleNone, Peer: seen(unit.RoleNone, 0, 1)}, unit.RoleNone, 0},
		{"cold start, newer database wins", Situation{Node: 2, Role: unit.RoleNone, Epoch: 7, Peer: seen(unit.RoleNone, 5, 1)}, unit.RolePrimary, 8},
		{"joining a running primary", Situation{Node: 1, Role: unit.RoleNone, Epoch: 2, Peer: seen(unit.RolePrimary, 9, 2)}, unit.RoleSecondary, 9},
		{"returning PM does not preempt", Situation{Node: 1, Role: unit.RoleNone, Epoch: 20, Peer: seen(unit.RoleSecondary, 9, 2)}, unit.RoleNone, 20},
		{"secondary follows", Situation{Node: 2, Role: unit.RoleSecondary, Epoch: 3, Peer: seen(unit.RolePrimary, 3, 1)}, unit.RoleSecondary, 3},
		{"secondary takes over when peer lost", Situation{Node: 2, Role: unit.RoleSecondary, Epoch: 3, DBEpoch: 3, Verdict: Run, Peer: View{Lost: true, EverSeen: true, Peer: Beat{Epoch: 3}}}, unit.RolePrimary, 4},
		{"secondary waits for the lease", Situation{Node: 2, Role: unit.RoleSecondary, Epoch: 3, DBEpoch: 3, Verdict: Wait, Peer: View{Lost: true, EverSeen: true, Peer: Beat{Epoch: 3}}}, unit.RoleSecondary, 3},
		{"secondary that lost stays", Situation{Node: 2, Role: unit.RoleSecondary, Epoch: 3, DBEpoch: 3, Verdict: Lose, Peer: View{Lost: true, EverSeen: true, Peer: Beat{Epoch: 3}}}, unit.RoleSecondary, 3},
		{"alone without the right: provisional primary at its epoch", Situation{Node: 2, Role: unit.RoleNone, Epoch: 3, Waited: BootWait, Verdict: Wait}, unit.RolePrimary, 3},
		{"alone, the peer holds the lease: no role", Situation{Node: 2, Role: unit.RoleNone, Epoch: 3, Waited: BootWait, Verdict: Lose}, unit.RoleNone, 3},
		{"provisional primary forced: new epoch", Situation{Node: 2, Role: unit.RolePrimary, Epoch: 3, Provisional: true, Verdict: Run}, unit.RolePrimary, 4},
		{"provisional primary meets the peer that ran the unit", Situation{Node: 2, Role: unit.RolePrimary, Epoch: 3, DBSeq: 10, Provisional: true, Verdict: Run, Peer: View{Seen: true, EverSeen: true, Peer: Beat{Role: unit.RolePrimary, Epoch: 3, Node: 1, DBSeq: 12}}}, unit.RoleSecondary, 3},
		{"secondary takes over when peer rebooted", Situation{Node: 2, Role: unit.RoleSecondary, Epoch: 3, DBEpoch: 3, Peer: seen(unit.RoleNone, 3, 1)}, unit.RolePrimary, 4},
		{"secondary without the primary's database does not take over", Situation{Node: 2, Role: unit.RoleSecondary, Epoch: 3, DBEpoch: 1, Peer: View{Lost: true, EverSeen: true, Peer: Beat{Epoch: 3}}}, unit.RoleSecondary, 3},
		{"secondary without the primary's database meets it again as a peer", Situation{Node: 2, Role: unit.RoleSecondary, Epoch: 3, DBEpoch: 1, Peer: seen(unit.RoleNone, 3, 1)}, unit.RoleNone, 1},
		{"node 1 promotes to odd epochs", Situation{Node: 1, Role: unit.RoleSecondary, Epoch: 4, DBEpoch: 4, Verdict: Run, Peer: View{Lost: true, EverSeen: true, Peer: Beat{Epoch: 4}}}, unit.RolePrimary, 5},
		{"node 2 promotes to even epochs", Situation{Node: 2, Role: unit.RoleNone, Epoch: 4, DBEpoch: 4, Waited: BootWait, Verdict: Run}, unit.RolePrimary, 6},
		{"cold start, same epoch: more changes win", Situation{Node: 1, Role: unit.RoleNone, Epoch: 5, DBSeq: 10, Peer: View{Seen: true, EverSeen: true, Peer: Beat{Role: unit.RoleNone, Epoch: 5, Node: 2, DBSeq: 12}}}, unit.RoleNone, 5},
		{"cold start, same epoch: node 2 with more changes wins", Situation{Node: 2, Role: unit.RoleNone, Epoch: 5, DBSeq: 12, Peer: View{Seen: true, EverSeen: true, Peer: Beat{Role: unit.RoleNone, Epoch: 5, Node: 1, DBSeq: 10}}}, unit.RolePrimary, 6},
		{"primary keeps running when peer lost", Situation{Node: 1, Role: unit.RolePrimary, Epoch: 3, Peer: View{Lost: true, EverSeen: true}}, unit.RolePrimary, 3},
		{"two primaries: newer epoch wins", Situation{Node: 1, Role: unit.RolePrimary, Epoch: 3, Peer: seen(unit.RolePrimary, 4, 2)}, unit.RoleSecondary, 4},
		{"two primaries: older epoch loses", Situation{Node: 2, Role: unit.RolePrimary, Epoch: 4, Peer: seen(unit.RolePrimary, 3, 1)}, unit.RolePrimary, 4},
		{"two primaries, same epoch: node 1 wins", Situation{Node: 2, Role: unit.RolePrimary, Epoch: 4, Peer: seen(unit.RolePrimary, 4, 1)}, unit.RoleSecondary, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(tt.s)
			if d.Role != tt.wantRole || d.Epoch != tt.wantEpoch {
				t.Fatalf("Decide = %s/%d (%s), want %s/%d", d.Role, d.Epoch, d.Reason, tt.wantRole, tt.wantEpoch)
			}
		})
	}
}
