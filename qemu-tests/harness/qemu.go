package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// accel is a QEMU accelerator.
type accel string

const (
	accelKVM accel = "kvm"
	accelTCG accel = "tcg"
)

// firstSlot is the PCI slot of the first NIC: slots 0 and 1 hold the i440FX
// host bridge and the PIIX3, slot 2 stays where a display card would go.
const firstSlot = 3

// kvmProbeTimeout bounds the trial boot that tells whether KVM works: a
// kernel prints its banner well within a second under a working KVM.
const kvmProbeTimeout = 10 * time.Second

// chooseAccel picks KVM when /dev/kvm can be opened read-write and a trial
// boot of kernel under KVM prints the kernel banner, TCG otherwise;
// DYAD_QEMU_ACCEL=kvm|tcg overrides the choice. The trial is needed because
// some hosts (nested virtualization in a microVM) offer a /dev/kvm on which
// guests never get past the kernel decompressor. Its outcome is kept in the
// temp dir for the rest of the host's boot. The second result says why.
func chooseAccel(ctx context.Context, qemu, kernel string) (accel, string, error) {
	switch v := os.Getenv("DYAD_QEMU_ACCEL"); v {
	case "kvm":
		return accelKVM, "forced by DYAD_QEMU_ACCEL", nil
	case "tcg":
		return accelTCG, "forced by DYAD_QEMU_ACCEL", nil
	case "":
	default:
		return "", "", fmt.Errorf("harness: DYAD_QEMU_ACCEL=%q, want kvm or tcg", v)
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return accelTCG, err.Error(), nil
	}
	f.Close()

	bootID, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", "", fmt.Errorf("harness: %w", err)
	}
	cache := filepath.Join(os.TempDir(), "dyad-kvm-probe-"+strings.TrimSpace(string(bootID)))
	if b, err := os.ReadFile(cache); err == nil && (string(b) == string(accelKVM) || string(b) == string(accelTCG)) {
		return accel(b), "trial boot result cached in " + cache, nil
	}
	acc, why, err := probeKVM(ctx, qemu, kernel)
	if err != nil {
		return "", "", err
	}
	if err := os.WriteFile(cache, []byte(acc), 0o644); err != nil {
		return "", "", fmt.Errorf("harness: %w", err)
	}
	return acc, why, nil
}

// probeKVM boots kernel under KVM without initramfs or disk and waits for
// its banner on the serial console.
func probeKVM(ctx context.Context, qemu, kernel string) (accel, string, error) {
	// Pdeathsig is tied to the forking thread; keep it for the trial.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	dir, err := os.MkdirTemp("", "dyad-kvm-probe-")
	if err != nil {
		return "", "", fmt.Errorf("harness: %w", err)
	}
	defer os.RemoveAll(dir)
	serial := filepath.Join(dir, "serial.log")
	cmd := exec.Command(qemu, "-machine", "pc", "-accel", "kvm", "-cpu", "host", "-m", "128",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", kernel, "-append", "console=ttyS0 earlyprintk=ttyS0 panic=-1",
		"-serial", "file:"+serial)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "", "", fmt.Errorf("harness: KVM trial boot: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, kvmProbeTimeout)
	defer cancel()
	tick := time.NewTicker(PollInterval / 2)
	defer tick.Stop()
	for {
		if b, _ := os.ReadFile(serial); bytes.Contains(b, []byte("Linux version")) {
			break
		}
		select {
		case <-exited:
			return accelTCG, fmt.Sprintf("KVM trial boot: QEMU exited: %s", bytes.TrimSpace(stderr.Bytes())), nil
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				return "", "", fmt.Errorf("harness: KVM trial boot: %w", ctx.Err())
			}
			return accelTCG, fmt.Sprintf("KVM trial boot printed no kernel banner within %s", kvmProbeTimeout), nil
		case <-tick.C:
		}
	}
	return accelKVM, fmt.Sprintf("KVM trial boot printed the kernel banner in %s", time.Since(start).Round(time.Millisecond)), nil
}

func qemuBinary() (string, error) {
	p, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return "", fmt.Errorf("harness: QEMU not installed: %w", err)
	}
	return p, nil
}

// qemuConfig is what differs between the QEMU command lines of two PMs.
type qemuConfig struct {
	n         int
	memoryMiB int
	kernel    string
	initramfs string
	cmdline   string
	disk      string
	dataDisks []string // drive ids DataDiskID(i)
	serial    string
	qmp       string
	tc        string
	nics      []nic // in PCI order
}

// qemuArgs returns the QEMU command line of a PM. PCI slots are fixed and
// follow the order of c.nics, so that priv0 is always the first NIC; the
// other devices come after the NICs, the data disks last, so that the
// system disk is the first virtio disk (vda) and adding data disks moves
// no other device.
func qemuArgs(bin string, acc accel, c qemuConfig) []string {
	cpu := "max"
	if acc == accelKVM {
		cpu = "host"
	}
	args := []string{
		bin,
		"-name", fmt.Sprintf("pm%d", c.n),
		"-machine", "pc",
		"-accel", string(acc),
		"-cpu", cpu,
		"-m", fmt.Sprint(c.memoryMiB),
		"-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none",
		"-kernel", c.kernel,
		"-initrd", c.initramfs,
		"-append", c.cmdline,
		// append=on keeps the console of every power cycle in one file.
		"-chardev", "file,id=serial0,path=" + c.serial + ",append=on",
		"-serial", "chardev:serial0",
		"-qmp", "unix:" + c.qmp + ",server=on,wait=off",
	}
	slot := firstSlot
	for _, nic := range c.nics {
		args = append(args,
			"-netdev", nic.netdev(),
			"-device", fmt.Sprintf("virtio-net-pci,netdev=%s,mac=%s,addr=%#x", nic.Link, nic.MAC, slot))
		slot++
	}
	args = append(args,
		"-drive", "file="+c.disk+",format=raw,if=none,id="+SystemDiskID+",discard=unmap",
		"-device", fmt.Sprintf("virtio-blk-pci,drive=%s,serial=LAB-PM%d-DISK0,addr=%#x", SystemDiskID, c.n, slot),
		"-object", "rng-random,id=rng0,filename=/dev/urandom",
		"-device", fmt.Sprintf("virtio-rng-pci,rng=rng0,addr=%#x", slot+1),
		"-smbios", fmt.Sprintf("type=1,manufacturer=Dyad Lab,product=QEMU PM,serial=LAB-PM%d", c.n),
		"-device", fmt.Sprintf("virtio-serial-pci,id=vser0,addr=%#x", slot+2),
		"-chardev", "socket,id=tc,path="+c.tc+",server=on,wait=off",
		"-device", "virtserialport,bus=vser0.0,chardev=tc,name=dyad.test",
	)
	slot += 3
	for i, d := range c.dataDisks {
		id := DataDiskID(i)
		args = append(args,
			"-drive", "file="+d+",format=raw,if=none,id="+id+",discard=unmap",
			"-device", fmt.Sprintf("virtio-blk-pci,drive=%s,serial=LAB-PM%d-DATA%d,addr=%#x", id, c.n, i, slot))
		slot++
	}
	return args
}
