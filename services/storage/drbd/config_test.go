package drbd

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/services/unit"
)

func sample() Resource {
	return Resource{
		Name:  "r3",
		Minor: 3,
		Disk:  "/dev/dyad_sg1/vol3",
		Port:  BasePort + 3,
		Addrs: [2]netip.Addr{netip.MustParseAddr("169.254.42.1"), netip.MustParseAddr("169.254.42.2")},
	}
}

const sampleConf = `# Written by dyad; it is replaced on every change.
global {
	usage-count no;
}

common {
	net {
		protocol C;
		after-sb-0pri disconnect;
		after-sb-1pri disconnect;
		after-sb-2pri disconnect;
		rr-conflict disconnect;
		ping-int 3;
		ping-timeout 10;
		connect-int 3;
		timeout 25;
		ko-count 7;
		max-buffers 8000;
		max-epoch-size 8000;
	}
	disk {
		on-io-error detach;
		fencing resource-and-stonith;
		al-extents 1237;
		c-plan-ahead 20;
	}
}

resource r3 {
	net {
		allow-two-primaries no;
	}
	disk {
		resync-rate 34133k;
		c-min-rate 10240k;
		c-max-rate 102400k;
	}
	floating ipv4 169.254.42.1:7803 {
		device /dev/drbd3 minor 3;
		disk /dev/dyad_sg1/vol3;
		meta-disk internal;
	}
	floating ipv4 169.254.42.2:7803 {
		device /dev/drbd3 minor 3;
		disk /dev/dyad_sg1/vol3;
		meta-disk internal;
	}
}
`

func TestRenderSample(t *testing.T) {
	var b bytes.Buffer
	if err := Render(&b, sample()); err != nil {
		t.Fatal(err)
	}
	if b.String() != sampleConf {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), sampleConf)
	}
}

func TestRenderOptions(t *testing.T) {
	r := sample()
	r.DualPrimary = true
	r.SizeBytes = 1 << 30
	r.ResyncMaxRate = 30 << 20
	r.ResyncMinRate = 1 << 20
	v6 := sample()
	v6.Name, v6.Minor, v6.Port, v6.Disk = "r4", 4, BasePort+4, "/dev/dyad_sg1/vol4"
	v6.Addrs = [2]netip.Addr{netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2")}
	b, err := Marshal(r, v6)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"allow-two-primaries yes;",
		"size 2097152s;",
		"resync-rate 10240k;",
		"c-min-rate 1024k;",
		"c-max-rate 30720k;",
		"resource r4 {",
		"floating ipv6 [fd00::1]:7804 {",
		"floating ipv6 [fd00::2]:7804 {",
		"device /dev/drbd4 minor 4;",
	} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("missing %q in\n%s", want, b)
		}
	}
}

func TestRenderEmpty(t *testing.T) {
	b, err := Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("usage-count no;")) || bytes.Contains(b, []byte("\nresource ")) {
		t.Errorf("empty config:\n%s", b)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestRenderWriteError(t *testing.T) {
	if err := Render(failWriter{}, sample()); !errors.Is(err, ErrWrite) {
		t.Errorf("err = %v", err)
	}
}

func TestRenderRefuses(t *testing.T) {
	mod := func(f func(*Resource)) []Resource { r := sample(); f(&r); return []Resource{r} }
	second := func(f func(*Resource)) []Resource {
		a, b := sample(), sample()
		b.Name, b.Minor, b.Port, b.Disk = "r4", 4, BasePort+4, "/dev/dyad_sg1/vol4"
		f(&b)
		return []Resource{a, b}
	}
	tests := []struct {
		name string
		rs   []Resource
		want string
	}{
		{"empty name", mod(func(r *Resource) { r.Name = "" }), "1..63"},
		{"long name", mod(func(r *Resource) { r.Name = strings.Repeat("r", 64) }), "1..63"},
		{"space in name", mod(func(r *Resource) { r.Name = "r 3" }), "only letters"},
		{"brace in name", mod(func(r *Resource) { r.Name = "r3{" }), "only letters"},
		{"leading dash", mod(func(r *Resource) { r.Name = "-r3" }), "start with"},
		{"all", mod(func(r *Resource) { r.Name = "all" }), "reserved"},
		{"minor- prefix", mod(func(r *Resource) { r.Name = "minor-3" }), "reserved"},
		{"negative minor", mod(func(r *Resource) { r.Minor = -1 }), "minor -1"},
		{"minor 62", mod(func(r *Resource) { r.Minor = 62 }), "minor 62"},
		{"relative disk", mod(func(r *Resource) { r.Disk = "dyad_sg1/vol3" }), "under /dev/"},
		{"disk outside dev", mod(func(r *Resource) { r.Disk = "/etc/passwd" }), "under /dev/"},
		{"disk dotdot", mod(func(r *Resource) { r.Disk = "/dev/../etc/passwd" }), "clean"},
		{"disk semicolon", mod(func(r *Resource) { r.Disk = "/dev/x;y" }), "not allowed"},
		{"disk space", mod(func(r *Resource) { r.Disk = "/dev/x y" }), "not allowed"},
		{"bare /dev/", mod(func(r *Resource) { r.Disk = "/dev/" }), "under /dev/"},
		{"port 0", mod(func(r *Resource) { r.Port = 0 }), "port 0"},
		{"port 65536", mod(func(r *Resource) { r.Port = 65536 }), "port 65536"},
		{"missing addr", mod(func(r *Resource) { r.Addrs[1] = netip.Addr{} }), "node 2 missing"},
		{"mixed families", mod(func(r *Resource) { r.Addrs[1] = netip.MustParseAddr("fd00::2") }), "different families"},
		{"mapped v4", mod(func(r *Resource) { r.Addrs[1] = netip.MustParseAddr("::ffff:169.254.42.2") }), "IPv4-mapped"},
		{"zone", mod(func(r *Resource) {
			r.Addrs = [2]netip.Addr{netip.MustParseAddr("fe80::1%priv0"), netip.MustParseAddr("fe80::2%priv0")}
		}), "zone"},
		{"unspecified", mod(func(r *Resource) { r.Addrs[0] = netip.MustParseAddr("0.0.0.0") }), "cannot be"},
		{"multicast", mod(func(r *Resource) { r.Addrs[0] = netip.MustParseAddr("224.0.0.1") }), "cannot be"},
		{"same addresses", mod(func(r *Resource) { r.Addrs[1] = r.Addrs[0] }), "both nodes"},
		{"odd size", mod(func(r *Resource) { r.SizeBytes = 1000 }), "multiple of 512"},
		{"negative size", mod(func(r *Resource) { r.SizeBytes = -512 }), "multiple of 512"},
		{"huge size", mod(func(r *Resource) { r.SizeBytes = (maxSizeSectors + 1) * 512 }), "multiple of 512"},
		{"max rate too low", mod(func(r *Resource) { r.ResyncMaxRate = 100 << 10 }), "max rate"},
		{"max rate too high", mod(func(r *Resource) { r.ResyncMaxRate = 5 << 30 }), "max rate"},
		{"negative rate", mod(func(r *Resource) { r.ResyncMinRate = -1 }), "negative"},
		{"min above max", mod(func(r *Resource) { r.ResyncMaxRate, r.ResyncMinRate = 1<<20, 2<<20 }), "above max"},
		{"duplicate name", second(func(r *Resource) { r.Name = "r3" }), "defined twice"},
		{"duplicate minor", second(func(r *Resource) { r.Minor = 3 }), "share minor"},
		{"duplicate port", second(func(r *Resource) { r.Port = BasePort + 3 }), "share port"},
		{"duplicate disk", second(func(r *Resource) { r.Disk = "/dev/dyad_sg1/vol3" }), "share disk"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			err := Render(&b, tt.rs...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if b.Len() != 0 {
				t.Errorf("wrote %d bytes despite the error", b.Len())
			}
		})
	}
}

func TestRatesDefaultMinClamped(t *testing.T) {
	r := sample()
	r.ResyncMaxRate = 1 << 20 // below DefaultResyncMinRate
	resync, lo, hi, err := r.rates()
	if err != nil || hi != 1024 || lo != 1024 || resync != 1024 {
		t.Errorf("rates = %d %d %d %v", resync, lo, hi, err)
	}
}

func TestMaxMinorMatchesUnit(t *testing.T) {
	if MaxMinor != unit.MaxVolumes-1 {
		t.Errorf("MaxMinor %d, unit.MaxVolumes %d", MaxMinor, unit.MaxVolumes)
	}
}

// TestRenderDrbdadmDump feeds the generated config to the real parser of
// drbdadm-84 ("dump" needs no kernel module) and checks that it is
// accepted and understood as written.
func TestRenderDrbdadmDump(t *testing.T) {
	adm := admBinary(t)
	r := sample()
	r.SizeBytes = 1 << 30
	v6 := sample()
	v6.Name, v6.Minor, v6.Port, v6.Disk, v6.DualPrimary = "r61", 61, BasePort+61, "/dev/dyad_sg2/vol61", true
	v6.Addrs = [2]netip.Addr{netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2")}
	for _, rs := range [][]Resource{{r}, {r, v6}, nil} {
		conf := writeConf(t, rs...)
		out := runTool(t, adm, "-c", conf, "dump", "all")
		for _, res := range rs {
			for _, want := range []string{
				"resource " + res.Name + " {",
				"device           " + res.Device() + " minor ",
				"disk             " + res.Disk + ";",
				"meta-disk        internal;",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("dump lacks %q:\n%s", want, out)
				}
			}
		}
		for _, want := range []string{"usage-count no;", "fencing          resource-and-stonith;", "after-sb-2pri    disconnect;"} {
			if !strings.Contains(out, want) {
				t.Errorf("dump lacks %q:\n%s", want, out)
			}
		}
	}
}

// TestDrbdadmRejectsOutOfRange shows the dump test has teeth: drbdadm-84
// refuses a value outside the kernel's limits.
func TestDrbdadmRejectsOutOfRange(t *testing.T) {
	adm := admBinary(t)
	b, err := Marshal(sample())
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Replace(b, []byte("c-max-rate 102400k"), []byte("c-max-rate 100k"), 1)
	conf := filepath.Join(t.TempDir(), "bad.conf")
	if err := os.WriteFile(conf, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, adm, "-c", conf, "dump", "all").CombinedOutput(); err == nil {
		t.Errorf("drbdadm accepted c-max-rate 100k:\n%s", out)
	}
}

func admBinary(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(DefaultAdm); err != nil {
		t.Skipf("%s not installed: %v", DefaultAdm, err)
	}
	return DefaultAdm
}

func writeConf(t *testing.T, rs ...Resource) string {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "drbd.conf")
	f, err := os.Create(conf)
	if err != nil {
		t.Fatal(err)
	}
	if err := Render(f, rs...); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return conf
}

func runTool(t *testing.T, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := ExecRunner()(ctx, argv)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return string(out)
}
