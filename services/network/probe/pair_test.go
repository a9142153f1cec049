package probe

import (
	"reflect"
	"testing"
	"time"
)

func TestPair(t *testing.T) {
	now := time.Date(2026, 11, 22, 6, 0, 0, 0, time.UTC)
	const fresh = 5 * time.Second
	heardAt := func(node int, port string, speed int, age time.Duration) Probe {
		return Probe{Unit: "lab", Node: node, Port: port, SpeedMbps: speed, Received: now.Add(-age)}
	}
	ports := []PortInfo{{"biz1", 10000}, {"biz2", 1000}}
	tests := []struct {
		name  string
		local []PortInfo
		heard map[string][]Probe
		want  []Pairing
	}{
		{
			name:  "paired",
			local: ports,
			heard: map[string][]Probe{
				"biz1": {heardAt(2, "biz2", 10000, time.Second)},
				"biz2": {heardAt(2, "biz1", 1000, 0)},
			},
			want: []Pairing{
				{LocalPort: "biz1", PeerPort: "biz2", LocalSpeedMbps: 10000, PeerSpeedMbps: 10000},
				{LocalPort: "biz2", PeerPort: "biz1", LocalSpeedMbps: 1000, PeerSpeedMbps: 1000},
			},
		},
		{
			name:  "no peer",
			local: ports,
			heard: map[string][]Probe{"biz1": {heardAt(2, "biz1", 10000, 0)}},
			want: []Pairing{
				{LocalPort: "biz1", PeerPort: "biz1", LocalSpeedMbps: 10000, PeerSpeedMbps: 10000},
				{LocalPort: "biz2", LocalSpeedMbps: 1000, Problem: "no peer port in the same L2 domain"},
			},
		},
		{
			name:  "speed mismatch",
			local: []PortInfo{{"biz1", 1000}},
			heard: map[string][]Probe{"biz1": {heardAt(2, "biz1", 10000, 0)}},
			want: []Pairing{{LocalPort: "biz1", PeerPort: "biz1", LocalSpeedMbps: 1000, PeerSpeedMbps: 10000,
				Problem: "speed mismatch: 1000 Mb/s here, 10000 Mb/s on pm2"}},
		},
		{
			name:  "unknown speed is no mismatch",
			local: []PortInfo{{"biz1", 0}},
			heard: map[string][]Probe{"biz1": {heardAt(2, "biz1", 10000, 0)}},
			want:  []Pairing{{LocalPort: "biz1", PeerPort: "biz1", PeerSpeedMbps: 10000}},
		},
		{
			name:  "ambiguous: two peer ports on one local port",
			local: []PortInfo{{"biz1", 1000}},
			heard: map[string][]Probe{"biz1": {heardAt(2, "biz2", 1000, 0), heardAt(2, "biz1", 1000, 0)}},
			want: []Pairing{{LocalPort: "biz1", LocalSpeedMbps: 1000,
				Problem: "ambiguous: pm2 ports biz1 and biz2 both heard on biz1 (they share an L2 domain)"}},
		},
		{
			name:  "ambiguous: three peer ports",
			local: []PortInfo{{"biz1", 1000}},
			heard: map[string][]Probe{"biz1": {heardAt(2, "biz10", 1000, 0), heardAt(2, "biz2", 1000, 0), heardAt(2, "biz1", 1000, 0)}},
			want: []Pairing{{LocalPort: "biz1", LocalSpeedMbps: 1000,
				Problem: "ambiguous: pm2 ports biz1, biz2 and biz10 all heard on biz1 (they share an L2 domain)"}},
		},
		{
			name:  "ambiguous: one peer port on two local ports",
			local: ports,
			heard: map[string][]Probe{
				"biz1": {heardAt(2, "biz3", 1000, 0)},
				"biz2": {heardAt(2, "biz3", 1000, 0)},
			},
			want: []Pairing{
				{LocalPort: "biz1", LocalSpeedMbps: 10000, Problem: "ambiguous: pm2 port biz3 heard on biz1 and biz2 here (they share an L2 domain)"},
				{LocalPort: "biz2", LocalSpeedMbps: 1000, Problem: "ambiguous: pm2 port biz3 heard on biz1 and biz2 here (they share an L2 domain)"},
			},
		},
		{
			name:  "stale probes do not count",
			local: ports,
			heard: map[string][]Probe{
				"biz1": {heardAt(2, "biz1", 10000, fresh+time.Nanosecond)},
				// A stale second peer port must not make biz2 ambiguous.
				"biz2": {heardAt(2, "biz2", 1000, fresh), heardAt(2, "biz3", 1000, time.Minute)},
			},
			want: []Pairing{
				{LocalPort: "biz1", LocalSpeedMbps: 10000, Problem: "no peer port in the same L2 domain"},
				{LocalPort: "biz2", PeerPort: "biz2", LocalSpeedMbps: 1000, PeerSpeedMbps: 1000},
			},
		},
		{
			name:  "newest probe of a port wins",
			local: []PortInfo{{"biz1", 1000}},
			heard: map[string][]Probe{"biz1": {heardAt(2, "biz1", 1000, 0), heardAt(2, "biz1", 10000, time.Second)}},
			want:  []Pairing{{LocalPort: "biz1", PeerPort: "biz1", LocalSpeedMbps: 1000, PeerSpeedMbps: 1000}},
		},
		{
			name:  "own probes ignored",
			local: ports,
			heard: map[string][]Probe{
				"biz1": {heardAt(1, "biz2", 1000, 0), heardAt(2, "biz1", 10000, 0)},
				"biz2": {heardAt(1, "biz1", 10000, 0)},
			},
			want: []Pairing{
				{LocalPort: "biz1", PeerPort: "biz1", LocalSpeedMbps: 10000, PeerSpeedMbps: 10000},
				{LocalPort: "biz2", LocalSpeedMbps: 1000, Problem: "no peer port in the same L2 domain"},
			},
		},
		{
			name:  "ports unknown here ignored, output in port order",
			local: []PortInfo{{"biz10", 0}, {"biz2", 0}},
			heard: map[string][]Probe{
				"biz2":  {heardAt(2, "biz1", 0, 0)},
				"biz10": {heardAt(2, "biz5", 0, 0)},
				"biz3":  {heardAt(2, "biz1", 0, 0)}, // would make biz2 ambiguous
			},
			want: []Pairing{
				{LocalPort: "biz2", PeerPort: "biz1"},
				{LocalPort: "biz10", PeerPort: "biz5"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Pair(1, tt.local, tt.heard, now, fresh)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Pair:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestComparePorts(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"biz2", "biz10", -1},
		{"biz10", "biz2", 1},
		{"biz1", "biz1", 0},
		{"biz01", "biz1", -1}, // equal numbers: by text, so the order is total
		{"biz9", "eth0", -1},
		{"biz", "biz0", -1},
	}
	for _, tt := range tests {
		if got := comparePorts(tt.a, tt.b); got != tt.want {
			t.Errorf("comparePorts(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}
