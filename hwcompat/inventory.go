// Package hwcompat takes the hardware inventory of a PM from the kernel's
// view of it (/proc, /sys and the firmware's SMBIOS table). The inventory is
// what the console shows for a PM and what compatibility rules between the
// two PMs of a unit are checked against.
package hwcompat

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Inventory is the hardware of one PM. It is served as "hardware" in
// GET /api/v1/pms/{id}.
type Inventory struct {
	CPU    CPU    `json:"cpu"`
	Memory Memory `json:"memory"`
	Disks  []Disk `json:"disks"`
	NICs   []NIC  `json:"nics"`
	System System `json:"system"`
	BIOS   BIOS   `json:"bios"`
	// Baseboard is nil when the firmware does not describe one.
	Baseboard *Baseboard `json:"baseboard,omitempty"`
	// FirmwareSource says where System, BIOS and Baseboard came from:
	// FirmwareSMBIOS, FirmwareSysfs or FirmwareNone.
	FirmwareSource string `json:"firmware_source"`
	// SMBIOSVersion is set when the SMBIOS table itself was parsed.
	SMBIOSVersion string `json:"smbios_version,omitempty"`
	// Warnings lists parts of the inventory that could not be read as
	// expected but did not prevent the rest from being collected.
	Warnings []string `json:"warnings,omitempty"`
}

// CPU describes the processors as the kernel reports them.
type CPU struct {
	Vendor    string `json:"vendor"`
	ModelName string `json:"model_name"`
	Family    int    `json:"family"`
	Model     int    `json:"model"`
	Stepping  int    `json:"stepping"`
	// Flags are the feature flags present on every logical CPU, sorted.
	// Live migration between PMs is only safe on features both share.
	Flags   []string `json:"flags"`
	Sockets int      `json:"sockets"`
	Cores   int      `json:"cores"`
	Threads int      `json:"threads"`
}

// Memory is the RAM usable by the kernel.
type Memory struct {
	TotalBytes uint64 `json:"total_bytes"`
}

// Disk is a physical block device.
type Disk struct {
	Name       string `json:"name"`
	SizeBytes  uint64 `json:"size_bytes"`
	Model      string `json:"model"`
	Serial     string `json:"serial,omitempty"`
	Rotational bool   `json:"rotational"`
	Removable  bool   `json:"removable"`
}

// NIC is a physical network interface.
type NIC struct {
	Name   string `json:"name"`
	MAC    string `json:"mac"`
	Driver string `json:"driver"`
	// SpeedMbps is the negotiated link speed; 0 means unknown (no link,
	// interface down, or a driver that does not report it).
	SpeedMbps int  `json:"speed_mbps"`
	Carrier   bool `json:"carrier"`
	// BusAddress is the device's address on its bus, e.g. the PCI address
	// "0000:00:03.0"; ports are ordered by it to find the onboard ones.
	BusAddress string `json:"bus_address"`
}

// System is the machine identity from SMBIOS type 1.
type System struct {
	Manufacturer string `json:"manufacturer"`
	Product      string `json:"product"`
	Version      string `json:"version"`
	Serial       string `json:"serial"`
	UUID         string `json:"uuid"`
	SKU          string `json:"sku,omitempty"`
	Family       string `json:"family,omitempty"`
}

// BIOS is the firmware identity from SMBIOS type 0.
type BIOS struct {
	Vendor      string `json:"vendor"`
	Version     string `json:"version"`
	ReleaseDate string `json:"release_date"`
}

// Baseboard is the main board identity from SMBIOS type 2.
type Baseboard struct {
	Manufacturer string `json:"manufacturer"`
	Product      string `json:"product"`
	Version      string `json:"version"`
	Serial       string `json:"serial"`
	AssetTag     string `json:"asset_tag,omitempty"`
}

// Values of Inventory.FirmwareSource.
const (
	FirmwareSMBIOS = "smbios"
	FirmwareSysfs  = "sysfs"
	FirmwareNone   = "none"
)

// Collect reads the inventory of the machine whose /proc and /sys are
// mounted under root ("/" in production, a fixture tree in tests).
// Missing CPU, memory, block or network information is an error; missing
// or unreadable firmware tables are not, because virtual machines and some
// boards have none, and are reported in Inventory.Warnings instead.
func Collect(ctx context.Context, root string) (Inventory, error) {
	inv := Inventory{Disks: []Disk{}, NICs: []NIC{}}
	var err error
	if inv.CPU, err = collectCPU(root); err != nil {
		return Inventory{}, err
	}
	if err := ctx.Err(); err != nil {
		return Inventory{}, err
	}
	if inv.Memory, err = collectMemory(root); err != nil {
		return Inventory{}, err
	}
	if err := ctx.Err(); err != nil {
		return Inventory{}, err
	}
	if inv.Disks, err = collectDisks(root); err != nil {
		return Inventory{}, err
	}
	if err := ctx.Err(); err != nil {
		return Inventory{}, err
	}
	if inv.NICs, err = collectNICs(root); err != nil {
		return Inventory{}, err
	}
	if err := ctx.Err(); err != nil {
		return Inventory{}, err
	}
	collectFirmware(root, &inv)
	return inv, nil
}

// sysPath joins an absolute kernel path onto root.
func sysPath(root string, elem ...string) string {
	return filepath.Join(append([]string{root}, elem...)...)
}

// readTrimmed reads a small sysfs/procfs attribute without its trailing newline.
func readTrimmed(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// optional reads an attribute that some devices lack; absence reads as "".
func optional(path string) string {
	s, err := readTrimmed(path)
	if err != nil {
		return ""
	}
	return s
}

// linkBase returns the last element of a symlink's target, "" if path is
// not a readable symlink.
func linkBase(path string) string {
	t, err := os.Readlink(path)
	if err != nil {
		return ""
	}
	return filepath.Base(t)
}

func wrapRead(what, path string, err error) error {
	return fmt.Errorf("hardware inventory: read %s %s: %w", what, path, err)
}
