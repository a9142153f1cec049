package pmconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dyad-ha/dyad/init/cmdline"
)

const key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

func TestFromKV(t *testing.T) {
	good := map[string]string{"node": "1", "unit": "lab", "mgmt": "10.99.0.10/24", "unitkey": key}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range good {
			m[a] = b
		}
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	tests := []struct {
		name    string
		kv      map[string]string
		wantErr string
	}{
		{"good", good, ""},
		{"node missing", with("node", ""), "dyad.node: missing"},
		{"node 3", with("node", "3"), `"3" is not 1 or 2`},
		{"bad unit", with("unit", "Lab Unit"), "not a DNS label"},
		{"mgmt missing", with("mgmt", ""), "dyad.mgmt: missing"},
		{"mgmt no prefix", with("mgmt", "10.99.0.10"), "address with prefix length"},
		{"mgmt network address", with("mgmt", "10.99.0.0/24"), "network address"},
		{"mgmt neither address nor dhcp", with("mgmt", "dhcpv4"), "or dyad.mgmt=dhcp"},
		{"mgmt missing mentions dhcp", with("mgmt", ""), "or dyad.mgmt=dhcp"},
		{"ibiz0 equals mgmt", with("ibiz0", "10.99.0.10/24"), "is the management address"},
		{"short key", with("unitkey", "abcd"), "64 hex"},
		{"unknown key", with("nod", "1"), "dyad.nod: unknown setting"},
		{"bad role", with("port.sync9", "eth3"), "unknown port role"},
		{"bond for priv0", with("port.priv0", "eth0,eth1"), "only ibiz0 may be a bond"},
		{"empty port", with("port.ibiz0", "eth1,"), "empty port name"},
		{"port twice", map[string]string{"node": "1", "mgmt": "10.99.0.10/24", "unitkey": key, "port.priv0": "eth0", "port.ibiz0": "eth1,ETH0"}, "is also given to"},
		{"bad mgmt6", with("mgmt6", "10.0.0.1/24"), "not an IPv6 host address"},
		{"bad bond mode", with("bondmode", "round-robin"), "not active-backup or 802.3ad"},
		{"bad gw", with("gw", "fe80::1"), "not an IPv4"},
		{"bad quorum port", with("quorum", "10.0.0.1:99999"), "not 1..65535"},
		{"bad quorum host", with("quorum", "a b"), "not HOST or HOST:PORT"},
		{"three quorum servers", with("quorum", "a,b,c"), "at most one alternate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := FromKV(tt.kv)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if c.Node != 1 || c.Peer() != 2 || c.Hostname != "pm1" || c.Mgmt.String() != "10.99.0.10/24" || len(c.UnitKey) != 32 {
					t.Fatalf("got %+v", c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestMgmt(t *testing.T) {
	tests := []struct {
		mgmt     string
		wantDHCP bool
		wantMgmt string
	}{
		{"10.99.0.10/24", false, "10.99.0.10/24"},
		{"dhcp", true, "invalid Prefix"},
		{"DHCP", true, "invalid Prefix"},
	}
	for _, tt := range tests {
		c, err := FromKV(map[string]string{"node": "2", "mgmt": tt.mgmt, "ibiz0": "10.99.0.2/24", "unitkey": key})
		if err != nil {
			t.Fatalf("mgmt %q: %v", tt.mgmt, err)
		}
		if c.MgmtDHCP != tt.wantDHCP || c.Mgmt.String() != tt.wantMgmt {
			t.Errorf("mgmt %q: MgmtDHCP %v, Mgmt %s; want %v, %s", tt.mgmt, c.MgmtDHCP, c.Mgmt, tt.wantDHCP, tt.wantMgmt)
		}
	}
}

func TestPortRoles(t *testing.T) {
	c, err := FromKV(map[string]string{"node": "1", "mgmt": "10.99.0.10/24", "unitkey": key,
		"port.ibiz0": "52:54:00:d7:01:02,52:54:00:d7:01:03", "port.sync0": "eth7", "mgmt6": "fd00:99::10/64"})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Ports["ibiz0"]; len(got) != 2 || got[1] != "52:54:00:d7:01:03" || c.Ports["sync0"][0] != "eth7" {
		t.Errorf("ports = %v", c.Ports)
	}
	if c.Mgmt6.String() != "fd00:99::10/64" {
		t.Errorf("mgmt6 = %v", c.Mgmt6)
	}
}

func TestFromKVReportsEveryProblem(t *testing.T) {
	_, err := FromKV(map[string]string{"node": "x", "mgmt": "nope"})
	for _, want := range []string{"dyad.node", "dyad.mgmt", "dyad.unitkey"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %s", err, want)
		}
	}
}

func TestLoadCommandLineWins(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.json")
	body := `{"node":"2","unit":"fromfile","mgmt":"10.1.0.10/16","unit_key":"` + key + `","ports":{"priv0":"eth5"}}`
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	p, _ := cmdline.Parse("console=ttyS0 dyad.unit=fromcmdline")
	c, err := Load(p, path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Node != 2 || c.Unit != "fromcmdline" || c.Ports["priv0"][0] != "eth5" {
		t.Fatalf("got %+v", c)
	}
	dhcpPath := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(dhcpPath, []byte(`{"node":"1","mgmt":"dhcp","unit_key":"`+key+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err := Load(cmdline.Params{}, dhcpPath); err != nil || !c.MgmtDHCP || c.Mgmt.IsValid() {
		t.Fatalf("\"mgmt\":\"dhcp\" in the file: %+v, %v", c, err)
	}
	if c, err := Load(p, dhcpPath); err != nil || !c.MgmtDHCP {
		t.Fatalf("\"mgmt\":\"dhcp\" in the file with a command line: %+v, %v", c, err)
	}
	if _, err := Load(p, filepath.Join(t.TempDir(), "absent.json")); err == nil || !strings.Contains(err.Error(), "dyad.node") {
		t.Fatalf("absent file: %v", err)
	}
}

func TestParseFileRejects(t *testing.T) {
	for _, in := range []string{`{"nod":"1"}`, `{"node":1}`, `{} {}`, `[`, strings.Repeat(" ", maxFileSize+1)} {
		if _, err := ParseFile(strings.NewReader(in)); err == nil {
			t.Errorf("ParseFile(%.20q) accepted", in)
		}
	}
}

func FuzzParseFile(f *testing.F) {
	f.Add(`{"node":"1","unit":"lab","mgmt":"10.99.0.10/24","unit_key":"` + key + `"}`)
	f.Add(`{"ports":{"priv0":"eth0"}}`)
	f.Fuzz(func(t *testing.T, s string) {
		kv, err := ParseFile(strings.NewReader(s))
		if err != nil {
			return
		}
		// Whatever parses must validate without panicking.
		_, _ = FromKV(kv)
	})
}

func TestQuorumServers(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"10.99.0.254", []string{"10.99.0.254:7413"}},
		{"q1.example.net:9000,10.0.0.2", []string{"q1.example.net:9000", "10.0.0.2:7413"}},
		{"[2001:db8::1]:7413", []string{"[2001:db8::1]:7413"}},
	} {
		kv := map[string]string{"node": "1", "mgmt": "10.99.0.10/24", "unitkey": key, "quorum": tc.in}
		c, err := FromKV(kv)
		if err != nil {
			t.Fatalf("%q: %v", tc.in, err)
		}
		if strings.Join(c.Quorum, " ") != strings.Join(tc.want, " ") {
			t.Errorf("%q: servers %q, want %q", tc.in, c.Quorum, tc.want)
		}
	}
}
