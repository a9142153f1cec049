package probe

import (
	"reflect"
	"testing"
)

func paired(local, peer string, speed int) Pairing {
	return Pairing{LocalPort: local, PeerPort: peer, LocalSpeedMbps: speed, PeerSpeedMbps: speed}
}

func TestNetworks(t *testing.T) {
	noPeer := func(local string) Pairing {
		return Pairing{LocalPort: local, LocalSpeedMbps: 1000, Problem: problemNoPeer}
	}
	tests := []struct {
		name     string
		p1, p2   []Pairing
		existing []Network
		want     []Network
	}{
		{
			name: "both PMs agree, IDs in PM1 port order",
			p1:   []Pairing{paired("biz10", "biz1", 1000), paired("biz2", "biz2", 1000), paired("biz1", "biz3", 1000)},
			p2:   []Pairing{paired("biz1", "biz10", 1000), paired("biz2", "biz2", 1000), paired("biz3", "biz1", 1000)},
			want: []Network{
				{ID: 1, Name: "network1", Ports: map[int]string{1: "biz1", 2: "biz3"}},
				{ID: 2, Name: "network2", Ports: map[int]string{1: "biz2", 2: "biz2"}},
				{ID: 3, Name: "network3", Ports: map[int]string{1: "biz10", 2: "biz1"}},
			},
		},
		{
			name: "speed mismatch",
			p1:   []Pairing{{LocalPort: "biz1", PeerPort: "biz1", LocalSpeedMbps: 1000, PeerSpeedMbps: 10000, Problem: "speed mismatch: 1000 Mb/s here, 10000 Mb/s on pm2"}},
			p2:   []Pairing{{LocalPort: "biz1", PeerPort: "biz1", LocalSpeedMbps: 10000, PeerSpeedMbps: 1000, Problem: "speed mismatch: 10000 Mb/s here, 1000 Mb/s on pm1"}},
			want: []Network{{ID: 1, Name: "network1", Ports: map[int]string{1: "biz1", 2: "biz1"},
				Problem: "speed mismatch: pm1 biz1 at 1000 Mb/s, pm2 biz1 at 10000 Mb/s"}},
		},
		{
			name: "no peer on either side",
			p1:   []Pairing{paired("biz1", "biz1", 1000), noPeer("biz2")},
			p2:   []Pairing{paired("biz1", "biz1", 1000), noPeer("biz2")},
			want: []Network{
				{ID: 1, Name: "network1", Ports: map[int]string{1: "biz1", 2: "biz1"}},
				{ID: 2, Name: "network2", Ports: map[int]string{1: "biz2"}, Problem: "pm1 biz2: no peer port in the same L2 domain"},
				{ID: 3, Name: "network3", Ports: map[int]string{2: "biz2"}, Problem: "pm2 biz2: no peer port in the same L2 domain"},
			},
		},
		{
			name: "PM2 pairs the port with another PM1 port",
			p1:   []Pairing{paired("biz1", "biz2", 1000), noPeer("biz3")},
			p2:   []Pairing{paired("biz2", "biz3", 1000)},
			want: []Network{
				{ID: 1, Name: "network1", Ports: map[int]string{1: "biz1"}, Problem: "inconsistent: pm1 biz1 hears pm2 biz2, but pm2 biz2 hears pm1 biz3"},
				{ID: 2, Name: "network2", Ports: map[int]string{1: "biz3"}, Problem: "pm1 biz3: no peer port in the same L2 domain"},
				{ID: 3, Name: "network3", Ports: map[int]string{2: "biz2"}, Problem: "inconsistent: pm2 biz2 hears pm1 biz3, but on pm1 biz3: no peer port in the same L2 domain"},
			},
		},
		{
			name: "PM2 does not report the port PM1 hears",
			p1:   []Pairing{paired("biz1", "biz9", 1000)},
			want: []Network{
				{ID: 1, Name: "network1", Ports: map[int]string{1: "biz1"}, Problem: "inconsistent: pm1 biz1 hears pm2 biz9, which pm2 does not report"},
			},
		},
		{
			name:     "IDs and names kept across calls",
			p1:       []Pairing{paired("biz1", "biz1", 1000), paired("biz2", "biz2", 1000)},
			p2:       []Pairing{paired("biz1", "biz1", 1000), paired("biz2", "biz2", 1000)},
			existing: []Network{{ID: 7, Name: "storage", Ports: map[int]string{1: "biz2", 2: "biz2"}}, {ID: 3, Name: "network3", Ports: map[int]string{1: "biz1", 2: "biz1"}}},
			want: []Network{
				{ID: 3, Name: "network3", Ports: map[int]string{1: "biz1", 2: "biz1"}},
				{ID: 7, Name: "storage", Ports: map[int]string{1: "biz2", 2: "biz2"}},
			},
		},
		{
			name:     "PM2 down: networks keep their IDs and names through PM1's ports",
			p1:       []Pairing{noPeer("biz1"), noPeer("biz2"), noPeer("biz3")},
			existing: []Network{{ID: 1, Name: "office", Ports: map[int]string{1: "biz1", 2: "biz1"}}, {ID: 2, Name: "network2", Ports: map[int]string{1: "biz2", 2: "biz2"}}},
			want: []Network{
				{ID: 1, Name: "office", Ports: map[int]string{1: "biz1"}, Problem: "pm1 biz1: no peer port in the same L2 domain"},
				{ID: 2, Name: "network2", Ports: map[int]string{1: "biz2"}, Problem: "pm1 biz2: no peer port in the same L2 domain"},
				{ID: 3, Name: "network3", Ports: map[int]string{1: "biz3"}, Problem: "pm1 biz3: no peer port in the same L2 domain"},
			},
		},
		{
			name:     "PM1 down: networks keep their IDs and names through PM2's ports",
			p2:       []Pairing{noPeer("biz1")},
			existing: []Network{{ID: 4, Name: "office", Ports: map[int]string{1: "biz1", 2: "biz1"}}},
			want: []Network{
				{ID: 4, Name: "office", Ports: map[int]string{2: "biz1"}, Problem: "pm2 biz1: no peer port in the same L2 domain"},
			},
		},
		{
			name: "exact match beats a shared port",
			// PM1 biz1 shares its port with both old networks; it keeps the
			// one it matches exactly, and PM2's biz1 keeps the other.
			p1: []Pairing{paired("biz1", "biz2", 1000)},
			p2: []Pairing{paired("biz2", "biz1", 1000), noPeer("biz1")},
			existing: []Network{
				{ID: 1, Name: "old", Ports: map[int]string{1: "biz1", 2: "biz1"}},
				{ID: 2, Name: "kept", Ports: map[int]string{1: "biz1", 2: "biz2"}},
			},
			want: []Network{
				{ID: 1, Name: "old", Ports: map[int]string{2: "biz1"}, Problem: "pm2 biz1: no peer port in the same L2 domain"},
				{ID: 2, Name: "kept", Ports: map[int]string{1: "biz1", 2: "biz2"}},
			},
		},
		{
			name:     "new IDs never reuse an existing ID",
			p1:       []Pairing{paired("biz1", "biz1", 1000)},
			p2:       []Pairing{paired("biz1", "biz1", 1000)},
			existing: []Network{{ID: 5, Name: "gone", Ports: map[int]string{1: "biz9", 2: "biz9"}}},
			want:     []Network{{ID: 6, Name: "network6", Ports: map[int]string{1: "biz1", 2: "biz1"}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Networks(tt.p1, tt.p2, tt.existing)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Networks:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// TestNetworksStable feeds each result back as existing, as the primary
// does, through a rename, PM2 going down and coming back, and a new port.
func TestNetworksStable(t *testing.T) {
	both := []Pairing{paired("biz1", "biz1", 1000), paired("biz2", "biz2", 1000)}
	nets := Networks(both, both, nil)
	nets[1].Name = "storage" // operator rename
	alone := []Pairing{
		{LocalPort: "biz1", LocalSpeedMbps: 1000, Problem: problemNoPeer},
		{LocalPort: "biz2", LocalSpeedMbps: 1000, Problem: problemNoPeer},
	}
	nets = Networks(alone, nil, nets)
	nets = Networks(both, both, nets)
	three := append(both, paired("biz3", "biz3", 1000))
	nets = Networks(three, three, nets)
	want := []Network{
		{ID: 1, Name: "network1", Ports: map[int]string{1: "biz1", 2: "biz1"}},
		{ID: 2, Name: "storage", Ports: map[int]string{1: "biz2", 2: "biz2"}},
		{ID: 3, Name: "network3", Ports: map[int]string{1: "biz3", 2: "biz3"}},
	}
	if !reflect.DeepEqual(nets, want) {
		t.Errorf("after rename, PM2 down and back, new port:\n got %+v\nwant %+v", nets, want)
	}
	if again := Networks(three, three, nets); !reflect.DeepEqual(again, nets) {
		t.Errorf("re-running changed the networks:\n got %+v\nwant %+v", again, nets)
	}
}
