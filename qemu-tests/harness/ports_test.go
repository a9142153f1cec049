package harness

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLayout(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		n       int
		want    []Port
		cmdline []string
	}{
		{"default", Options{N: 2}, 1, []Port{
			{LinkPriv0, "52:54:00:d7:01:01", ""},
			{LinkIbiz0, "52:54:00:d7:01:02", BridgeIbiz},
		}, nil},
		{"everything", Options{N: 2, Ibiz0Bond: true, SyncLink: true, BusinessLinks: 3}, 1, []Port{
			{LinkPriv0, "52:54:00:d7:01:01", ""},
			{LinkSync0, "52:54:00:d7:01:05", ""},
			{LinkIbiz0A, "52:54:00:d7:01:02", BridgeIbiz},
			{LinkIbiz0B, "52:54:00:d7:01:03", BridgeIbiz},
			{"biz1", "52:54:00:d7:01:11", "biz1"},
			{"biz2", "52:54:00:d7:01:12", "biz2"},
			{"biz3", "52:54:00:d7:01:13", "biz3"},
		}, []string{"dyad.port.ibiz0=52:54:00:d7:01:02,52:54:00:d7:01:03", "dyad.port.sync0=52:54:00:d7:01:05"}},
		{"crossed pm2", Options{N: 2, BusinessLinks: 3, CrossBusiness: true}, 2, []Port{
			{LinkPriv0, "52:54:00:d7:02:01", ""},
			{LinkIbiz0, "52:54:00:d7:02:02", BridgeIbiz},
			{"biz1", "52:54:00:d7:02:11", "biz2"},
			{"biz2", "52:54:00:d7:02:12", "biz1"},
			{"biz3", "52:54:00:d7:02:13", "biz3"},
		}, nil},
		{"crossed pm1 stays straight", Options{N: 2, BusinessLinks: 2, CrossBusiness: true}, 1, []Port{
			{LinkPriv0, "52:54:00:d7:01:01", ""},
			{LinkIbiz0, "52:54:00:d7:01:02", BridgeIbiz},
			{"biz1", "52:54:00:d7:01:11", "biz1"},
			{"biz2", "52:54:00:d7:01:12", "biz2"},
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.opts.checkLayout(); err != nil {
				t.Fatal(err)
			}
			nics := tt.opts.layout(tt.n)
			pm := &PM{nics: nics}
			if got := pm.Ports(); !slices.Equal(got, tt.want) {
				t.Errorf("ports %+v, want %+v", got, tt.want)
			}
			if got := tt.opts.portCmdline(tt.n); !slices.Equal(got, tt.cmdline) {
				t.Errorf("cmdline %q, want %q", got, tt.cmdline)
			}
		})
	}
}

func TestLayoutDefaultQEMUArgs(t *testing.T) {
	// Existing tests rely on today's PCI slots of the default layout.
	opts := Options{N: 2}
	args := strings.Join(qemuArgs("qemu", accelTCG, qemuConfig{n: 2, nics: opts.layout(2), disk: "d", tc: "tc"}), " ")
	for _, want := range []string{
		"-netdev socket,id=priv0,udp=127.0.0.1:20001,localaddr=127.0.0.1:20002",
		"-device virtio-net-pci,netdev=priv0,mac=52:54:00:d7:02:01,addr=0x3",
		"-netdev tap,id=ibiz0,ifname=tap2,script=no,downscript=no",
		"-device virtio-net-pci,netdev=ibiz0,mac=52:54:00:d7:02:02,addr=0x4",
		"virtio-blk-pci,drive=disk0,serial=LAB-PM2-DISK0,addr=0x5",
		"virtio-rng-pci,rng=rng0,addr=0x6",
		"virtio-serial-pci,id=vser0,addr=0x7",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("QEMU args %q lack %q", args, want)
		}
	}
	if strings.Contains(args, "data0") {
		t.Errorf("QEMU args without data disks name one: %q", args)
	}
}

// Data disks come after every other device, so that they move nothing
// and the guest names the system disk vda and them vdb, vdc, ...
func TestDataDiskQEMUArgs(t *testing.T) {
	opts := Options{N: 2, BusinessLinks: 1}
	args := strings.Join(qemuArgs("qemu", accelTCG, qemuConfig{n: 1, nics: opts.layout(1), disk: "d", dataDisks: []string{"/w/pm1-data0.raw", "/w/pm1-data1.raw"}, tc: "tc"}), " ")
	for _, want := range []string{
		"-drive file=d,format=raw,if=none,id=disk0,discard=unmap -device virtio-blk-pci,drive=disk0,serial=LAB-PM1-DISK0,addr=0x6",
		"virtio-serial-pci,id=vser0,addr=0x8",
		"-drive file=/w/pm1-data0.raw,format=raw,if=none,id=data0,discard=unmap -device virtio-blk-pci,drive=data0,serial=LAB-PM1-DATA0,addr=0x9",
		"-drive file=/w/pm1-data1.raw,format=raw,if=none,id=data1,discard=unmap -device virtio-blk-pci,drive=data1,serial=LAB-PM1-DATA1,addr=0xa",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("QEMU args %q lack %q", args, want)
		}
	}
	if i, j := strings.Index(args, "drive=data0"), strings.Index(args, "drive=data1"); i < 0 || j < i {
		t.Errorf("data disks out of order in %q", args)
	}
}

func TestLayoutRefused(t *testing.T) {
	for _, opts := range []Options{
		{N: 2, BusinessLinks: -1},
		{N: 2, BusinessLinks: 10},
		{N: 2, BusinessLinks: 1, CrossBusiness: true},
		{N: 1, BusinessLinks: 2, CrossBusiness: true},
	} {
		if err := opts.checkLayout(); err == nil {
			t.Errorf("%+v accepted", opts)
		}
	}
}

// guestNIC is one line of tinyinit's "nics" tool.
type guestNIC struct{ pci, name, mac, carrier string }

func guestNICs(ctx context.Context, pm *PM) ([]guestNIC, error) {
	res, err := pm.Exec(ctx, "/init", "nics")
	if err != nil {
		return nil, err
	}
	var nics []guestNIC
	for _, l := range strings.Split(strings.TrimSpace(string(res.Stdout)), "\n") {
		f := strings.Fields(l)
		if len(f) != 4 {
			return nil, fmt.Errorf("pm%d: nics: malformed line %q", pm.N(), l)
		}
		nics = append(nics, guestNIC{f[0], f[1], f[2], f[3]})
	}
	return nics, nil
}

// carrierIs waits until the guest sees the carrier of the NIC with mac.
func carrierIs(pm *PM, mac, want string) func(context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		nics, err := guestNICs(ctx, pm)
		if err != nil {
			return false, err
		}
		for _, n := range nics {
			if n.mac == mac {
				return n.carrier == want, nil
			}
		}
		return false, fmt.Errorf("pm%d has no NIC %s", pm.N(), mac)
	}
}

// etherTest is the IEEE "local experimental" EtherType the test frames use.
const etherTest = "88b5"

// sentFrom matches a test frame from src carrying payload.
func sentFrom(src, payload string) func([]byte) bool {
	return func(f []byte) bool {
		return len(f) > 14 && fmt.Sprintf("%x", f[12:14]) == etherTest &&
			strings.EqualFold(fmt.Sprintf("%x", f[6:12]), strings.ReplaceAll(src, ":", "")) &&
			bytes.HasPrefix(f[14:], []byte(payload))
	}
}

func TestUnitNICLayouts(t *testing.T) {
	out := tinyOut(t)
	begin := time.Now()
	u := StartT(t, Options{Out: out, MemoryMiB: 256, DiskGiB: 1, Ibiz0Bond: true, SyncLink: true, BusinessLinks: 2, CrossBusiness: true})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	// Started before the guests boot: they announce themselves on every
	// NIC (IPv6 DAD and router solicitations) as soon as it is up.
	captures := map[string]*Capture{}
	for _, b := range []string{BridgeIbiz, "biz1", "biz2", BridgeLoopback} {
		c, err := u.Capture(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		captures[b] = c
	}
	for _, pm := range u.PMs() {
		if err := WaitFor(ctx, time.Minute, fmt.Sprintf("pm%d tinyinit ready", pm.N()), serialShows(pm, fmt.Sprintf("TINYINIT-READY pm%d ", pm.N()), 1)); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("both PMs ready after %s", time.Since(begin).Round(time.Millisecond))

	for _, pm := range u.PMs() {
		m := func(last string) string { return fmt.Sprintf("52:54:00:d7:%02d:%s", pm.N(), last) }
		want := []string{m("01"), m("05"), m("02"), m("03"), m("11"), m("12")}
		var ports []string
		for _, p := range pm.Ports() {
			ports = append(ports, p.MAC)
		}
		if !slices.Equal(ports, want) {
			t.Errorf("pm%d Ports MACs %q, want %q", pm.N(), ports, want)
		}
		nics, err := guestNICs(ctx, pm)
		if err != nil {
			t.Fatal(err)
		}
		var macs []string
		for _, n := range nics {
			macs = append(macs, n.mac)
		}
		if !slices.Equal(macs, want) {
			t.Errorf("pm%d guest NICs in PCI order %+v, want MACs %q", pm.N(), nics, want)
		}
		cmdline, err := pm.ReadFile(ctx, "/proc/cmdline")
		for _, want := range []string{"dyad.port.ibiz0=" + m("02") + "," + m("03"), "dyad.port.sync0=" + m("05")} {
			if err != nil || !slices.Contains(strings.Fields(string(cmdline)), want) {
				t.Errorf("pm%d /proc/cmdline = %q, %v; want it to contain %q", pm.N(), cmdline, err, want)
			}
		}
	}

	// Each NIC reaches the segment it is wired to; PM2's business NICs are
	// crossed, and sync0 travels as UDP on the namespace's loopback.
	pm1, pm2 := u.PM(1), u.PM(2)
	for _, tt := range []struct {
		pm      *PM
		mac     string
		segment string
	}{
		{pm1, "52:54:00:d7:01:03", BridgeIbiz},
		{pm2, "52:54:00:d7:02:02", BridgeIbiz},
		{pm1, "52:54:00:d7:01:11", "biz1"},
		{pm2, "52:54:00:d7:02:11", "biz2"},
		{pm2, "52:54:00:d7:02:12", "biz1"},
		{pm1, "52:54:00:d7:01:05", BridgeLoopback},
	} {
		payload := fmt.Sprintf("dyad-test %s to %s", tt.mac, tt.segment)
		if _, err := tt.pm.Exec(ctx, "/init", "send", tt.mac, etherTest, payload); err != nil {
			t.Error(err)
			continue
		}
		match := sentFrom(tt.mac, payload)
		if tt.segment == BridgeLoopback {
			// The frame is the payload of a UDP datagram there.
			match = func(f []byte) bool { return bytes.Contains(f, []byte(payload)) }
		}
		if err := captures[tt.segment].WaitFor(ctx, 10*time.Second, payload, match); err != nil {
			t.Error(err)
		}
	}
	if n := len(captures["biz1"].Frames()); n == 0 {
		t.Error("Frames of biz1 is empty after frames were seen")
	}

	// Cables of the new NICs: the guest sees the carrier go and come back.
	for _, tt := range []struct {
		link, mac string
	}{{LinkIbiz0B, "52:54:00:d7:01:03"}, {LinkBiz(2), "52:54:00:d7:01:12"}, {LinkSync0, "52:54:00:d7:01:05"}} {
		for _, up := range []bool{false, true} {
			if err := pm1.SetLink(ctx, tt.link, up); err != nil {
				t.Fatal(err)
			}
			want := map[bool]string{false: "0", true: "1"}[up]
			if err := WaitFor(ctx, 20*time.Second, fmt.Sprintf("pm1 %s carrier %s", tt.link, want), carrierIs(pm1, tt.mac, want)); err != nil {
				t.Error(err)
			}
		}
	}
	if err := pm1.SetLink(ctx, LinkIbiz0, false); err == nil {
		t.Error("SetLink accepted ibiz0 on a PM whose ibiz0 is two NICs")
	}

	c := captures[BridgeIbiz]
	if err := c.Close(); err != nil {
		t.Error(err)
	}
	if err := c.WaitFor(ctx, time.Second, "anything after Close", func([]byte) bool { return false }); err == nil {
		t.Error("WaitFor on a closed capture succeeded")
	}
	if len(c.Frames()) == 0 {
		t.Error("frames gone after Close")
	}
	t.Logf("total %s", time.Since(begin).Round(time.Millisecond))
}
