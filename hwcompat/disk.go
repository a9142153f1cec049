package hwcompat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
)

// skippedDisk reports block devices that are never installation or
// storage-group targets: RAM disks, loop, compressed swap, device-mapper
// and DRBD devices (Dyad's own layers), optical and floppy drives.
func skippedDisk(name string) bool {
	for _, p := range []string{"ram", "loop", "zram", "dm-", "drbd", "sr", "fd"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

func collectDisks(root string) ([]Disk, error) {
	dir := sysPath(root, "sys", "block")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, wrapRead("block devices", dir, err)
	}
	disks := []Disk{}
	for _, e := range entries {
		name := e.Name()
		if skippedDisk(name) {
			continue
		}
		dev := sysPath(root, "sys", "block", name)
		// Devices without a "device" link are virtual (md, nbd, ...):
		// they live on top of the physical disks this inventory lists.
		if _, err := os.Lstat(sysPath(dev, "device")); err != nil {
			continue
		}
		d, err := readDisk(dev, name)
		if err != nil {
			return nil, err
		}
		disks = append(disks, d)
	}
	slices.SortFunc(disks, func(a, b Disk) int { return strings.Compare(a.Name, b.Name) })
	return disks, nil
}

// sectorSize is the unit of /sys/block/X/size whatever the device's own
// logical block size.
const sectorSize = 512

func readDisk(dev, name string) (Disk, error) {
	sizePath := sysPath(dev, "size")
	s, err := readTrimmed(sizePath)
	if err != nil {
		return Disk{}, wrapRead("disk size", sizePath, err)
	}
	sectors, err := strconv.ParseUint(s, 10, 64)
	if err != nil || sectors > math.MaxUint64/sectorSize {
		return Disk{}, fmt.Errorf("hardware inventory: disk size %s: %q is not a sector count", sizePath, s)
	}
	model := optional(sysPath(dev, "device", "model"))
	if model == "" {
		model = optional(sysPath(dev, "device", "vendor"))
	}
	serial := diskSerial(dev)
	return Disk{
		Name:       name,
		SizeBytes:  sectors * sectorSize,
		Model:      model,
		Serial:     serial,
		Rotational: optional(sysPath(dev, "queue", "rotational")) == "1",
		Removable:  optional(sysPath(dev, "removable")) == "1",
	}, nil
}

// diskSerial finds the serial number where each transport puts it: virtio
// on the block device, NVMe on its controller, SCSI and SATA only in the
// device's Unit Serial Number VPD page.
func diskSerial(dev string) string {
	if s := optional(sysPath(dev, "serial")); s != "" {
		return s
	}
	if s := optional(sysPath(dev, "device", "serial")); s != "" {
		return s
	}
	b, err := os.ReadFile(sysPath(dev, "device", "vpd_pg80"))
	if err != nil {
		return ""
	}
	s, err := parseVPDSerial(b)
	if err != nil {
		return ""
	}
	return s
}

// vpdUnitSerial is the page code of the SCSI Unit Serial Number VPD page.
const vpdUnitSerial = 0x80

// parseVPDSerial decodes a Unit Serial Number VPD page as the device
// returned it: a 4-byte header (page code at 1, big-endian length at 2)
// and the serial in ASCII, usually padded with spaces or NULs.
func parseVPDSerial(b []byte) (string, error) {
	if len(b) < 4 {
		return "", fmt.Errorf("VPD page of %d bytes has no header", len(b))
	}
	if b[1] != vpdUnitSerial {
		return "", fmt.Errorf("VPD page code %#x, want %#x", b[1], vpdUnitSerial)
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if 4+n > len(b) {
		return "", fmt.Errorf("VPD page length %d exceeds the %d bytes read", n, len(b)-4)
	}
	serial := strings.Trim(string(b[4:4+n]), " \x00")
	for _, c := range []byte(serial) {
		if c < 0x20 || c > 0x7e {
			return "", errors.New("VPD serial number is not printable ASCII")
		}
	}
	return serial, nil
}
