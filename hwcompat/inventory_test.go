package hwcompat

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
)

func TestCollectFixtures(t *testing.T) {
	tests := []struct {
		root string
		want Inventory
	}{
		{
			// A copy of the Firecracker VM these tests were written on:
			// no firmware tables at all.
			root: "firecracker-host",
			want: Inventory{
				CPU: CPU{
					Vendor: "AuthenticAMD", ModelName: "AMD EPYC", Family: 25, Model: 17, Stepping: 1,
					Sockets: 1, Cores: 2, Threads: 2,
				},
				Memory: Memory{TotalBytes: 24684084 * 1024},
				Disks:  []Disk{{Name: "vda", SizeBytes: 536870912 * 512, Model: "0x1af4", Serial: "overlayblk", Rotational: true}},
				NICs: []NIC{{
					Name: "eth0", MAC: "02:fc:00:00:00:01", Driver: "virtio_net", SpeedMbps: 0, Carrier: true,
					BusAddress: "0000:00:03.0",
				}},
				FirmwareSource: FirmwareNone,
			},
		},
		{
			// The lab PM: cpuinfo, meminfo and SMBIOS captured from a QEMU 7.2
			// guest started with the lab's -smbios options; sysfs laid out as
			// that guest shows its two virtio NICs (eth1 is down) and disk.
			root: "qemu-pm1",
			want: Inventory{
				CPU: CPU{
					Vendor: "AuthenticAMD", ModelName: "QEMU Virtual CPU version 2.5+", Family: 15, Model: 107, Stepping: 1,
					Flags: []string{
						"3dnowprefetch", "apic", "clflush", "cmov", "cmp_legacy", "cpuid", "cx16", "cx8", "de", "extd_apicid",
						"fpu", "fxsr", "ht", "hypervisor", "lahf_lm", "lm", "mca", "mce", "mmx", "msr", "mtrr", "nopl", "nx",
						"pae", "pat", "pge", "pni", "pse", "pse36", "rep_good", "sep", "sse", "sse2", "svm", "syscall", "tsc",
						"vmmcall",
					},
					Sockets: 1, Cores: 2, Threads: 2,
				},
				Memory: Memory{TotalBytes: 468168 * 1024},
				Disks:  []Disk{{Name: "vda", SizeBytes: 1 << 30, Model: "0x1af4", Rotational: true}},
				NICs: []NIC{
					{Name: "eth0", MAC: "52:54:00:d7:01:01", Driver: "virtio_net", Carrier: true, BusAddress: "0000:00:03.0"},
					{Name: "eth1", MAC: "52:54:00:d7:01:02", Driver: "virtio_net", BusAddress: "0000:00:04.0"},
				},
				System:         System{Manufacturer: "Dyad Lab", Product: "QEMU PM", Version: "pc-i440fx-7.2", Serial: "LAB-PM1"},
				BIOS:           BIOS{Vendor: "SeaBIOS", Version: "1.16.2-debian-1.16.2-1", ReleaseDate: "04/01/2014"},
				FirmwareSource: FirmwareSMBIOS,
				SMBIOSVersion:  "2.8",
			},
		},
		{
			// A two-socket server with hyper-threading, SATA, NVMe, USB and
			// optical drives, Dyad's own virtual devices, and firmware
			// identity only through /sys/class/dmi/id. CPU 7 lacks avx512f.
			root: "server",
			want: Inventory{
				CPU: CPU{
					Vendor: "GenuineIntel", ModelName: "Intel(R) Xeon(R) Gold 6130 CPU @ 2.10GHz", Family: 6, Model: 85, Stepping: 4,
					Flags: []string{
						"abm", "acpi", "aes", "apic", "avx", "avx2", "avx512dq", "clflush", "cmov", "constant_tsc", "cx16", "cx8",
						"de", "dts", "est", "f16c", "fma", "fpu", "fxsr", "ht", "lahf_lm", "lm", "mca", "mce", "mmx", "movbe",
						"msr", "mtrr", "nx", "pae", "pat", "pbe", "pcid", "pdpe1gb", "pge", "popcnt", "pse", "pse36", "rdrand",
						"rdtscp", "sep", "smx", "ss", "sse", "sse2", "sse4_1", "sse4_2", "ssse3", "syscall", "tm", "tm2", "tsc",
						"vme", "vmx", "x2apic", "xsave",
					},
					Sockets: 2, Cores: 4, Threads: 8,
				},
				Memory: Memory{TotalBytes: 263921812 * 1024},
				Disks: []Disk{
					{Name: "nvme0n1", SizeBytes: 1875385008 * 512, Model: "SAMSUNG MZQL2960HCJR-00A07", Serial: "S64FNE0R123456"},
					{Name: "sda", SizeBytes: 7814037168 * 512, Model: "ST4000NM0035-1V4", Serial: "ZC1A2B3C", Rotational: true},
					{Name: "sdb", SizeBytes: 60062500 * 512, Model: "Cruzer Blade", Rotational: true, Removable: true},
				},
				NICs: []NIC{
					{Name: "eno1", MAC: "3c:ec:ef:01:02:03", Driver: "e1000e", SpeedMbps: 1000, Carrier: true, BusAddress: "0000:00:1f.6"},
					{Name: "enp59s0f0", MAC: "a0:36:9f:0a:0b:0c", Driver: "ixgbe", BusAddress: "0000:3b:00.0"},
				},
				System: System{
					Manufacturer: "Dell Inc.", Product: "PowerEdge R640", Serial: "ABC1234",
					UUID: "4c4c4544-0042-3510-8053-b7c04f313233", SKU: "SKU=0716", Family: "PowerEdge",
				},
				BIOS:           BIOS{Vendor: "Dell Inc.", Version: "2.17.1", ReleaseDate: "04/13/2023"},
				Baseboard:      &Baseboard{Manufacturer: "Dell Inc.", Product: "0H28RR", Version: "A05", Serial: ".ABC1234.CNFCP0012300AB."},
				FirmwareSource: FirmwareSysfs,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.root, func(t *testing.T) {
			got, err := Collect(t.Context(), filepath.Join("testdata", tt.root))
			if err != nil {
				t.Fatal(err)
			}
			if tt.want.CPU.Flags == nil {
				// The host copy has 105 flags; spot-check instead of listing.
				for _, f := range []string{"avx2", "avx512f", "hypervisor", "sse4_2"} {
					if !slices.Contains(got.CPU.Flags, f) {
						t.Errorf("flags %v lack %q", got.CPU.Flags, f)
					}
				}
				if !slices.IsSorted(got.CPU.Flags) || len(got.CPU.Flags) != 105 {
					t.Errorf("flags: %d, sorted %v; want 105 sorted", len(got.CPU.Flags), slices.IsSorted(got.CPU.Flags))
				}
				got.CPU.Flags = nil
			}
			if !reflect.DeepEqual(got, tt.want) {
				g, _ := json.MarshalIndent(got, "", "  ")
				w, _ := json.MarshalIndent(tt.want, "", "  ")
				t.Fatalf("Collect() =\n%s\nwant\n%s", g, w)
			}
		})
	}
}

// tree writes files (content) and symlinks (target after "->") under a
// fresh directory.
func tree(t *testing.T, entries map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range entries {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(content, "->"); ok {
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func fixture(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCollectDegraded(t *testing.T) {
	minimal := func(extra map[string]string) map[string]string {
		m := map[string]string{
			"proc/cpuinfo":   "processor : 0\nvendor_id : GenuineIntel\n",
			"proc/meminfo":   "MemTotal: 1024 kB\n",
			"sys/block/":     "",
			"sys/class/net/": "",
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	entryPoint := fixture(t, "qemu-pm1/sys/firmware/dmi/tables/smbios_entry_point")
	table := fixture(t, "qemu-pm1/sys/firmware/dmi/tables/DMI")

	t.Run("corrupt SMBIOS falls back to dmi/id with a warning", func(t *testing.T) {
		root := tree(t, minimal(map[string]string{
			"sys/firmware/dmi/tables/smbios_entry_point": entryPoint,
			"sys/firmware/dmi/tables/DMI":                table[:len(table)/2],
			"sys/class/dmi/id/sys_vendor":                "Dyad Lab\n",
			"sys/class/dmi/id/product_name":              "QEMU PM\n",
		}))
		inv, err := Collect(t.Context(), root)
		if err != nil {
			t.Fatal(err)
		}
		want := System{Manufacturer: "Dyad Lab", Product: "QEMU PM"}
		if inv.FirmwareSource != FirmwareSysfs || inv.System != want || inv.Baseboard != nil || inv.SMBIOSVersion != "" {
			t.Errorf("firmware = %s %+v %+v %q; want sysfs %+v, no baseboard, no SMBIOS version",
				inv.FirmwareSource, inv.System, inv.Baseboard, inv.SMBIOSVersion, want)
		}
		if len(inv.Warnings) != 1 || !strings.Contains(inv.Warnings[0], "SMBIOS table unusable") {
			t.Errorf("Warnings = %q, want one about the SMBIOS table", inv.Warnings)
		}
	})
	t.Run("entry point without table", func(t *testing.T) {
		root := tree(t, minimal(map[string]string{"sys/firmware/dmi/tables/smbios_entry_point": entryPoint}))
		inv, err := Collect(t.Context(), root)
		if err != nil {
			t.Fatal(err)
		}
		if inv.FirmwareSource != FirmwareNone || len(inv.Warnings) != 0 {
			t.Errorf("firmware source %q warnings %q; want none and no warnings", inv.FirmwareSource, inv.Warnings)
		}
		// Serialised for the API: empty lists, not null.
		b, err := json.Marshal(inv)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{`"disks":[]`, `"nics":[]`, `"firmware_source":"none"`, `"total_bytes":1048576`} {
			if !strings.Contains(string(b), want) {
				t.Errorf("JSON %s lacks %s", b, want)
			}
		}
	})

	errTests := []struct {
		name    string
		entries map[string]string
		wantErr error
	}{
		{"no cpuinfo", map[string]string{"proc/meminfo": "MemTotal: 1 kB\n", "sys/block/": "", "sys/class/net/": ""}, fs.ErrNotExist},
		{"no meminfo", map[string]string{"proc/cpuinfo": "processor : 0\n", "sys/block/": "", "sys/class/net/": ""}, fs.ErrNotExist},
		{"no /sys/block", map[string]string{"proc/cpuinfo": "processor : 0\n", "proc/meminfo": "MemTotal: 1 kB\n", "sys/class/net/": ""}, fs.ErrNotExist},
		{"no /sys/class/net", map[string]string{"proc/cpuinfo": "processor : 0\n", "proc/meminfo": "MemTotal: 1 kB\n", "sys/block/": ""}, fs.ErrNotExist},
		{"bad disk size", minimal(map[string]string{
			"sys/block/sda/size":   "lots\n",
			"sys/block/sda/device": "->../../devices/sda",
		}), nil},
		{"missing disk size", minimal(map[string]string{"sys/block/sda/device": "->../../devices/sda"}), fs.ErrNotExist},
		{"garbage cpuinfo", minimal(map[string]string{"proc/cpuinfo": "processor : 0\ncpu family : six\n"}), nil},
		{"garbage meminfo", minimal(map[string]string{"proc/meminfo": "MemTotal: 12 MB\n"}), nil},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Collect(t.Context(), tree(t, tt.entries))
			if err == nil {
				t.Fatal("Collect() succeeded, want an error")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Collect() error %v, want %v", err, tt.wantErr)
			}
		})
	}

	t.Run("canceled context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := Collect(ctx, filepath.Join("testdata", "server")); !errors.Is(err, context.Canceled) {
			t.Fatalf("Collect() error %v, want context.Canceled", err)
		}
	})
}

func TestParseCPUInfo(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    CPU
		wantErr bool
	}{
		{
			name: "cpu cores without core id",
			in:   "processor : 0\nphysical id : 0\ncpu cores : 2\nflags : b a\n\nprocessor : 1\nphysical id : 0\ncpu cores : 2\nflags : a b c\n\nprocessor : 2\nphysical id : 1\ncpu cores : 2\nflags : a b\n\nprocessor : 3\nphysical id : 1\ncpu cores : 2\nflags : b a\n",
			want: CPU{Flags: []string{"a", "b"}, Sockets: 2, Cores: 4, Threads: 4},
		},
		{
			name: "no topology at all",
			in:   "processor : 0\nvendor_id : X\nstepping : unknown\n\nprocessor : 1\n\nprocessor : 2\n",
			want: CPU{Vendor: "X", Flags: []string{}, Sockets: 1, Cores: 3, Threads: 3},
		},
		{
			name: "cpu cores larger than the threads present",
			in:   "processor : 0\ncpu cores : 64\n",
			want: CPU{Flags: []string{}, Sockets: 1, Cores: 1, Threads: 1},
		},
		{
			name: "lines before the first processor are ignored",
			in:   "junk : 1\nno colon here\nprocessor : 0\nmodel name : A: B\n",
			want: CPU{ModelName: "A: B", Flags: []string{}, Sockets: 1, Cores: 1, Threads: 1},
		},
		{
			name: "a socket without cpu cores",
			in:   "processor : 0\nphysical id : 0\ncpu cores : 1\n\nprocessor : 1\nphysical id : 1\n\nprocessor : 2\nphysical id : 1\n",
			want: CPU{Flags: []string{}, Sockets: 2, Cores: 3, Threads: 3},
		},
		{name: "empty", in: "", wantErr: true},
		{name: "negative model", in: "processor : 0\nmodel : -1\n", wantErr: true},
		{name: "bad cpu cores", in: "processor : 0\ncpu cores : many\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCPUInfo([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseCPUInfo() error %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("parseCPUInfo() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseMemTotal(t *testing.T) {
	tests := []struct {
		in      string
		want    uint64
		wantErr bool
	}{
		{"MemFree: 1 kB\nMemTotal:    2048 kB\n", 2048 * 1024, false},
		{"MemTotal: 0 kB\n", 0, true},
		{"MemTotal: 18014398509481984 kB\n", 0, true},
		{"MemTotal: 12\n", 0, true},
		{"MemTotal: x kB\n", 0, true},
		{"MemFree: 1 kB\n", 0, true},
	}
	for _, tt := range tests {
		got, err := parseMemTotal([]byte(tt.in))
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parseMemTotal(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseVPDSerial(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    string
		wantErr bool
	}{
		{"space padded", []byte("\x00\x80\x00\x0a    ABC123"), "ABC123", false},
		{"NUL padded, trailing bytes ignored", []byte("\x00\x80\x00\x08XYZ\x00\x00\x00\x00\x00junk"), "XYZ", false},
		{"empty serial", []byte{0, 0x80, 0, 0}, "", false},
		{"short header", []byte{0, 0x80, 0}, "", true},
		{"wrong page", []byte("\x00\x83\x00\x02AB"), "", true},
		{"length past data", []byte("\x00\x80\x00\x09ABC"), "", true},
		{"control characters", []byte("\x00\x80\x00\x03A\x01B"), "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseVPDSerial(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("parseVPDSerial(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestCollectHost runs against the machine the tests run on.
func TestCollectHost(t *testing.T) {
	inv, err := Collect(t.Context(), "/")
	if err != nil {
		t.Fatal(err)
	}
	// NumCPU counts the CPUs this process may run on; it equals the online
	// CPUs unless the test is started under a restricted affinity mask.
	if inv.CPU.Threads != runtime.NumCPU() {
		t.Errorf("CPU threads = %d, runtime.NumCPU() = %d", inv.CPU.Threads, runtime.NumCPU())
	}
	if inv.CPU.Sockets < 1 || inv.CPU.Cores < inv.CPU.Sockets || inv.CPU.Cores > inv.CPU.Threads {
		t.Errorf("implausible topology: %d sockets, %d cores, %d threads", inv.CPU.Sockets, inv.CPU.Cores, inv.CPU.Threads)
	}
	if inv.Memory.TotalBytes == 0 {
		t.Error("memory total is 0")
	}
	if runtime.GOARCH == "amd64" && (inv.CPU.Vendor == "" || len(inv.CPU.Flags) == 0) {
		t.Errorf("x86 CPU without vendor or flags: %+v", inv.CPU)
	}
	for _, n := range inv.NICs {
		if n.Name == "lo" || n.BusAddress == "" {
			t.Errorf("NIC %+v: loopback or no bus address", n)
		}
	}
	for _, d := range inv.Disks {
		if strings.HasPrefix(d.Name, "loop") || strings.HasPrefix(d.Name, "zram") {
			t.Errorf("virtual disk listed: %+v", d)
		}
	}
	if _, err := json.Marshal(inv); err != nil {
		t.Fatal(err)
	}
	t.Logf("host inventory: %+v", inv)
}

func FuzzParseCPUInfo(f *testing.F) {
	for _, root := range []string{"firecracker-host", "qemu-pm1", "server"} {
		b, err := os.ReadFile(filepath.Join("testdata", root, "proc", "cpuinfo"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseCPUInfo(b)
		if err != nil {
			return
		}
		if c.Threads < 1 || c.Sockets < 1 || c.Cores < c.Sockets || c.Cores > c.Threads || !slices.IsSorted(c.Flags) {
			t.Fatalf("inconsistent CPU %+v", c)
		}
	})
}

func FuzzParseMemTotal(f *testing.F) {
	f.Add(fixture(f, "firecracker-host/proc/meminfo"))
	f.Add("MemTotal: 18014398509481983 kB\n")
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseMemTotal([]byte(s))
		if err == nil && (n == 0 || n%1024 != 0) {
			t.Fatalf("parseMemTotal(%q) = %d", s, n)
		}
	})
}

func FuzzParseVPDSerial(f *testing.F) {
	f.Add([]byte(fixture(f, "server/sys/block/sda/device/vpd_pg80")))
	f.Add([]byte{0, 0x80, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parseVPDSerial(b)
		if err != nil {
			return
		}
		if len(s) > len(b)-4 || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
			t.Fatalf("parseVPDSerial(%q) = %q", b, s)
		}
	})
}
