package network

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Port is an Ethernet port of the PM.
type Port struct {
	Name  string
	Index int
	MAC   net.HardwareAddr
	// Driver is the kernel driver bound to the device, e.g. "virtio_net".
	Driver string
	// BusAddr is the PCI address nearest the device (for virtio-net the
	// PCI function of the virtio device), else the device's own name;
	// empty for virtual links.
	BusAddr   string
	Up        bool
	Carrier   bool
	SpeedMbps int // 0 when unknown (link down, or the driver does not say)
}

var pciAddr = regexp.MustCompile(`^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$`)

// Ports lists the physical Ethernet ports: links backed by a device in
// sysfs, which rules out loopback, bridges, bonds, taps and veths (veths
// are reported with Options.IncludeVirtual). Ports with a bus address come
// first in bus order, which is the order the firmware numbers onboard
// ports; ties and virtual links are ordered by name.
func (m *Manager) Ports(ctx context.Context) ([]Port, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	links, err := m.conn.Link.List()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var ports []Port
	for _, l := range links {
		if l.Attributes == nil || l.Type != unix.ARPHRD_ETHER {
			continue
		}
		name := l.Attributes.Name
		p := Port{
			Name:    name,
			Index:   int(l.Index),
			MAC:     l.Attributes.Address,
			Up:      l.Flags&unix.IFF_UP != 0,
			Carrier: l.Flags&unix.IFF_LOWER_UP != 0,
		}
		dev, err := m.device(name)
		if err != nil {
			return nil, err
		}
		switch {
		case dev != "":
			wireless, err := m.isWireless(name)
			if err != nil {
				return nil, err
			}
			if wireless {
				continue
			}
			if p.Driver, err = m.driver(dev); err != nil {
				return nil, err
			}
			p.BusAddr = busAddr(dev)
		case m.includeVirtual && l.Attributes.Info != nil && l.Attributes.Info.Kind == "veth":
			p.Driver = "veth"
		default:
			continue
		}
		p.SpeedMbps = m.speed(name)
		ports = append(ports, p)
	}
	slices.SortFunc(ports, func(a, b Port) int {
		return cmp.Or(
			cmp.Compare(boolRank(a.BusAddr == ""), boolRank(b.BusAddr == "")),
			strings.Compare(a.BusAddr, b.BusAddr),
			strings.Compare(a.Name, b.Name),
		)
	})
	return ports, nil
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

// device returns the resolved sysfs path of the device behind link name,
// or "" for a link without one.
func (m *Manager) device(name string) (string, error) {
	dev, err := filepath.EvalSymlinks(filepath.Join(m.sysClassNet, name, "device"))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("resolve device of %s: %w", name, err)
	}
	return dev, nil
}

func (m *Manager) isWireless(name string) (bool, error) {
	for _, marker := range []string{"wireless", "phy80211"} {
		_, err := os.Stat(filepath.Join(m.sysClassNet, name, marker))
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("check whether %s is wireless: %w", name, err)
		}
	}
	return false, nil
}

func (m *Manager) driver(dev string) (string, error) {
	drv, err := filepath.EvalSymlinks(filepath.Join(dev, "driver"))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil // a device no driver has claimed yet
	}
	if err != nil {
		return "", fmt.Errorf("resolve driver of %s: %w", dev, err)
	}
	return filepath.Base(drv), nil
}

// busAddr picks the PCI address nearest the device in its sysfs path.
func busAddr(dev string) string {
	parts := strings.Split(filepath.ToSlash(dev), "/")
	for i := len(parts) - 1; i >= 0; i-- {
		if pciAddr.MatchString(parts[i]) {
			return parts[i]
		}
	}
	return filepath.Base(dev)
}

// speed reads the negotiated speed; sysfs refuses the read (EINVAL) while
// the link is down and reports -1 when the driver does not know.
func (m *Manager) speed(name string) int {
	b, err := os.ReadFile(filepath.Join(m.sysClassNet, name, "speed"))
	if err != nil {
		return 0
	}
	s, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || s < 0 {
		return 0
	}
	return s
}
