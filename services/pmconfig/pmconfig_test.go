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
		{"ibiz0 equals mgmt", with("ibiz0", "10.99.0.10/24"), "is the management address"},
		{"short key", with("unitkey", "abcd"), "64 hex"},
		{"unknown key", with("nod", "1"), "dyad.nod: unknown setting"},
		{"bad role", with("port.sync9", "eth3"), "unknown port role"},
		{"bad gw", with("gw", "fe80::1"), "not an IPv4"},
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
	if c.Node != 2 || c.Unit != "fromcmdline" || c.Ports["priv0"] != "eth5" {
		t.Fatalf("got %+v", c)
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
