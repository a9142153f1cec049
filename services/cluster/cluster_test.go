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
		{"booting alone past the wait", Situation{Node: 2, Role: unit.RoleNone, Epoch: 3, Waited: BootWait}, unit.RolePrimary, 4},
		{"cold start, equal epochs: node 1 wins", Situation{Node: 1, Role: unit.RoleNone, Peer: seen(unit.RoleNone, 0, 2)}, unit.RolePrimary, 1},
		{"cold start, equal epochs: node 2 waits", Situation{Node: 2, Role: unit.RoleNone, Peer: seen(unit.RoleNone, 0, 1)}, unit.RoleNone, 0},
		{"cold start, newer database wins", Situation{Node: 2, Role: unit.RoleNone, Epoch: 7, Peer: seen(unit.RoleNone, 5, 1)}, unit.RolePrimary, 8},
		{"joining a running primary", Situation{Node: 1, Role: unit.RoleNone, Epoch: 2, Peer: seen(unit.RolePrimary, 9, 2)}, unit.RoleSecondary, 9},
		{"returning PM does not preempt", Situation{Node: 1, Role: unit.RoleNone, Epoch: 20, Peer: seen(unit.RoleSecondary, 9, 2)}, unit.RoleNone, 20},
		{"secondary follows", Situation{Node: 2, Role: unit.RoleSecondary, Epoch: 3, Peer: seen(unit.RolePrimary, 3, 1)}, unit.RoleSecondary, 3},
		{"secondary takes over when peer lost", Situation{Node: 2, Role: unit.RoleSecondary, Epoch: 3, Peer: View{Lost: true, EverSeen: true, Peer: Beat{Epoch: 3}}}, unit.RolePrimary, 4},
		{"secondary takes over when peer rebooted", Situation{Node: 2, Role: unit.RoleSecondary, Epoch: 3, Peer: seen(unit.RoleNone, 3, 1)}, unit.RolePrimary, 4},
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
