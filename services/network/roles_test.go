package network

import (
	"maps"
	"net"
	"strings"
	"testing"
)

func testPorts(names ...string) []Port {
	ports := make([]Port, len(names))
	for i, n := range names {
		ports[i] = Port{Name: n, Index: i + 2, MAC: net.HardwareAddr{0x52, 0x54, 0x00, 0xd7, 0x01, byte(i + 1)}}
	}
	return ports
}

func TestPlan(t *testing.T) {
	tests := []struct {
		name      string
		ports     []Port
		overrides map[string][]string
		want      map[string]string // current port name -> new name
		wantErr   string            // substring of the error
	}{
		{
			name:  "two ports in order",
			ports: testPorts("eth0", "eth1"),
			want:  map[string]string{"eth0": "priv0", "eth1": "ibiz0"},
		},
		{
			name:  "four ports",
			ports: testPorts("eth0", "eth1", "eth2", "eth3"),
			want:  map[string]string{"eth0": "priv0", "eth1": "ibiz0", "eth2": "biz1", "eth3": "biz2"},
		},
		{
			name:      "override by MAC swaps priv0 and ibiz0",
			ports:     testPorts("eth0", "eth1"),
			overrides: map[string][]string{"priv0": {"52:54:00:d7:01:02"}},
			want:      map[string]string{"eth1": "priv0", "eth0": "ibiz0"},
		},
		{
			name:      "MAC override in upper case with dashes",
			ports:     testPorts("eth0", "eth1", "eth2"),
			overrides: map[string][]string{"ibiz0": {"52-54-00-D7-01-03"}},
			want:      map[string]string{"eth0": "priv0", "eth2": "ibiz0", "eth1": "biz1"},
		},
		{
			name:      "ibiz0 bond and a sync link",
			ports:     testPorts("eth0", "eth1", "eth2", "eth3", "eth4"),
			overrides: map[string][]string{"ibiz0": {"eth2", "eth3"}, "sync0": {"eth1"}},
			want:      map[string]string{"eth0": "priv0", "eth1": "sync0", "eth2": "ibiz0p0", "eth3": "ibiz0p1", "eth4": "biz1"},
		},
		{
			name:      "after a restart the ports carry their names already",
			ports:     testPorts("priv0", "ibiz0p0", "ibiz0p1", "biz1"),
			overrides: map[string][]string{"ibiz0": {"eth1", "eth2"}},
			want:      map[string]string{"priv0": "priv0", "ibiz0p0": "ibiz0p0", "ibiz0p1": "ibiz0p1", "biz1": "biz1"},
		},
		{
			name:    "no ports",
			ports:   nil,
			wantErr: "found 0 Ethernet port(s) (none); a PM needs at least 2",
		},
		{
			name:    "one port",
			ports:   testPorts("eth0"),
			wantErr: "found 1 Ethernet port(s) (eth0 52:54:00:d7:01:01)",
		},
		{
			name:      "unknown port",
			ports:     testPorts("eth0", "eth1"),
			overrides: map[string][]string{"priv0": {"eth7"}},
			wantErr:   "port for priv0: no port named eth7",
		},
		{
			name:      "one port two roles",
			ports:     testPorts("eth0", "eth1", "eth2"),
			overrides: map[string][]string{"priv0": {"eth1"}, "ibiz0": {"52:54:00:d7:01:02", "eth2"}},
			wantErr:   "port eth1 is given two roles: ibiz0 and priv0",
		},
		{
			name:      "unknown role",
			ports:     testPorts("eth0", "eth1"),
			overrides: map[string][]string{"mgmt": {"eth0"}},
			wantErr:   `unknown port role "mgmt"`,
		},
		{
			name:      "sync links with a gap",
			ports:     testPorts("eth0", "eth1", "eth2"),
			overrides: map[string][]string{"sync1": {"eth2"}},
			wantErr:   "sync0 is missing",
		},
		{
			name:    "duplicate port",
			ports:   append(testPorts("eth0", "eth1"), testPorts("eth0")...),
			wantErr: "port eth0 listed twice",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Plan(tt.ports, tt.overrides)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Plan error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if names := got.Names(); !maps.Equal(names, tt.want) {
				t.Fatalf("Plan names = %v, want %v", names, tt.want)
			}
		})
	}
}
