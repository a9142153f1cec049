package vm

import (
	"net"
	"slices"
	"strings"
	"testing"
)

func baseMachine() Machine {
	return Machine{
		Name:         "web1",
		UUID:         "6f1c2a9e-4b7d-4e2a-9c3b-0123456789ab",
		Accel:        KVM,
		VCPUs:        2,
		MemoryBytes:  2 * GiB,
		Disks:        []Disk{{Path: "/dev/drbd1", Direct: true}, {Path: "/dev/drbd2", Direct: true}},
		NICs:         []Tap{{Ifname: "dv1n0", MAC: net.HardwareAddr{0x02, 0, 0, 0, 0, 1}, VHost: true}},
		SerialSocket: "/run/dyad/vm/web1/serial.sock",
		QMPSocket:    "/run/dyad/vm/web1/qmp.sock",
		VNCSocket:    "/run/dyad/vm/web1/vnc.sock",
	}
}

func TestArgvGolden(t *testing.T) {
	got, err := Argv(baseMachine())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"-nodefaults", "-no-user-config",
		"-name", "guest=web1,debug-threads=on",
		"-uuid", "6f1c2a9e-4b7d-4e2a-9c3b-0123456789ab",
		"-machine", "type=q35",
		"-accel", "kvm",
		"-cpu", "host",
		"-smp", "2,sockets=1,cores=2,threads=1",
		"-m", "2048M",
		"-display", "none",
		"-action", "shutdown=poweroff,reboot=reset,panic=pause",
		"-device", "pvpanic",
		"-device", "VGA",
		"-drive", "file=/dev/drbd1,if=none,id=disk0,format=raw,cache=none,aio=native,werror=stop,rerror=stop",
		"-device", "virtio-blk-pci,drive=disk0,id=disk0-dev,bootindex=0",
		"-drive", "file=/dev/drbd2,if=none,id=disk1,format=raw,cache=none,aio=native,werror=stop,rerror=stop",
		"-device", "virtio-blk-pci,drive=disk1,id=disk1-dev",
		"-netdev", "tap,id=net0,ifname=dv1n0,script=no,downscript=no,vhost=on",
		"-device", "virtio-net-pci,netdev=net0,id=net0-dev,mac=02:00:00:00:00:01,romfile=",
		"-chardev", "socket,id=serial0,path=/run/dyad/vm/web1/serial.sock,server=on,wait=off",
		"-device", "isa-serial,chardev=serial0",
		"-chardev", "socket,id=qmp,path=/run/dyad/vm/web1/qmp.sock,server=on,wait=off",
		"-mon", "chardev=qmp,mode=control",
		"-vnc", "unix:/run/dyad/vm/web1/vnc.sock",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Argv:\n got %q\nwant %q", got, want)
	}
}

// TestArgvVariants checks the arguments each option adds or changes; the
// rest is covered by the golden test.
func TestArgvVariants(t *testing.T) {
	tests := []struct {
		name string
		edit func(m *Machine)
		want []string // consecutive arguments that must appear
		not  []string // arguments that must not appear
	}{
		{"TCG defaults to qemu64", func(m *Machine) { m.Accel = TCG }, []string{"-accel", "tcg", "-cpu", "qemu64"}, nil},
		{"caller's CPU model", func(m *Machine) { m.Accel = TCG; m.CPU = "Haswell-noTSX" }, []string{"-cpu", "Haswell-noTSX"}, nil},
		{"CPU features", func(m *Machine) { m.CPUFeatures = []string{"arch-capabilities=off", "pdpe1gb=on"} },
			[]string{"-cpu", "host,arch-capabilities=off,pdpe1gb=on"}, nil},
		{"pc machine", func(m *Machine) { m.Type = "pc" }, []string{"-machine", "type=pc"}, nil},
		{"8 vCPUs", func(m *Machine) { m.VCPUs = 8 }, []string{"-smp", "8,sockets=1,cores=8,threads=1"}, nil},
		{"no O_DIRECT", func(m *Machine) { m.Disks[0].Direct = false },
			[]string{"-drive", "file=/dev/drbd1,if=none,id=disk0,format=raw,cache=writeback,aio=threads,werror=stop,rerror=stop"}, nil},
		{"second disk boots", func(m *Machine) { m.BootDisk = 1 },
			[]string{"-device", "virtio-blk-pci,drive=disk1,id=disk1-dev,bootindex=0"},
			[]string{"virtio-blk-pci,drive=disk0,id=disk0-dev,bootindex=0"}},
		{"VCD after the boot volume", func(m *Machine) { m.CDROM = "/data/vcd/debian.iso" },
			[]string{"-drive", "file=/data/vcd/debian.iso,if=none,id=cd0,media=cdrom,readonly=on,format=raw",
				"-device", "ide-cd,drive=cd0,bus=ide.1,id=cd0-dev,bootindex=1"}, nil},
		{"boot from CD", func(m *Machine) { m.CDROM = "/data/vcd/debian.iso"; m.BootFromCD = true },
			[]string{"-device", "ide-cd,drive=cd0,bus=ide.1,id=cd0-dev,bootindex=0"},
			[]string{"virtio-blk-pci,drive=disk0,id=disk0-dev,bootindex=0"}},
		{"CD only", func(m *Machine) { m.Disks = nil; m.CDROM = "/data/vcd/debian.iso" },
			[]string{"-device", "ide-cd,drive=cd0,bus=ide.1,id=cd0-dev,bootindex=0"}, nil},
		{"no NIC", func(m *Machine) { m.NICs = nil }, nil, []string{"-netdev"}},
		{"no vhost", func(m *Machine) { m.NICs[0].VHost = false },
			[]string{"-netdev", "tap,id=net0,ifname=dv1n0,script=no,downscript=no"}, nil},
		{"two NICs", func(m *Machine) { m.NICs = append(m.NICs, Tap{Ifname: "dv1n1", MAC: MAC([]byte("k"), 1)}) },
			[]string{"-netdev", "tap,id=net1,ifname=dv1n1,script=no,downscript=no",
				"-device", "virtio-net-pci,netdev=net1,id=net1-dev,mac=72:ee:0f:75:59:29,romfile="}, nil},
		{"paused", func(m *Machine) { m.Paused = true }, []string{"-S"}, nil},
		{"migration target", func(m *Machine) { m.Incoming = true }, []string{"-incoming", "defer"}, []string{"-S"}},
		{"direct kernel boot", func(m *Machine) {
			m.Kernel, m.Initrd, m.Append = "/boot/vmlinuz", "/data/guest.cpio.gz", "console=ttyS0 quiet,x"
		}, []string{"-kernel", "/boot/vmlinuz", "-initrd", "/data/guest.cpio.gz", "-append", "console=ttyS0 quiet,x"}, nil},
		{"kernel boots before the volume", func(m *Machine) { m.Kernel = "/boot/vmlinuz" },
			[]string{"-device", "virtio-blk-pci,drive=disk0,id=disk0-dev,bootindex=1"}, []string{"virtio-blk-pci,drive=disk0,id=disk0-dev,bootindex=0"}},
		{"kernel without disks", func(m *Machine) { m.Disks = nil; m.Kernel = "/boot/vmlinuz" }, []string{"-kernel", "/boot/vmlinuz"}, []string{"-initrd", "-append"}},
		{"serial to a file", func(m *Machine) { m.SerialSocket = ""; m.SerialFile = "/tmp/serial.log" },
			[]string{"-chardev", "file,id=serial0,path=/tmp/serial.log", "-device", "isa-serial,chardev=serial0"}, nil},
		{"no CD by default", func(m *Machine) {}, nil, []string{"ide-cd", "-S", "-incoming", "-no-shutdown", "-kernel"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := baseMachine()
			m.Disks = slices.Clone(m.Disks)
			m.NICs = slices.Clone(m.NICs)
			tt.edit(&m)
			got, err := Argv(m)
			if err != nil {
				t.Fatal(err)
			}
			if len(tt.want) > 0 && !containsRun(got, tt.want) {
				t.Errorf("Argv = %q, want it to contain %q", got, tt.want)
			}
			for _, n := range tt.not {
				if slices.Contains(got, n) {
					t.Errorf("Argv = %q, want no %q", got, n)
				}
			}
		})
	}
}

func containsRun(a, run []string) bool {
	for i := 0; i+len(run) <= len(a); i++ {
		if slices.Equal(a[i:i+len(run)], run) {
			return true
		}
	}
	return false
}

func TestArgvRefuses(t *testing.T) {
	tests := []struct {
		name string
		edit func(m *Machine)
		want string
	}{
		{"bad name", func(m *Machine) { m.Name = "web,1" }, `VM name: name "web,1"`},
		{"no UUID", func(m *Machine) { m.UUID = "" }, `UUID ""`},
		{"bad UUID", func(m *Machine) { m.UUID = "6f1c2a9e-4b7d-4e2a-9c3b-0123456789ag" }, "UUID"},
		{"machine type", func(m *Machine) { m.Type = "microvm" }, `machine type "microvm": use q35 or pc`},
		{"no accelerator", func(m *Machine) { m.Accel = "" }, `accelerator "": use kvm or tcg`},
		{"host CPU under TCG", func(m *Machine) { m.Accel = TCG; m.CPU = "host" }, "CPU model host needs KVM"},
		{"CPU model injection", func(m *Machine) { m.CPU = "host,+vmx" }, `CPU model "host,+vmx"`},
		{"CPU feature injection", func(m *Machine) { m.CPUFeatures = []string{"x=on,y"} }, `CPU feature "x=on,y": want name=on or name=off`},
		{"legacy CPU feature syntax", func(m *Machine) { m.CPUFeatures = []string{"-vmx"} }, `CPU feature "-vmx"`},
		{"0 vCPUs", func(m *Machine) { m.VCPUs = 0 }, "0 vCPUs: a VM has 1 to 8"},
		{"9 vCPUs", func(m *Machine) { m.VCPUs = 9 }, "9 vCPUs: a VM has 1 to 8"},
		{"too little memory", func(m *Machine) { m.MemoryBytes = 128 * MiB }, "memory 134217728 bytes: want a whole number of MiB, at least 256 MiB"},
		{"memory not MiB", func(m *Machine) { m.MemoryBytes = GiB + 512 }, "want a whole number of MiB"},
		{"nothing to boot", func(m *Machine) { m.Disks = nil }, "no disk and no CD"},
		{"boot disk out of range", func(m *Machine) { m.BootDisk = 2 }, "boot disk 2: the VM has disks 0 to 1"},
		{"boot from CD without CD", func(m *Machine) { m.BootFromCD = true }, "no VCD is inserted"},
		{"relative disk", func(m *Machine) { m.Disks[0].Path = "dev/drbd1" }, `disk 0: path "dev/drbd1" is not absolute`},
		{"unclean disk", func(m *Machine) { m.Disks[1].Path = "/dev/../dev/drbd2" }, `disk 1: path "/dev/../dev/drbd2" is not clean`},
		{"comma in disk", func(m *Machine) { m.Disks[0].Path = "/dev/drbd1,readonly=off" }, "contains a comma"},
		{"newline in CD", func(m *Machine) { m.CDROM = "/data/a\nb.iso" }, "VCD: path"},
		{"no QMP socket", func(m *Machine) { m.QMPSocket = "" }, "QMP socket: no path given"},
		{"relative VNC socket", func(m *Machine) { m.VNCSocket = "vnc.sock" }, "VNC socket: path"},
		{"long socket path", func(m *Machine) { m.SerialSocket = "/" + strings.Repeat("s", 107) }, "a unix socket path has at most 107"},
		{"long tap name", func(m *Machine) { m.NICs[0].Ifname = "dyad-vm-web1-nic0" }, `NIC 0: tap name "dyad-vm-web1-nic0"`},
		{"tap name with slash", func(m *Machine) { m.NICs[0].Ifname = "a/b" }, "tap name"},
		{"tap name dot", func(m *Machine) { m.NICs[0].Ifname = "." }, "tap name"},
		{"initrd without kernel", func(m *Machine) { m.Initrd = "/data/i.gz" }, "needs a kernel"},
		{"append without kernel", func(m *Machine) { m.Append = "quiet" }, "needs a kernel"},
		{"relative kernel", func(m *Machine) { m.Kernel = "vmlinuz" }, `kernel: path "vmlinuz" is not absolute`},
		{"comma in initrd", func(m *Machine) { m.Kernel = "/k"; m.Initrd = "/i,x" }, "initrd: path"},
		{"newline in append", func(m *Machine) { m.Kernel = "/k"; m.Append = "a\nb" }, "control character"},
		{"serial socket and file", func(m *Machine) { m.SerialFile = "/tmp/s.log" }, "both a socket and a file"},
		{"comma in serial file", func(m *Machine) { m.SerialSocket = ""; m.SerialFile = "/tmp/s,x" }, "serial console file: path"},
		{"no serial at all", func(m *Machine) { m.SerialSocket = "" }, "serial console socket: no path given"},
		{"no MAC", func(m *Machine) { m.NICs[0].MAC = nil }, "NIC 0: MAC"},
		{"multicast MAC", func(m *Machine) { m.NICs[0].MAC = net.HardwareAddr{1, 0, 0x5e, 0, 0, 1} }, "multicast"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := baseMachine()
			m.Disks = slices.Clone(m.Disks)
			m.NICs = slices.Clone(m.NICs)
			tt.edit(&m)
			a, err := Argv(m)
			if err == nil {
				t.Fatalf("Argv accepted it: %q", a)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Argv: %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// FuzzArgv feeds untrusted strings into every free-form field and checks
// that an accepted machine never changes the shape of the command line:
// the same number of arguments and, in each, the same number of commas
// as with harmless values, so no value can add a QEMU option (QEMU splits
// options at commas only; an '=' inside a value is part of the value).
func FuzzArgv(f *testing.F) {
	f.Add("web1", "/dev/drbd1", "/data/vcd/x.iso", "dv1n0", "/run/q.sock", "host")
	f.Add("a,b", "/dev/drbd1,file=/etc/shadow", "/x", "t", "/run/q.sock,server=off", "host,+vmx")
	f.Add("w", "/a=b", "/c", "t=1", "/q", "qemu64")
	ref, err := Argv(fuzzMachine("web1", "/dev/drbd1", "/data/vcd/x.iso", "dv1n0", "/run/q.sock", "host"))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, name, disk, cd, tap, qmp, cpu string) {
		got, err := Argv(fuzzMachine(name, disk, cd, tap, qmp, cpu))
		if err != nil {
			return
		}
		if len(got) != len(ref) {
			t.Fatalf("accepted input changed the number of arguments: %q", got)
		}
		for i := range got {
			if strings.Count(got[i], ",") != strings.Count(ref[i], ",") {
				t.Fatalf("argument %d %q has other commas than %q", i, got[i], ref[i])
			}
			if strings.ContainsAny(got[i], "\x00\n\r") {
				t.Fatalf("argument %d %q holds a control character", i, got[i])
			}
		}
	})
}

func fuzzMachine(name, disk, cd, tap, qmp, cpu string) Machine {
	m := baseMachine()
	m.Name = name
	m.Disks = []Disk{{Path: disk, Direct: true}}
	m.CDROM = cd
	m.NICs = []Tap{{Ifname: tap, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}}}
	m.QMPSocket = qmp
	m.CPU = cpu
	return m
}
