package network

import (
	"maps"
	"net"
	"slices"
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

func TestRoles(t *testing.T) {
	tests := []struct {
		n    int
		want []string
	}{
		{0, []string{}},
		{1, []string{"priv0"}},
		{2, []string{"priv0", "ibiz0"}},
		{5, []string{"priv0", "ibiz0", "biz1", "biz2", "biz3"}},
	}
	for _, tt := range tests {
		if got := Roles(tt.n); !slices.Equal(got, tt.want) {
			t.Errorf("Roles(%d) = %v, want %v", tt.n, got, tt.want)
		}
	}
}

func TestAssignRoles(t *testing.T) {
	tests := []struct {
		name      string
		ports     []Port
		overrides map[string]string
		want      map[string]string // role -> port name
		wantErr   string            // substring of the error
	}{
		{
			name:  "two ports in order",
			ports: testPorts("eth0", "eth1"),
			want:  map[string]string{"priv0": "eth0", "ibiz0": "eth1"},
		},
		{
			name:  "four ports",
			ports: testPorts("eth0", "eth1", "eth2", "eth3"),
			want:  map[string]string{"priv0": "eth0", "ibiz0": "eth1", "biz1": "eth2", "biz2": "eth3"},
		},
		{
			name:      "override by MAC swaps priv0 and ibiz0",
			ports:     testPorts("eth0", "eth1"),
			overrides: map[string]string{"priv0": "52:54:00:d7:01:02"},
			want:      map[string]string{"priv0": "eth1", "ibiz0": "eth0"},
		},
		{
			name:      "MAC override in upper case with dashes",
			ports:     testPorts("eth0", "eth1", "eth2"),
			overrides: map[string]string{"ibiz0": "52-54-00-D7-01-03"},
			want:      map[string]string{"priv0": "eth0", "ibiz0": "eth2", "biz1": "eth1"},
		},
		{
			name:      "override by name, others keep order",
			ports:     testPorts("eth0", "eth1", "eth2", "eth3"),
			overrides: map[string]string{"biz1": "eth0"},
			want:      map[string]string{"priv0": "eth1", "ibiz0": "eth2", "biz1": "eth0", "biz2": "eth3"},
		},
		{
			name:      "every role overridden",
			ports:     testPorts("eth0", "eth1"),
			overrides: map[string]string{"priv0": "eth1", "ibiz0": "eth0"},
			want:      map[string]string{"priv0": "eth1", "ibiz0": "eth0"},
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
			overrides: map[string]string{"priv0": "eth7"},
			wantErr:   "port override priv0=eth7: no port with that name or MAC address",
		},
		{
			name:      "unknown MAC",
			ports:     testPorts("eth0", "eth1"),
			overrides: map[string]string{"priv0": "52:54:00:00:00:09"},
			wantErr:   "port override priv0=52:54:00:00:00:09: no port",
		},
		{
			name:      "one port two roles",
			ports:     testPorts("eth0", "eth1", "eth2"),
			overrides: map[string]string{"priv0": "eth1", "biz1": "52:54:00:d7:01:02"},
			wantErr:   "give port eth1 two roles: biz1 and priv0",
		},
		{
			name:      "unknown role",
			ports:     testPorts("eth0", "eth1"),
			overrides: map[string]string{"mgmt": "eth0"},
			wantErr:   `no role "mgmt" with 2 ports (roles: priv0, ibiz0)`,
		},
		{
			name:      "business role beyond the port count",
			ports:     testPorts("eth0", "eth1", "eth2"),
			overrides: map[string]string{"biz2": "eth2"},
			wantErr:   `no role "biz2" with 3 ports`,
		},
		{
			name:    "duplicate port",
			ports:   append(testPorts("eth0", "eth1"), testPorts("eth0")...),
			wantErr: "port eth0 listed twice",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AssignRoles(tt.ports, tt.overrides)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("AssignRoles error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			names := make(map[string]string, len(got))
			for role, p := range got {
				names[role] = p.Name
			}
			if !maps.Equal(names, tt.want) {
				t.Fatalf("AssignRoles = %v, want %v", names, tt.want)
			}
			for role, p := range got {
				if i := slices.IndexFunc(tt.ports, func(q Port) bool { return q.Name == p.Name }); !slices.Equal(tt.ports[i].MAC, p.MAC) {
					t.Errorf("role %s: port %s lost its MAC: %v", role, p.Name, p.MAC)
				}
			}
		})
	}
}
