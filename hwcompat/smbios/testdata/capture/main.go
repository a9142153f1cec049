// Command capture is the /init of a throwaway initramfs that prints the
// guest's SMBIOS tables (and cpuinfo, meminfo) base64-encoded on the serial console and powers off.
// It is how the qemu-* fixtures next to it were made; see ../README.md.
package main

import (
	"encoding/base64"
	"fmt"
	"os"
	"syscall"
)

func main() {
	if err := os.MkdirAll("/sys", 0o755); err != nil {
		fmt.Println("ERR mkdir /sys:", err)
	}
	if err := syscall.Mount("sysfs", "/sys", "sysfs", 0, ""); err != nil {
		fmt.Println("ERR mount sysfs:", err)
	}
	if err := os.MkdirAll("/proc", 0o755); err != nil {
		fmt.Println("ERR mkdir /proc:", err)
	}
	if err := syscall.Mount("proc", "/proc", "proc", 0, ""); err != nil {
		fmt.Println("ERR mount proc:", err)
	}
	for _, n := range []string{"/sys/firmware/dmi/tables/smbios_entry_point", "/sys/firmware/dmi/tables/DMI", "/proc/cpuinfo", "/proc/meminfo"} {
		b, err := os.ReadFile(n)
		if err != nil {
			fmt.Println("ERR", n, err)
			continue
		}
		fmt.Printf("BEGIN %s\n%s\nEND %s\n", n, base64.StdEncoding.EncodeToString(b), n)
	}
	syscall.Sync()
	if err := syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fmt.Println("ERR power off:", err)
	}
}
