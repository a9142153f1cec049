package hwcompat

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

func collectNICs(root string) ([]NIC, error) {
	dir := sysPath(root, "sys", "class", "net")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, wrapRead("network interfaces", dir, err)
	}
	nics := []NIC{}
	for _, e := range entries {
		name := e.Name()
		dev := sysPath(dir, name)
		// Bridges, bonds, taps, VLANs and lo have no "device" link: Dyad
		// creates those itself, they are not hardware.
		if _, err := os.Lstat(sysPath(dev, "device")); err != nil {
			continue
		}
		nics = append(nics, NIC{
			Name:       name,
			MAC:        optional(sysPath(dev, "address")),
			Driver:     linkBase(sysPath(dev, "device", "driver")),
			SpeedMbps:  linkSpeed(dev),
			Carrier:    optional(sysPath(dev, "carrier")) == "1",
			BusAddress: busAddress(sysPath(dev, "device")),
		})
	}
	slices.SortFunc(nics, func(a, b NIC) int { return strings.Compare(a.Name, b.Name) })
	return nics, nil
}

// linkSpeed reads the speed attribute, which the kernel refuses to read
// (EINVAL) on a down interface and reports as -1 when the driver does not know.
func linkSpeed(dev string) int {
	n, err := strconv.Atoi(optional(sysPath(dev, "speed")))
	if err != nil || n <= 0 {
		return 0
	}
	return n
}

// busAddress names the device the interface sits on. A virtio NIC's device
// is "virtioN", numbered in probe order; the PCI function above it is the
// stable address that orders ports the way they are cabled.
func busAddress(device string) string {
	base := linkBase(device)
	if !strings.HasPrefix(base, "virtio") {
		return base
	}
	resolved, err := filepath.EvalSymlinks(device)
	if err != nil {
		return base
	}
	return filepath.Base(filepath.Dir(resolved))
}
