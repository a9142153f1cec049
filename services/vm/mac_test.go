package vm

import (
	"net"
	"testing"
)

func TestMAC(t *testing.T) {
	key := []byte("unit key of test unit")
	// Golden values, computed independently of this code: a change here
	// renames every VM's address on every installed unit, which guests
	// see as new hardware.
	golden := []struct {
		key  []byte
		vm   int
		nic  int
		want string
	}{
		{[]byte("k"), 1, 0, "72:ee:0f:75:59:29"},
		{key, 1, 0, "26:b2:e9:23:eb:2d"},
		{key, 2, 1, "06:78:12:d7:7e:2f"},
	}
	for _, g := range golden {
		if got := NICMAC(g.key, g.vm, g.nic).String(); got != g.want {
			t.Errorf("NICMAC(%q, %d, %d) = %s, want %s", g.key, g.vm, g.nic, got, g.want)
		}
	}

	seen := map[string]string{}
	for vm := range 2000 {
		for nic := range 4 {
			m := NICMAC(key, vm, nic)
			if err := CheckMAC(m); err != nil {
				t.Fatalf("NICMAC(%d, %d) = %s: %v", vm, nic, m, err)
			}
			if m[0]&0x02 == 0 {
				t.Fatalf("NICMAC(%d, %d) = %s is not locally administered", vm, nic, m)
			}
			if !equalMAC(m, NICMAC(key, vm, nic)) {
				t.Fatalf("NICMAC(%d, %d) is not stable", vm, nic)
			}
			if other, dup := seen[m.String()]; dup {
				t.Fatalf("NICMAC(%d, %d) = %s, same as %s", vm, nic, m, other)
			}
			seen[m.String()] = m.String()
		}
	}
	if equalMAC(MAC(key, 1), MAC([]byte("another unit"), 1)) {
		t.Error("two units derive the same MAC for VM 1")
	}
	if !equalMAC(MAC(key, 7), NICMAC(key, 7, 0)) {
		t.Error("MAC is not the address of NIC 0")
	}
}

func equalMAC(a, b net.HardwareAddr) bool { return a.String() == b.String() }

func TestCheckMAC(t *testing.T) {
	tests := []struct {
		mac string
		ok  bool
	}{
		{"02:00:00:00:00:01", true},
		{"00:16:3e:12:34:56", true}, // globally administered, given by an operator
		{"01:00:5e:00:00:01", false},
		{"ff:ff:ff:ff:ff:ff", false},
		{"00:00:00:00:00:00", false},
		{"02:00:5e:10:00:00:00:01", false}, // EUI-64
	}
	for _, tt := range tests {
		m, err := net.ParseMAC(tt.mac)
		if err != nil {
			t.Fatal(err)
		}
		if err := CheckMAC(m); (err == nil) != tt.ok {
			t.Errorf("CheckMAC(%s) = %v, want ok %v", tt.mac, err, tt.ok)
		}
	}
	if CheckMAC(nil) == nil {
		t.Error("CheckMAC(nil) accepted")
	}
}
