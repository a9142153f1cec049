package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/sys/unix"
)

// linkPoll is how often a wait for link or address state looks again,
// e.g. while the kernel runs IPv6 duplicate address detection (about one
// second by default).
const linkPoll = 50 * time.Millisecond

// address is one address of a link as the kernel reports it.
type address struct {
	prefix netip.Prefix
	flags  uint32 // IFA_F_*
}

func (m *Manager) addresses(name string) (uint32, []address, error) {
	l, err := m.lookup(name)
	if err != nil {
		return 0, nil, err
	}
	msgs, err := m.conn.Address.List()
	if err != nil {
		return 0, nil, fmt.Errorf("list addresses: %w", err)
	}
	var out []address
	for _, a := range msgs {
		if a.Index != l.Index || a.Attributes == nil {
			continue
		}
		// For IPv4 IFA_LOCAL is the interface's own address; IFA_ADDRESS is
		// the peer on point-to-point links.
		ip := a.Attributes.Address
		if a.Family == unix.AF_INET && a.Attributes.Local != nil {
			ip = a.Attributes.Local
		}
		addr, ok := netip.AddrFromSlice(ip)
		if !ok {
			continue
		}
		p := netip.PrefixFrom(addr.Unmap(), int(a.PrefixLength))
		if !p.IsValid() {
			continue
		}
		out = append(out, address{prefix: p, flags: a.Attributes.Flags | uint32(a.Flags)})
	}
	return l.Index, out, nil
}

// Addrs lists the addresses of link name, IPv4 and IPv6, with their prefix
// lengths.
func (m *Manager) Addrs(ctx context.Context, name string) ([]netip.Prefix, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	_, addrs, err := m.addresses(name)
	if err != nil {
		return nil, fmt.Errorf("addresses of %s: %w", name, err)
	}
	out := make([]netip.Prefix, len(addrs))
	for i, a := range addrs {
		out[i] = a.prefix
	}
	return out, nil
}

// validPrefix checks an interface address such as 10.99.0.10/24 (the
// address with its prefix length, not the network).
func validPrefix(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return netip.Prefix{}, fmt.Errorf("invalid address %q", p)
	}
	p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits())
	if p.Bits() > p.Addr().BitLen() {
		return netip.Prefix{}, fmt.Errorf("invalid prefix length in %s", p)
	}
	if p.Addr().IsUnspecified() || p.Addr().IsMulticast() {
		return netip.Prefix{}, fmt.Errorf("%s cannot be an interface address", p)
	}
	return p, nil
}

func addressMessage(index uint32, p netip.Prefix) *rtnetlink.AddressMessage {
	ip := net.IP(p.Addr().AsSlice())
	msg := &rtnetlink.AddressMessage{
		Family:       unix.AF_INET6,
		PrefixLength: uint8(p.Bits()),
		Index:        index,
		Attributes:   &rtnetlink.AddressAttributes{Address: ip},
	}
	if p.Addr().Is4() {
		msg.Family = unix.AF_INET
		msg.Attributes.Local = ip
		if p.Bits() < 31 {
			msg.Attributes.Broadcast = broadcastAddr(p)
		}
	}
	return msg
}

// broadcastAddr is the all-ones host address of an IPv4 prefix.
func broadcastAddr(p netip.Prefix) net.IP {
	b := p.Masked().Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return net.IP(b[:])
}

// EnsureAddr adds address p (e.g. 10.99.0.10/24) to link name unless the
// link already has it with that prefix length.
func (m *Manager) EnsureAddr(ctx context.Context, name string, p netip.Prefix) error {
	p, err := validPrefix(p)
	if err != nil {
		return fmt.Errorf("add address to %s: %w", name, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	index, addrs, err := m.addresses(name)
	if err != nil {
		return fmt.Errorf("add %s to %s: %w", p, name, err)
	}
	for _, a := range addrs {
		if a.prefix == p {
			return nil
		}
	}
	err = m.conn.Address.New(addressMessage(index, p))
	if errors.Is(err, unix.EEXIST) {
		return nil // added concurrently: the state we want
	}
	if err != nil {
		return fmt.Errorf("add %s to %s: %w", p, name, err)
	}
	m.log.Info("address added", "link", name, "addr", p)
	return nil
}

// RemoveAddr removes address p from link name; an absent address is not
// an error.
func (m *Manager) RemoveAddr(ctx context.Context, name string, p netip.Prefix) error {
	p, err := validPrefix(p)
	if err != nil {
		return fmt.Errorf("remove address from %s: %w", name, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	index, addrs, err := m.addresses(name)
	if err != nil {
		return fmt.Errorf("remove %s from %s: %w", p, name, err)
	}
	found := false
	for _, a := range addrs {
		found = found || a.prefix == p
	}
	if !found {
		return nil
	}
	err = m.conn.Address.Delete(addressMessage(index, p))
	if errors.Is(err, unix.EADDRNOTAVAIL) {
		return nil // removed concurrently
	}
	if err != nil {
		return fmt.Errorf("remove %s from %s: %w", p, name, err)
	}
	m.log.Info("address removed", "link", name, "addr", p)
	return nil
}

// LinkLocal returns the IPv6 link-local (fe80::/10) address of link name
// once duplicate address detection has accepted it, polling until then or
// until ctx is done. The kernel creates the address only while the link is
// up with carrier.
func (m *Manager) LinkLocal(ctx context.Context, name string) (netip.Addr, error) {
	tick := time.NewTicker(linkPoll)
	defer tick.Stop()
	for {
		_, addrs, err := m.addresses(name)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("link-local address of %s: %w", name, err)
		}
		state := "none yet (is the link up with carrier and IPv6 enabled?)"
		for _, a := range addrs {
			if !a.prefix.Addr().Is6() || !a.prefix.Addr().IsLinkLocalUnicast() {
				continue
			}
			switch {
			case a.flags&unix.IFA_F_DADFAILED != 0:
				return netip.Addr{}, fmt.Errorf("link-local address %s of %s: duplicate address detected on the link", a.prefix.Addr(), name)
			case a.flags&unix.IFA_F_TENTATIVE != 0:
				state = fmt.Sprintf("%s still tentative (duplicate address detection running)", a.prefix.Addr())
			default:
				return a.prefix.Addr(), nil
			}
		}
		select {
		case <-ctx.Done():
			return netip.Addr{}, fmt.Errorf("link-local address of %s: %s: %w", name, state, ctx.Err())
		case <-tick.C:
		}
	}
}

// EnsureDefaultRoute makes gw the gateway of the default route of its
// address family in the main table.
func (m *Manager) EnsureDefaultRoute(ctx context.Context, gw netip.Addr) error {
	gw = gw.Unmap()
	if !gw.IsValid() || gw.IsUnspecified() || gw.IsMulticast() || gw.Zone() != "" {
		return fmt.Errorf("set default route: invalid gateway %q", gw)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	family := uint8(unix.AF_INET6)
	if gw.Is4() {
		family = unix.AF_INET
	}
	routes, err := m.conn.Route.List()
	if err != nil {
		return fmt.Errorf("set default route via %s: list routes: %w", gw, err)
	}
	for _, r := range routes {
		table := uint32(r.Table)
		if r.Attributes.Table != 0 {
			table = r.Attributes.Table
		}
		if r.Family != family || r.DstLength != 0 || table != unix.RT_TABLE_MAIN || r.Type != unix.RTN_UNICAST {
			continue
		}
		if cur, ok := netip.AddrFromSlice(r.Attributes.Gateway); ok && cur.Unmap() == gw {
			return nil
		}
	}
	err = m.conn.Route.Replace(&rtnetlink.RouteMessage{
		Family:   family,
		Table:    unix.RT_TABLE_MAIN,
		Protocol: unix.RTPROT_STATIC,
		Scope:    unix.RT_SCOPE_UNIVERSE,
		Type:     unix.RTN_UNICAST,
		Attributes: rtnetlink.RouteAttributes{
			Gateway: net.IP(gw.AsSlice()),
		},
	})
	if err != nil {
		return fmt.Errorf("set default route via %s: %w", gw, err)
	}
	m.log.Info("default route set", "gateway", gw)
	return nil
}
