package vm

import (
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Accel is QEMU's accelerator.
type Accel string

// Accelerators: KVM when /dev/kvm exists, TCG otherwise (DESIGN.md §5).
const (
	KVM Accel = "kvm"
	TCG Accel = "tcg"
)

// Disk is a block device of a running VM: a volume's /dev/drbdN on the PM
// that runs it.
type Disk struct {
	Path string
	// Direct opens the device with O_DIRECT (cache=none, aio=native): the
	// guest's writes go straight to DRBD, which acknowledges them only
	// when both legs have them. DRBD devices support it; false is for
	// files on file systems that do not (tmpfs), where the page cache is
	// used but guest flushes still reach the disk.
	Direct bool
}

// Tap attaches a VM to a shared network through a tap device on the
// network's bridge; the agent creates the tap.
type Tap struct {
	Ifname string
	MAC    net.HardwareAddr
	// VHost moves the virtio-net data path into the kernel (needs KVM and
	// /dev/vhost-net).
	VHost bool
}

// Machine is everything QEMU needs to run one VM on this PM.
type Machine struct {
	Name string
	UUID string
	// Type is the machine type, "q35" (default) or "pc" for guests that
	// predate PCIe.
	Type  string
	Accel Accel
	// CPU is the CPU model: "" chooses "host" under KVM and "qemu64" under
	// TCG. A unit whose PMs differ may need a named model so that a VM
	// can migrate; hwcompat decides.
	CPU string
	// CPUFeatures switch CPU features on or off, each as "name=on" or
	// "name=off". On this project's CI host (AMD EPYC, nested KVM) QEMU 7.2
	// aborts with -cpu host ("failed to set MSR 0x10a", the
	// IA32_ARCH_CAPABILITIES register) unless "arch-capabilities=off" is
	// given; the agent decides per host, Argv only checks the syntax.
	CPUFeatures []string
	VCPUs       int
	MemoryBytes int64
	// Disks are the VM's volumes in the order the guest sees them.
	Disks []Disk
	// BootDisk is the index in Disks of the boot volume.
	BootDisk int
	// CDROM is the path of a VCD's ISO image, "" for no CD drive.
	CDROM string
	// BootFromCD boots from the CD before the boot volume (the command
	// Boot From CD).
	BootFromCD bool
	NICs       []Tap
	// SerialSocket, QMPSocket and VNCSocket are the unix sockets QEMU
	// listens on: the agent connects to QMP, the console proxies connect
	// to the others.
	SerialSocket string
	QMPSocket    string
	VNCSocket    string
	// SerialFile, when set, writes the serial console to this file
	// instead of SerialSocket (which is then left empty): for tests that
	// read the guest's output after the fact.
	SerialFile string
	// Kernel, Initrd and Append boot a kernel directly (-kernel, -initrd,
	// -append) instead of through the firmware from a volume or a VCD:
	// the tiny test guest boots this way. Initrd and Append need Kernel.
	Kernel string
	Initrd string
	Append string
	// Paused starts the VM with its CPUs stopped (-S), to be resumed over
	// QMP with "cont" once the agent is ready.
	Paused bool
	// Incoming makes this QEMU the target of a live migration: it waits,
	// paused, for QMP migrate-incoming (-incoming defer), so the agent
	// chooses the address and the migration parameters over QMP.
	Incoming bool
}

// Argv returns the arguments (without the program name) that run m under
// qemu-system-x86_64, or an error naming the first bad input. Every
// value is checked because it ends up inside QEMU's comma-separated
// option syntax, where an unchecked comma would add options.
//
// How the agent tells a guest shutdown from a crash: QEMU is run without
// -no-shutdown, so when the guest powers off (ACPI) QEMU emits the QMP
// event SHUTDOWN with "guest": true and exits with status 0; the VM is
// then Stopped and its volumes are released at once, which a failover or
// a migration needs. A guest kernel panic is reported by pvpanic as
// GUEST_PANICKED, and -action panic=pause keeps the guest's memory so
// that the agent may dump it before it quits QEMU and applies the MTBF
// policy. A QEMU that exits without a guest SHUTDOWN event (a signal, a
// non-zero status) has crashed. A guest reboot resets the VM in the same
// process (-action reboot=reset). An I/O error on a volume pauses the VM
// (werror=stop, rerror=stop) rather than failing the guest's I/O, so the
// agent can move it to the PM whose leg is good.
func Argv(m Machine) ([]string, error) {
	if err := CheckName(m.Name); err != nil {
		return nil, fmt.Errorf("VM name: %w", err)
	}
	if !uuidRE.MatchString(m.UUID) {
		return nil, fmt.Errorf("VM %s: UUID %q: want the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx in hex", m.Name, m.UUID)
	}
	typ := m.Type
	if typ == "" {
		typ = "q35"
	}
	if typ != "q35" && typ != "pc" {
		return nil, fmt.Errorf("VM %s: machine type %q: use q35 or pc", m.Name, m.Type)
	}
	cpu := m.CPU
	switch m.Accel {
	case KVM:
		if cpu == "" {
			cpu = "host"
		}
	case TCG:
		if cpu == "" {
			cpu = "qemu64"
		}
		if cpu == "host" {
			return nil, fmt.Errorf("VM %s: CPU model host needs KVM, not TCG", m.Name)
		}
	default:
		return nil, fmt.Errorf("VM %s: accelerator %q: use kvm or tcg", m.Name, m.Accel)
	}
	if !cpuRE.MatchString(cpu) {
		return nil, fmt.Errorf("VM %s: CPU model %q: use a QEMU model name such as host or qemu64", m.Name, cpu)
	}
	for _, f := range m.CPUFeatures {
		if !featureRE.MatchString(f) {
			return nil, fmt.Errorf("VM %s: CPU feature %q: want name=on or name=off", m.Name, f)
		}
		cpu += "," + f
	}
	if m.VCPUs < 1 || m.VCPUs > MaxVCPUs {
		return nil, fmt.Errorf("VM %s: %d vCPUs: a VM has 1 to %d", m.Name, m.VCPUs, MaxVCPUs)
	}
	if m.MemoryBytes < MinMemory || m.MemoryBytes%MiB != 0 {
		return nil, fmt.Errorf("VM %s: memory %d bytes: want a whole number of MiB, at least %s", m.Name, m.MemoryBytes, mib(MinMemory))
	}
	if len(m.Disks) == 0 && m.CDROM == "" && m.Kernel == "" {
		return nil, fmt.Errorf("VM %s: no disk and no CD to boot from", m.Name)
	}
	if m.Kernel != "" {
		if err := checkPath(m.Kernel); err != nil {
			return nil, fmt.Errorf("VM %s: kernel: %w", m.Name, err)
		}
	} else if m.Initrd != "" || m.Append != "" {
		return nil, fmt.Errorf("VM %s: an initrd or a kernel command line needs a kernel", m.Name)
	}
	if m.Initrd != "" {
		if err := checkPath(m.Initrd); err != nil {
			return nil, fmt.Errorf("VM %s: initrd: %w", m.Name, err)
		}
	}
	if strings.ContainsFunc(m.Append, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return nil, fmt.Errorf("VM %s: kernel command line %q contains a control character", m.Name, m.Append)
	}
	if len(m.Disks) > 0 && (m.BootDisk < 0 || m.BootDisk >= len(m.Disks)) {
		return nil, fmt.Errorf("VM %s: boot disk %d: the VM has disks 0 to %d", m.Name, m.BootDisk, len(m.Disks)-1)
	}
	if m.BootFromCD && m.CDROM == "" {
		return nil, fmt.Errorf("VM %s: boot from CD asked for, but no VCD is inserted", m.Name)
	}
	sockets := []struct{ what, path string }{
		{"QMP socket", m.QMPSocket},
		{"VNC socket", m.VNCSocket},
	}
	serial := "socket,id=serial0,path=" + m.SerialSocket + ",server=on,wait=off"
	if m.SerialFile != "" {
		if m.SerialSocket != "" {
			return nil, fmt.Errorf("VM %s: serial console: both a socket and a file given", m.Name)
		}
		if err := checkPath(m.SerialFile); err != nil {
			return nil, fmt.Errorf("VM %s: serial console file: %w", m.Name, err)
		}
		serial = "file,id=serial0,path=" + m.SerialFile
	} else {
		sockets = append([]struct{ what, path string }{{"serial console socket", m.SerialSocket}}, sockets...)
	}
	for _, s := range sockets {
		if err := checkPath(s.path); err != nil {
			return nil, fmt.Errorf("VM %s: %s: %w", m.Name, s.what, err)
		}
		// sun_path holds 108 bytes including the terminating NUL.
		if len(s.path) > 107 {
			return nil, fmt.Errorf("VM %s: %s %s: %d bytes, a unix socket path has at most 107", m.Name, s.what, s.path, len(s.path))
		}
	}

	a := []string{
		"-nodefaults", "-no-user-config",
		"-name", "guest=" + m.Name + ",debug-threads=on",
		"-uuid", m.UUID,
		"-machine", "type=" + typ,
		"-accel", string(m.Accel),
		"-cpu", cpu,
		"-smp", fmt.Sprintf("%d,sockets=1,cores=%d,threads=1", m.VCPUs, m.VCPUs),
		"-m", strconv.FormatInt(m.MemoryBytes/MiB, 10) + "M",
		"-display", "none",
		"-action", "shutdown=poweroff,reboot=reset,panic=pause",
		"-device", "pvpanic",
		// A display adapter for the VNC console.
		"-device", "VGA",
	}

	// Boot order by bootindex: the firmware tries the lowest first.
	next := 0
	if m.Kernel != "" {
		// QEMU gives a -kernel its boot ROM bootindex 0.
		next = 1
	}
	index := func() int { next++; return next - 1 }
	cdIndex := -1
	if m.BootFromCD {
		cdIndex = index()
	}
	bootIndex := -1
	if len(m.Disks) > 0 {
		bootIndex = index()
	}
	if m.CDROM != "" && cdIndex < 0 {
		cdIndex = index()
	}

	for i, d := range m.Disks {
		if err := checkPath(d.Path); err != nil {
			return nil, fmt.Errorf("VM %s: disk %d: %w", m.Name, i, err)
		}
		opts := "cache=writeback,aio=threads"
		if d.Direct {
			opts = "cache=none,aio=native"
		}
		id := fmt.Sprintf("disk%d", i)
		a = append(a, "-drive", fmt.Sprintf("file=%s,if=none,id=%s,format=raw,%s,werror=stop,rerror=stop", d.Path, id, opts))
		dev := fmt.Sprintf("virtio-blk-pci,drive=%s,id=%s-dev", id, id)
		if i == m.BootDisk {
			dev += fmt.Sprintf(",bootindex=%d", bootIndex)
		}
		a = append(a, "-device", dev)
	}
	if m.CDROM != "" {
		if err := checkPath(m.CDROM); err != nil {
			return nil, fmt.Errorf("VM %s: VCD: %w", m.Name, err)
		}
		// ide.1 exists on both machine types: the second IDE channel of pc,
		// the second port of q35's built-in AHCI controller.
		a = append(a,
			"-drive", fmt.Sprintf("file=%s,if=none,id=cd0,media=cdrom,readonly=on,format=raw", m.CDROM),
			"-device", fmt.Sprintf("ide-cd,drive=cd0,bus=ide.1,id=cd0-dev,bootindex=%d", cdIndex))
	}
	for i, n := range m.NICs {
		if err := checkIfname(n.Ifname); err != nil {
			return nil, fmt.Errorf("VM %s: NIC %d: %w", m.Name, i, err)
		}
		if err := CheckMAC(n.MAC); err != nil {
			return nil, fmt.Errorf("VM %s: NIC %d: %w", m.Name, i, err)
		}
		netdev := fmt.Sprintf("tap,id=net%d,ifname=%s,script=no,downscript=no", i, n.Ifname)
		if n.VHost {
			netdev += ",vhost=on"
		}
		// romfile= leaves out the iPXE option ROM: guests boot from a
		// volume or a VCD, never from the network, and the system image
		// need not carry the ROMs.
		a = append(a,
			"-netdev", netdev,
			"-device", fmt.Sprintf("virtio-net-pci,netdev=net%d,id=net%d-dev,mac=%s,romfile=", i, i, n.MAC))
	}

	a = append(a,
		"-chardev", serial,
		"-device", "isa-serial,chardev=serial0",
		"-chardev", "socket,id=qmp,path="+m.QMPSocket+",server=on,wait=off",
		"-mon", "chardev=qmp,mode=control",
		"-vnc", "unix:"+m.VNCSocket,
	)
	if m.Kernel != "" {
		a = append(a, "-kernel", m.Kernel)
		if m.Initrd != "" {
			a = append(a, "-initrd", m.Initrd)
		}
		if m.Append != "" {
			a = append(a, "-append", m.Append)
		}
	}
	if m.Paused {
		a = append(a, "-S")
	}
	if m.Incoming {
		a = append(a, "-incoming", "defer")
	}
	return a, nil
}

var (
	uuidRE    = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	cpuRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	featureRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*=(on|off)$`)
)

// checkPath accepts an absolute, clean path without the characters that
// QEMU's option syntax or a log line would read differently.
func checkPath(p string) error {
	if p == "" {
		return fmt.Errorf("no path given")
	}
	if !filepath.IsAbs(p) {
		return fmt.Errorf("path %q is not absolute", p)
	}
	if filepath.Clean(p) != p {
		return fmt.Errorf("path %q is not clean (want %q)", p, filepath.Clean(p))
	}
	if strings.ContainsFunc(p, func(r rune) bool { return r == ',' || r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("path %q contains a comma or a control character", p)
	}
	return nil
}

// checkIfname accepts a Linux interface name: 1 to 15 bytes (IFNAMSIZ),
// letters, digits, '.', '_' and '-', and not "." or "..".
func checkIfname(s string) error {
	if s == "" || len(s) > 15 || s == "." || s == ".." || !ifnameRE.MatchString(s) {
		return fmt.Errorf("tap name %q: want 1 to 15 letters, digits, '.', '_' or '-'", s)
	}
	return nil
}

var ifnameRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
