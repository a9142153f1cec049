package network

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"

	"github.com/dyad-ha/dyad/services/network/garp"
	"github.com/dyad-ha/dyad/services/network/ndp"
)

// arpInterval spaces repeated gratuitous ARPs so that one lost frame or a
// switch port still learning does not leave peers with a stale ARP entry.
const arpInterval = 500 * time.Millisecond

// naInterval is RetransTimer, the minimum spacing RFC 4861 §7.2.6 allows
// between repeated unsolicited neighbour advertisements.
const naInterval = time.Second

// AnnounceIPv4 broadcasts count gratuitous ARP requests for ip from link
// ifname, arpInterval apart, so hosts and switches on the segment learn that
// ip is now at this link's MAC address. It first waits, until ctx is done,
// for the link to be able to transmit (see waitTransmit): give ctx a
// deadline.
func (m *Manager) AnnounceIPv4(ctx context.Context, ifname string, ip netip.Addr, count int) error {
	ip = ip.Unmap()
	if !ip.Is4() {
		return fmt.Errorf("announce %s on %s: not an IPv4 address", ip, ifname)
	}
	broadcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	return m.announce(ctx, ifname, ip, count, unix.ETH_P_ARP, broadcast, arpInterval,
		func(mac net.HardwareAddr) ([]byte, error) { return garp.Frame(mac, ip) })
}

// AnnounceIPv6 sends count unsolicited neighbour advertisements for addr
// from link ifname, naInterval apart, so hosts and switches replace their
// cached link-layer address for addr with this link's. Like AnnounceIPv4 it
// first waits for the link to be able to transmit.
//
// The frame is built by package ndp and written to a raw socket rather than
// sent through an ICMPv6 socket: the kernel would pick the source address,
// which fails or is wrong while addr is still tentative right after it was
// added, exactly when a promoted PM announces.
func (m *Manager) AnnounceIPv6(ctx context.Context, ifname string, addr netip.Addr, count int) error {
	if err := ndp.CheckUnicast(addr); err != nil {
		return fmt.Errorf("announce on %s: %w", ifname, err)
	}
	allNodes := ndp.Announcement(nil, addr).EthDst
	return m.announce(ctx, ifname, addr, count, unix.ETH_P_IPV6, allNodes, naInterval,
		func(mac net.HardwareAddr) ([]byte, error) { return ndp.Frame(mac, addr) })
}

// announce waits until link ifname can transmit, then sends count frames
// built for its MAC address to dst, interval apart.
func (m *Manager) announce(ctx context.Context, ifname string, addr netip.Addr, count int, proto int,
	dst net.HardwareAddr, interval time.Duration, build func(mac net.HardwareAddr) ([]byte, error)) error {
	if count < 1 {
		return fmt.Errorf("announce %s on %s: count %d, want at least 1", addr, ifname, count)
	}
	l, err := m.waitTransmit(ctx, ifname)
	if err != nil {
		return fmt.Errorf("announce %s: %w", addr, err)
	}
	mac := l.Attributes.Address
	frame, err := build(mac)
	if err != nil {
		return fmt.Errorf("announce %s on %s: %w", addr, ifname, err)
	}
	conn, err := m.listenPacket(int(l.Index), ifname, proto)
	if err != nil {
		return fmt.Errorf("announce %s on %s: %w", addr, ifname, err)
	}
	defer conn.Close()

	to := &packet.Addr{HardwareAddr: dst}
	for i := range count {
		if i > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("announce %s on %s: sent %d of %d: %w", addr, ifname, i, count, ctx.Err())
			case <-time.After(interval):
			}
		}
		if _, err := conn.WriteTo(frame, to); err != nil {
			return fmt.Errorf("announce %s on %s: sent %d of %d: %w", addr, ifname, i, count, err)
		}
	}
	m.log.Info("announced address", "link", ifname, "addr", addr, "mac", mac.String(), "count", count)
	return nil
}

// waitTransmit polls until link name is up with carrier, the kernel's link
// watcher has seen the carrier (operational state up) and has activated the
// transmit queue. Until then the queue is the "noop" discipline that silently
// drops what is sent, so an announcement made right after the carrier came up
// would be lost; the watcher sets the operational state just before it
// replaces the queue, so both are checked. Links whose driver never reports
// carrier changes stay in state "unknown" and are active from the start.
func (m *Manager) waitTransmit(ctx context.Context, name string) (rtnetlink.LinkMessage, error) {
	tick := time.NewTicker(linkPoll)
	defer tick.Stop()
	for {
		l, err := m.lookup(name)
		if err != nil {
			return rtnetlink.LinkMessage{}, err
		}
		up, carrier := l.Flags&unix.IFF_UP != 0, l.Flags&unix.IFF_LOWER_UP != 0
		oper := l.Attributes.OperationalState
		active := l.Attributes.QueueDisc != "noop"
		if up && carrier && active && (oper == rtnetlink.OperStateUp || oper == rtnetlink.OperStateUnknown) {
			return l, nil
		}
		select {
		case <-ctx.Done():
			return rtnetlink.LinkMessage{}, fmt.Errorf("link %s cannot transmit (up %v, carrier %v, operational state %s, queue %q): %w",
				name, up, carrier, operStateName(oper), l.Attributes.QueueDisc, ctx.Err())
		case <-tick.C:
		}
	}
}

func operStateName(s rtnetlink.OperationalState) string {
	names := []string{"unknown", "notpresent", "down", "lowerlayerdown", "testing", "dormant", "up"}
	if int(s) < len(names) {
		return names[s]
	}
	return fmt.Sprintf("%d", s)
}

// listenPacket opens a raw AF_PACKET socket bound to link index in the
// Manager's namespace, receiving frames of EtherType proto.
func (m *Manager) listenPacket(index int, name string, proto int) (*packet.Conn, error) {
	ifi := &net.Interface{Index: index, Name: name}
	conn, err := inNetNS(m.netns, func() (*packet.Conn, error) {
		return packet.Listen(ifi, packet.Raw, proto, nil)
	})
	if err != nil {
		return nil, fmt.Errorf("open packet socket: %w", err)
	}
	return conn, nil
}
