//go:build linux

package vm

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/services/qmp"
)

// TestArgvRunsQEMU hands the generated command line to the real QEMU,
// paused (-S) so no guest code runs, and checks over QMP that QEMU took
// every device, then quits it. A temporary raw file stands in for
// /dev/drbdN. The NIC is tested only where a private network namespace
// can be had (root and unshare), so no tap device appears on the host.
func TestArgvRunsQEMU(t *testing.T) {
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 is not installed on this host")
	}
	unshare, _ := exec.LookPath("unshare")
	withNIC := os.Geteuid() == 0 && unshare != ""
	if !withNIC {
		t.Log("not root or no unshare: testing without a NIC")
	}

	tests := []struct {
		name  string
		typ   string
		accel Accel
		edit  func(m *Machine)
		want  string // QMP status
	}{
		{"q35 TCG", "q35", TCG, nil, "prelaunch"},
		{"pc TCG", "pc", TCG, nil, "prelaunch"},
		{"q35 TCG migration target", "q35", TCG, func(m *Machine) { m.Paused = false; m.Incoming = true }, "inmigrate"},
		{"q35 KVM", "q35", KVM, nil, "prelaunch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.accel == KVM {
				f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
				if err != nil {
					t.Skipf("no usable /dev/kvm: %v", err)
				}
				f.Close()
			}
			dir := t.TempDir()
			disk := filepath.Join(dir, "disk.raw")
			cd := filepath.Join(dir, "vcd.iso")
			for _, p := range []string{disk, cd} {
				if err := os.WriteFile(p, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Truncate(p, 16*MiB); err != nil {
					t.Fatal(err)
				}
			}
			m := Machine{
				Name: "t1", UUID: "6f1c2a9e-4b7d-4e2a-9c3b-0123456789ab",
				Type: tt.typ, Accel: tt.accel, VCPUs: 2, MemoryBytes: 256 * MiB,
				Disks:        []Disk{{Path: disk, Direct: supportsDirect(disk)}},
				CDROM:        cd,
				Paused:       true,
				SerialSocket: filepath.Join(dir, "serial.sock"),
				QMPSocket:    filepath.Join(dir, "qmp.sock"),
				VNCSocket:    filepath.Join(dir, "vnc.sock"),
			}
			if withNIC {
				m.NICs = []Tap{{Ifname: "dvtest0", MAC: MAC([]byte("test"), 1)}}
			}
			if tt.accel == KVM {
				// QEMU 7.2 with -cpu host aborts on AMD hosts under nested
				// KVM ("failed to set MSR 0x10a"); see Machine.CPUFeatures.
				m.CPUFeatures = []string{"arch-capabilities=off"}
			}
			if tt.edit != nil {
				tt.edit(&m)
			}
			argv, err := Argv(m)
			if err != nil {
				t.Fatal(err)
			}
			var cmd *exec.Cmd
			if withNIC {
				cmd = exec.Command(unshare, append([]string{"--net", "--", bin}, argv...)...)
			} else {
				cmd = exec.Command(bin, argv...)
			}
			out := &limitedBuffer{}
			cmd.Stdout, cmd.Stderr = out, out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan struct{})
			go func() { cmd.Wait(); close(exited) }()
			t.Cleanup(func() {
				cmd.Process.Kill()
				<-exited
			})

			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c := dialQMP(ctx, t, m.QMPSocket, exited, out)
			defer c.Close()

			var status struct{ Status string }
			if err := c.Execute(ctx, "query-status", nil, &status); err != nil {
				t.Fatal(err)
			}
			if status.Status != tt.want {
				t.Errorf("status %q, want %q", status.Status, tt.want)
			}
			var blocks []struct {
				QDev     string `json:"qdev"`
				Device   string `json:"device"`
				Inserted *struct {
					File string `json:"file"`
					RO   bool   `json:"ro"`
				} `json:"inserted"`
			}
			if err := c.Execute(ctx, "query-block", nil, &blocks); err != nil {
				t.Fatal(err)
			}
			files := map[string]string{}
			for _, b := range blocks {
				if b.Inserted != nil {
					files[b.Device] = b.Inserted.File
				}
			}
			if files["disk0"] != disk || files["cd0"] != cd {
				t.Errorf("query-block: %+v, want disk0 on %s and cd0 on %s", files, disk, cd)
			}
			var chardevs []struct{ Label string }
			if err := c.Execute(ctx, "query-chardev", nil, &chardevs); err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(chardevs, func(d struct{ Label string }) bool { return d.Label == "serial0" }) {
				t.Errorf("query-chardev: %+v, want serial0", chardevs)
			}
			if _, err := os.Stat(m.VNCSocket); err != nil {
				t.Errorf("VNC socket: %v", err)
			}
			if err := c.Execute(ctx, "quit", nil, nil); err != nil {
				t.Fatal(err)
			}
			select {
			case <-exited:
				if !cmd.ProcessState.Success() {
					t.Errorf("QEMU exited with %v after quit: %s", cmd.ProcessState, out)
				}
			case <-ctx.Done():
				t.Fatal("QEMU did not exit after quit")
			}
		})
	}
}

func dialQMP(ctx context.Context, t *testing.T, sock string, exited <-chan struct{}, out *limitedBuffer) *qmp.Client {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := qmp.Dial(ctx, sock)
		if err == nil {
			return c
		}
		select {
		case <-ctx.Done():
			t.Fatalf("QMP socket %s never answered: %v; QEMU said: %s", sock, err, out)
		case <-exited:
			t.Fatalf("QEMU exited before QMP answered: %s", out)
		case <-tick.C:
		}
	}
}

// supportsDirect reports whether the file's file system takes O_DIRECT,
// as DRBD devices do; tmpfs does not.
func supportsDirect(path string) bool {
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_DIRECT, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// limitedBuffer keeps the first 64 KiB of QEMU's output for error messages.
type limitedBuffer struct {
	b []byte
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 64<<10 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }
