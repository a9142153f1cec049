package harness

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"
)

// guestModules are the Debian kernel modules tinyinit needs, dependencies
// first, relative to /lib/modules/<version>.
var guestModules = []string{
	"kernel/drivers/virtio/virtio_ring.ko",
	"kernel/drivers/virtio/virtio.ko",
	"kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
	"kernel/drivers/virtio/virtio_pci_modern_dev.ko",
	"kernel/drivers/virtio/virtio_pci.ko",
	"kernel/drivers/char/virtio_console.ko",
	"kernel/net/core/failover.ko",
	"kernel/drivers/net/net_failover.ko",
	"kernel/drivers/net/virtio_net.ko",
	"kernel/drivers/input/evdev.ko",
	"kernel/drivers/acpi/button.ko",
}

// tinyOut builds an out/ dir holding a Debian kernel of this host and an
// initramfs with testdata/tinyinit as /init, so that the harness can be
// tested without a Dyad image.
func tinyOut(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"qemu-system-x86_64", "ip", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed on this host", tool)
		}
	}
	var kernel, modDir string
	kernels, _ := filepath.Glob("/boot/vmlinuz-*")
	for _, k := range kernels {
		d := filepath.Join("/lib/modules", strings.TrimPrefix(filepath.Base(k), "vmlinuz-"))
		if _, err := os.Stat(filepath.Join(d, guestModules[0])); err == nil {
			kernel, modDir = k, d
		}
	}
	if kernel == "" {
		t.Skip("no /boot/vmlinuz-* with uncompressed virtio modules in /lib/modules (Debian linux-image-amd64) on this host")
	}

	dir := t.TempDir()
	initBin := filepath.Join(dir, "init")
	build := exec.Command("go", "build", "-o", initBin, "./testdata/tinyinit")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build tinyinit: %v\n%s", err, out)
	}
	initData, err := os.ReadFile(initBin)
	if err != nil {
		t.Fatal(err)
	}
	records := []cpio.Record{
		cpio.Directory("m", 0o755),
		cpio.StaticFile("init", string(initData), 0o755),
	}
	var order []string
	for _, m := range guestModules {
		b, err := os.ReadFile(filepath.Join(modDir, m))
		if err != nil {
			t.Fatal(err)
		}
		name := "m/" + filepath.Base(m)
		records = append(records, cpio.StaticFile(name, string(b), 0o644))
		order = append(order, "/"+name)
	}
	records = append(records, cpio.StaticFile("modules.order", strings.Join(order, "\n"), 0o644))

	out := filepath.Join(dir, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(out, InitramfsFile))
	if err != nil {
		t.Fatal(err)
	}
	zw := gzip.NewWriter(f)
	w := cpio.Newc.Writer(zw)
	if err := cpio.WriteRecords(w, records); err != nil {
		t.Fatal(err)
	}
	if err := cpio.WriteTrailer(w); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(kernel, filepath.Join(out, KernelFile)); err != nil {
		t.Fatal(err)
	}
	return out
}

// httpBody GETs url with client and returns the body.
func httpBody(ctx context.Context, client *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func serialShows(pm *PM, marker string, count int) func(context.Context) (bool, error) {
	return func(context.Context) (bool, error) {
		return bytes.Count(pm.SerialLog(), []byte(marker)) >= count, nil
	}
}

func TestUnitOfTinyGuests(t *testing.T) {
	out := tinyOut(t)
	begin := time.Now()
	u := StartT(t, Options{Out: out, MemoryMiB: 256, DiskGiB: 1})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	t.Logf("accel %s, namespace %s", u.Accel(), u.Namespace())

	for _, pm := range u.PMs() {
		if err := WaitFor(ctx, time.Minute, fmt.Sprintf("pm%d tinyinit ready", pm.N()), serialShows(pm, fmt.Sprintf("TINYINIT-READY pm%d ", pm.N()), 1)); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("both PMs ready after %s", time.Since(begin).Round(time.Millisecond))

	keyRE := regexp.MustCompile(`dyad\.unitkey=([0-9a-f]{64}) `)
	k1 := keyRE.FindSubmatch(u.PM(1).SerialLog())
	k2 := keyRE.FindSubmatch(u.PM(2).SerialLog())
	if k1 == nil || k2 == nil || !bytes.Equal(k1[1], k2[1]) {
		t.Errorf("unit key on the command lines: pm1 %q, pm2 %q; want the same 64 hex digits", k1, k2)
	}

	for _, pm := range u.PMs() {
		var status struct {
			Status string `json:"status"`
		}
		if err := pm.QMP().Execute(ctx, "query-status", nil, &status); err != nil || status.Status != "running" {
			t.Errorf("pm%d query-status: %q, %v; want running", pm.N(), status.Status, err)
		}
		cmdline, err := pm.ReadFile(ctx, "/proc/cmdline")
		for _, want := range []string{"console=ttyS0", fmt.Sprintf("dyad.node=%d ", pm.N()), "dyad.unit=lab", "dyad.mgmt=10.99.0.10/24",
			fmt.Sprintf("dyad.ibiz0=10.99.0.%d/24", pm.N()), "dyad.testchannel=1"} {
			if err != nil || !bytes.Contains(cmdline, []byte(want)) {
				t.Errorf("pm%d /proc/cmdline = %q, %v; want it to contain %q", pm.N(), cmdline, err, want)
			}
		}
		serial, err := pm.ReadFile(ctx, "/sys/class/dmi/id/product_serial")
		if want := fmt.Sprintf("LAB-PM%d\n", pm.N()); err != nil || string(serial) != want {
			t.Errorf("pm%d SMBIOS serial %q, %v; want %q", pm.N(), serial, err, want)
		}
	}

	pm1, pm2 := u.PM(1), u.PM(2)
	if err := pm1.Ping(ctx); err != nil {
		t.Error(err)
	}
	res, err := pm1.Exec(ctx, "/init", "echo", "hello", "dyad")
	if err != nil || string(res.Stdout) != "hello dyad\n" {
		t.Errorf("exec echo: %+v, %v", res, err)
	}
	res, err = pm1.Exec(ctx, "/init", "bogus")
	if err == nil || res.Exit != 2 || !strings.Contains(err.Error(), "usage") {
		t.Errorf("exec with exit status 2: %+v, %v; want an error quoting stderr", res, err)
	}
	if _, err := pm1.ReadFile(ctx, "/no/such/file"); err == nil {
		t.Error("reading a missing file succeeded")
	}

	// ibiz0 from the test process, through the namespace and the bridge.
	client := u.HTTPClient()
	for _, pm := range u.PMs() {
		url := "http://" + pm.Addr() + "/"
		if err := WaitFor(ctx, 30*time.Second, "GET "+url, func(ctx context.Context) (bool, error) {
			body, err := httpBody(ctx, client, url)
			return body == fmt.Sprintf("tinyinit pm%d\n", pm.N()), err
		}); err != nil {
			t.Error(err)
		}
	}

	if err := WaitFor(ctx, 30*time.Second, "the management IP answers", func(ctx context.Context) (bool, error) {
		body, err := httpBody(ctx, client, "http://"+MgmtIP+"/api/v1/health")
		return strings.Contains(body, `"pm":1`), err
	}); err != nil {
		t.Error(err)
	}

	// priv0: PM1 reaches PM2 over the point-to-point link, until it is cut.
	getPeer := func(ctx context.Context) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		res, err := pm1.Exec(ctx, "/init", "get", "http://192.168.77.2/")
		return string(res.Stdout), err
	}
	if err := WaitFor(ctx, 30*time.Second, "pm1 reaches pm2 over priv0", func(ctx context.Context) (bool, error) {
		body, err := getPeer(ctx)
		return body == "tinyinit pm2\n", err
	}); err != nil {
		t.Error(err)
	}
	if err := pm1.SetLink(ctx, LinkPriv0, false); err != nil {
		t.Fatal(err)
	}
	if body, err := getPeer(ctx); err == nil {
		t.Errorf("priv0 cut, yet pm1 got %q from pm2", body)
	}
	if err := pm1.SetLink(ctx, LinkPriv0, true); err != nil {
		t.Fatal(err)
	}
	if err := WaitFor(ctx, 30*time.Second, "priv0 back after the cable is plugged in", func(ctx context.Context) (bool, error) {
		body, err := getPeer(ctx)
		return body == "tinyinit pm2\n", err
	}); err != nil {
		t.Error(err)
	}
	if err := pm1.SetLink(ctx, "eth7", false); err == nil {
		t.Error("SetLink accepted an unknown link")
	}

	// Every cable of pm1 at once.
	if err := pm1.SetAllLinks(ctx, false); err != nil {
		t.Fatal(err)
	}
	if body, err := getPeer(ctx); err == nil {
		t.Errorf("all links of pm1 cut, yet it got %q from pm2", body)
	}
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	if body, err := httpBody(short, u.HTTPClient(), "http://"+pm1.Addr()+"/"); err == nil {
		t.Errorf("all links of pm1 cut, yet its ibiz0 answered %q", body)
	}
	cancelShort()
	if err := pm1.SetAllLinks(ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := WaitFor(ctx, 30*time.Second, "priv0 back after every cable is plugged in", func(ctx context.Context) (bool, error) {
		body, err := getPeer(ctx)
		return body == "tinyinit pm2\n", err
	}); err != nil {
		t.Error(err)
	}

	// Data disks: sparse files of the default size, and QEMU takes one
	// away from under the running guest.
	for i := range 2 {
		st, err := os.Stat(filepath.Join(u.WorkDir(), fmt.Sprintf("pm1-data%d.raw", i)))
		if err != nil || st.Size() != 1<<30 {
			t.Errorf("data disk %d of pm1: %v, %v; want 1 GiB", i, st, err)
		}
	}
	if err := pm1.FailDisk(ctx, DataDiskID(1)); err != nil {
		t.Error(err)
	}
	if err := pm1.FailDisk(ctx, DataDiskID(1)); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("failing a deleted disk: %v, want QEMU's not found", err)
	}
	if err := pm1.FailDisk(ctx, DataDiskID(2)); err == nil || !strings.Contains(err.Error(), "unknown disk") {
		t.Errorf("failing a disk pm1 does not have: %v", err)
	}

	// Forward: host loopback -> namespace.
	ln, err := u.Forward(ctx, "127.0.0.1:0", pm2.Addr()+":80")
	if err != nil {
		t.Fatal(err)
	}
	hostClient := &http.Client{Transport: &http.Transport{}}
	if body, err := httpBody(ctx, hostClient, "http://"+ln.Addr().String()+"/"); err != nil || body != "tinyinit pm2\n" {
		t.Errorf("GET through the forwarder: %q, %v", body, err)
	}
	if err := pm2.SetLink(ctx, LinkIbiz0, false); err != nil {
		t.Fatal(err)
	}
	short, cancelShort = context.WithTimeout(ctx, 2*time.Second)
	if body, err := httpBody(short, u.HTTPClient(), "http://"+pm2.Addr()+"/"); err == nil {
		t.Errorf("ibiz0 of pm2 cut, yet GET answered %q", body)
	}
	cancelShort()
	if err := pm2.SetLink(ctx, LinkIbiz0, true); err != nil {
		t.Fatal(err)
	}

	// Power cycle PM2 with the same disk; the test channel reconnects.
	if err := pm2.PowerOff(ctx); err != nil {
		t.Fatal(err)
	}
	if pm2.Running() || pm2.QMP() != nil {
		t.Fatal("pm2 still running after PowerOff")
	}
	if err := pm2.Ping(ctx); err == nil {
		t.Error("test channel of a powered-off PM answered")
	}
	if err := pm2.PowerOn(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pm2.PowerOn(ctx); err == nil {
		t.Error("PowerOn of a running PM succeeded")
	}
	if err := WaitFor(ctx, time.Minute, "pm2 boots a second time", serialShows(pm2, "TINYINIT-READY pm2 ", 2)); err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(pm2.SerialLog(), []byte("=== harness: pm2 power on")); n != 2 {
		t.Errorf("serial log of pm2 shows %d power-ons, want 2 (the log must span power cycles)", n)
	}
	if err := pm2.Ping(ctx); err != nil {
		t.Errorf("test channel after power on: %v", err)
	}

	// The ACPI power button: the guest powers itself off.
	if err := pm2.PowerDown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pm2.WaitOff(ctx); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(pm2.SerialLog(), []byte("TINYINIT power button")) {
		t.Error("pm2 went off, but not through its power button handler")
	}
	if err := pm2.PowerDown(ctx); err == nil {
		t.Error("PowerDown of a PM that is off succeeded")
	}

	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	if u.ns.exists() {
		t.Errorf("namespace %s still exists after Close", u.Namespace())
	}
	for _, pm := range u.PMs() {
		if pm.Running() {
			t.Errorf("pm%d still running after Close", pm.N())
		}
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("forwarder still accepting after Close: %v", err)
	}
	t.Logf("total %s", time.Since(begin).Round(time.Millisecond))
}
