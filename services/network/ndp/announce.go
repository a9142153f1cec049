package ndp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// announceInterval is RetransTimer, the minimum spacing RFC 4861 §7.2.6
// allows between repeated unsolicited advertisements; repeating covers a
// lost frame or a switch port still learning.
const announceInterval = time.Second

// linkPoll is how often Announce looks at the link while waiting for it to
// be able to transmit.
const linkPoll = 50 * time.Millisecond

// Announce sends count unsolicited neighbour advertisements for addr from
// link ifname, announceInterval apart, so hosts and switches on the segment
// replace their cached link-layer address for addr with the link's MAC
// address. It first waits, until ctx is done, for the link to be up and
// operational (before that its transmit queue silently drops frames): give
// ctx a deadline.
//
// The frame is built here and written to a raw AF_PACKET socket rather than
// sent through an ICMPv6 socket: the kernel would then pick the source
// address, which fails or is wrong while the link has no usable link-local
// address or addr is still tentative right after it was added, which is
// exactly when a promoted PM announces. Building the frame ourselves also
// keeps the same tested builder/parser pair as garp.
//
// The link and socket are those of the calling OS thread's network
// namespace; to announce in another one, call Announce on a locked thread
// that has entered it (the socket is opened before Announce returns to any
// other goroutine, so the thread only needs to stay there for the call).
func Announce(ctx context.Context, ifname string, addr netip.Addr, count int) error {
	if err := checkUnicast(addr); err != nil {
		return fmt.Errorf("announce on %s: %w", ifname, err)
	}
	if count < 1 {
		return fmt.Errorf("announce %s on %s: count %d, want at least 1", addr, ifname, count)
	}
	ifi, err := waitTransmit(ctx, ifname)
	if err != nil {
		return fmt.Errorf("announce %s: %w", addr, err)
	}
	frame, err := Frame(ifi.HardwareAddr, addr)
	if err != nil {
		return fmt.Errorf("announce %s on %s: %w", addr, ifname, err)
	}
	conn, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_IPV6, nil)
	if err != nil {
		return fmt.Errorf("announce %s on %s: open packet socket: %w", addr, ifname, err)
	}
	defer conn.Close()

	dst := &packet.Addr{HardwareAddr: multicastMAC(AllNodes())}
	for i := range count {
		if i > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("announce %s on %s: sent %d of %d: %w", addr, ifname, i, count, ctx.Err())
			case <-time.After(announceInterval):
			}
		}
		if _, err := conn.WriteTo(frame, dst); err != nil {
			return fmt.Errorf("announce %s on %s: sent %d of %d: %w", addr, ifname, i, count, err)
		}
	}
	return nil
}

// waitTransmit polls until link name is up and operational (IFF_RUNNING:
// operational state up or unknown) and its transmit queue is active: the
// kernel's link watcher sets the operational state just before it replaces
// the "noop" queue that drops everything sent.
func waitTransmit(ctx context.Context, name string) (*net.Interface, error) {
	tick := time.NewTicker(linkPoll)
	defer tick.Stop()
	conn, err := rtnetlink.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("open route netlink socket: %w", err)
	}
	defer conn.Close()
	for {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return nil, fmt.Errorf("link %s: %w", name, err)
		}
		if ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagRunning != 0 {
			l, err := conn.Link.Get(uint32(ifi.Index))
			if err != nil {
				return nil, fmt.Errorf("link %s: %w", name, err)
			}
			if l.Attributes != nil && l.Attributes.QueueDisc != "noop" {
				return ifi, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("link %s cannot transmit (flags %v): %w", name, ifi.Flags, ctx.Err())
		case <-tick.C:
		}
	}
}
