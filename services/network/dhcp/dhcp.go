// Package dhcp obtains, renews and releases the unit's management address
// from a DHCPv4 server, for sites that give the management IP by DHCP
// rather than statically.
//
// The management address belongs to the unit, not to a PM: whichever PM is
// primary holds it, and after a failover the other PM must get the same
// address. Every message therefore carries the unit's client identifier
// (option 61, RFC 2132 §9.14), which RFC 2131 §4.2 makes the key of the
// server's binding. The hardware address in chaddr, however, is that of the
// PM currently sending: it is where the server sends its replies, and a
// faked one would make switches learn the wrong port. Consequence: a server
// that keys its bindings on chaddr instead of option 61 (some appliances,
// or reservations written per MAC address) hands each PM a different
// address, so the management IP changes on failover; such a site must
// reserve the address for the client identifier, or use a static address.
//
// The sockets are those of the calling OS thread's network namespace; to
// work in another one, call these functions on a locked thread that has
// entered it. Every socket is opened before the function blocks, so the
// thread only needs to stay in the namespace for the call.
package dhcp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// Lease is a management address leased from a DHCP server.
type Lease struct {
	// Addr is the leased address with the prefix length of the subnet
	// mask the server gave.
	Addr netip.Prefix
	// Router is the first router the server listed; invalid if none.
	Router netip.Addr
	DNS    []netip.Addr
	// Expiry is when the lease runs out; the zero Time for an infinite
	// lease.
	Expiry time.Time
	// Server is the server identifier (option 54): renewals and releases
	// go to it.
	Server netip.Addr
}

// ErrNAK is returned (wrapped) when the server refuses a request with
// DHCPNAK: the lease is gone and the address must no longer be used; the
// caller starts over with Acquire.
var ErrNAK = errors.New("server refused with DHCPNAK")

// firstTimeout is the first retransmission timeout; nclient4 doubles it on
// every retry (RFC 2131 §4.1) until ctx is done.
const firstTimeout = 2 * time.Second

// infiniteLease is the lease time value meaning "never expires"
// (RFC 2131 §3.3).
const infiniteLease = 0xffffffff

// requestParams asks for the parameters a management address needs.
func requestParams() dhcpv4.Modifier {
	return dhcpv4.WithRequestedOptions(
		dhcpv4.OptionSubnetMask,
		dhcpv4.OptionRouter,
		dhcpv4.OptionDomainNameServer,
		dhcpv4.OptionIPAddressLeaseTime,
	)
}

// Acquire obtains a lease through link ifname (DISCOVER, OFFER, REQUEST,
// ACK), identifying as clientID (option 61: stable per unit, so both PMs
// get the same address; at least 2 bytes, conventionally a type byte then
// the identifier) with hostname (option 12; omitted when empty). It
// retransmits with back-off until ctx is done: give ctx a deadline.
func Acquire(ctx context.Context, ifname string, clientID []byte, hostname string) (Lease, error) {
	if err := checkClientID(clientID); err != nil {
		return Lease{}, fmt.Errorf("dhcp on %s: %w", ifname, err)
	}
	c, err := newClient(ifname)
	if err != nil {
		return Lease{}, err
	}
	defer c.Close()
	mods := []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClientIdentifier(clientID)),
		requestParams(),
	}
	if hostname != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(hostname)))
	}
	start := time.Now()
	nl, err := c.Request(ctx, mods...)
	var nak *nclient4.ErrNak
	if errors.As(err, &nak) {
		return Lease{}, fmt.Errorf("dhcp on %s: request for offered %s: %w", ifname, nak.Offer.YourIPAddr, ErrNAK)
	}
	if err != nil {
		return Lease{}, fmt.Errorf("dhcp on %s: no lease: %w", ifname, err)
	}
	l, err := leaseFrom(nl.ACK, start)
	if err != nil {
		return Lease{}, fmt.Errorf("dhcp on %s: %w", ifname, err)
	}
	return l, nil
}

// Renew extends lease l through link ifname with a REQUEST carrying l's
// address in ciaddr, unicast from that address to l.Server (RENEWING,
// RFC 2131 §4.3.2). l.Addr must therefore be configured on ifname, as it
// is on the primary that holds it, and nothing else may be bound to UDP
// port 68 there. (Acquire's raw socket, sending from 0.0.0.0, does not do
// for this: a Linux host drops a unicast datagram from 0.0.0.0 as martian
// before a server's UDP socket sees it.) It retransmits until ctx is done;
// a refusal returns an error wrapping ErrNAK, after which the caller
// starts over with Acquire.
func Renew(ctx context.Context, ifname string, l Lease, clientID []byte) (Lease, error) {
	if err := checkLease(l); err != nil {
		return Lease{}, fmt.Errorf("dhcp renew on %s: %w", ifname, err)
	}
	if err := checkClientID(clientID); err != nil {
		return Lease{}, fmt.Errorf("dhcp renew on %s: %w", ifname, err)
	}
	ifi, conn, err := listenFrom(ifname, l.Addr.Addr())
	if err != nil {
		return Lease{}, fmt.Errorf("dhcp renew on %s: %w", ifname, err)
	}
	c, err := nclient4.NewWithConn(conn, ifi.HardwareAddr, clientOpts()...)
	if err != nil {
		conn.Close()
		return Lease{}, fmt.Errorf("dhcp renew on %s: %w", ifname, err)
	}
	defer c.Close()
	req, err := dhcpv4.New(
		dhcpv4.WithHwAddr(c.InterfaceAddr()),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithClientIP(l.Addr.Addr().AsSlice()),
		dhcpv4.WithOption(dhcpv4.OptClientIdentifier(clientID)),
		dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(nclient4.MaxMessageSize)),
		requestParams(),
	)
	if err != nil {
		return Lease{}, fmt.Errorf("dhcp renew on %s: build request: %w", ifname, err)
	}
	server := net.IP(l.Server.AsSlice())
	start := time.Now()
	resp, err := c.SendAndRead(ctx, &net.UDPAddr{IP: server, Port: dhcpv4.ServerPort}, req, nclient4.IsAll(
		nclient4.IsCorrectServer(server),
		nclient4.IsMessageType(dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak)))
	if err != nil {
		return Lease{}, fmt.Errorf("dhcp renew of %s on %s with server %s: %w", l.Addr, ifname, l.Server, err)
	}
	if resp.MessageType() == dhcpv4.MessageTypeNak {
		return Lease{}, fmt.Errorf("dhcp renew of %s on %s: server %s: %w", l.Addr, ifname, l.Server, ErrNAK)
	}
	renewed, err := leaseFrom(resp, start)
	if err != nil {
		return Lease{}, fmt.Errorf("dhcp renew of %s on %s: %w", l.Addr, ifname, err)
	}
	if renewed.Addr.Addr() != l.Addr.Addr() {
		return Lease{}, fmt.Errorf("dhcp renew of %s on %s: server %s acknowledged %s instead", l.Addr, ifname, l.Server, renewed.Addr)
	}
	return renewed, nil
}

// Release gives lease l back to l.Server through link ifname (DHCPRELEASE,
// RFC 2131 §4.4.6), sent from l.Addr, which must still be configured on
// ifname. It is for when the unit stops using DHCP for its management
// address: a PM that is demoted must not release, since the binding is the
// unit's and the new primary is about to use it. Servers do not answer a
// release, so it is sent once; ctx bounds the send.
func Release(ctx context.Context, ifname string, l Lease, clientID []byte) error {
	if err := checkLease(l); err != nil {
		return fmt.Errorf("dhcp release on %s: %w", ifname, err)
	}
	if err := checkClientID(clientID); err != nil {
		return fmt.Errorf("dhcp release on %s: %w", ifname, err)
	}
	ifi, conn, err := listenFrom(ifname, l.Addr.Addr())
	if err != nil {
		return fmt.Errorf("dhcp release on %s: %w", ifname, err)
	}
	defer conn.Close()
	msg, err := dhcpv4.New(
		dhcpv4.WithHwAddr(ifi.HardwareAddr),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease),
		dhcpv4.WithClientIP(l.Addr.Addr().AsSlice()),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(l.Server.AsSlice())),
		dhcpv4.WithOption(dhcpv4.OptClientIdentifier(clientID)),
	)
	if err != nil {
		return fmt.Errorf("dhcp release on %s: build release: %w", ifname, err)
	}
	if d, ok := ctx.Deadline(); ok {
		if err := conn.SetWriteDeadline(d); err != nil {
			return fmt.Errorf("dhcp release on %s: %w", ifname, err)
		}
	}
	if _, err := conn.WriteTo(msg.ToBytes(), &net.UDPAddr{IP: l.Server.AsSlice(), Port: dhcpv4.ServerPort}); err != nil {
		return fmt.Errorf("dhcp release of %s on %s to server %s: %w", l.Addr, ifname, l.Server, err)
	}
	return nil
}

// clientOpts make nclient4 retransmit until the context is done (negative
// retry count), so the caller's deadline, not a library default, bounds
// the exchange.
func clientOpts() []nclient4.ClientOpt {
	return []nclient4.ClientOpt{nclient4.WithTimeout(firstTimeout), nclient4.WithRetry(-1)}
}

// newClient returns a client sending from 0.0.0.0 through a raw socket on
// ifname, for when the link has no address yet.
func newClient(ifname string) (*nclient4.Client, error) {
	c, err := nclient4.New(ifname, clientOpts()...)
	if err != nil {
		return nil, fmt.Errorf("dhcp on %s: %w", ifname, err)
	}
	return c, nil
}

// listenFrom opens a UDP socket on the client port of link ifname whose
// messages leave from addr, and returns the link too. It listens on
// 0.0.0.0 because servers broadcast their DHCPNAKs (RFC 2131 §4.1), and
// pins the source per message because the link usually also holds the
// PM's own address in the same subnet, which the kernel would pick.
func listenFrom(ifname string, addr netip.Addr) (*net.Interface, net.PacketConn, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, nil, err
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, nil, fmt.Errorf("addresses of %s: %w", ifname, err)
	}
	if !slices.ContainsFunc(addrs, func(a net.Addr) bool {
		n, ok := a.(*net.IPNet)
		return ok && n.IP.Equal(addr.AsSlice())
	}) {
		return nil, nil, fmt.Errorf("leased address %s is not configured on %s", addr, ifname)
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = unix.BindToDevice(int(fd), ifname) }); err != nil {
			return err
		}
		return serr
	}}
	// Listening does not block, so it needs no context.
	pc, err := lc.ListenPacket(context.Background(), "udp4", fmt.Sprintf("0.0.0.0:%d", dhcpv4.ClientPort))
	if err != nil {
		return nil, nil, fmt.Errorf("listen on the DHCP client port: %w", err)
	}
	src := &ipv4.ControlMessage{Src: addr.AsSlice()}
	return ifi, fromConn{UDPConn: pc.(*net.UDPConn), oob: src.Marshal()}, nil
}

// fromConn sends every datagram from src (IP_PKTINFO).
type fromConn struct {
	*net.UDPConn
	oob []byte
}

func (c fromConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("send to %v: not a UDP address", addr)
	}
	n, _, err := c.WriteMsgUDP(b, c.oob, ua)
	return n, err
}

func checkClientID(id []byte) error {
	if len(id) < 2 || len(id) > 255 {
		return fmt.Errorf("client identifier of %d bytes, want 2 to 255 (RFC 2132 §9.14)", len(id))
	}
	return nil
}

func checkLease(l Lease) error {
	if !l.Addr.IsValid() || !l.Addr.Addr().Is4() {
		return fmt.Errorf("lease address %s is not IPv4", l.Addr)
	}
	if !l.Server.Is4() {
		return fmt.Errorf("lease of %s has no IPv4 server identifier", l.Addr)
	}
	return nil
}

// leaseFrom reads the lease out of an ACK received for a request sent at
// sent: RFC 2131 §4.4.1 counts the lease time from the request, so a slow
// answer shortens the lease rather than extending it.
func leaseFrom(ack *dhcpv4.DHCPv4, sent time.Time) (Lease, error) {
	ip, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || ip.IsUnspecified() {
		return Lease{}, fmt.Errorf("ACK from %s assigns no address", ack.ServerIdentifier())
	}
	mask := ack.SubnetMask()
	ones, bits := mask.Size()
	if bits != 32 {
		return Lease{}, fmt.Errorf("ACK for %s has no valid subnet mask (%v)", ip, mask)
	}
	server, ok := netip.AddrFromSlice(ack.ServerIdentifier().To4())
	if !ok {
		return Lease{}, fmt.Errorf("ACK for %s has no server identifier", ip)
	}
	l := Lease{Addr: netip.PrefixFrom(ip, ones), Server: server}
	lt := ack.Options.Get(dhcpv4.OptionIPAddressLeaseTime)
	if len(lt) != 4 {
		return Lease{}, fmt.Errorf("ACK for %s from %s has no lease time", ip, server)
	}
	if secs := binary.BigEndian.Uint32(lt); secs != infiniteLease {
		l.Expiry = sent.Add(time.Duration(secs) * time.Second)
	}
	if routers := ack.Router(); len(routers) > 0 {
		if r, ok := netip.AddrFromSlice(routers[0].To4()); ok {
			l.Router = r
		}
	}
	for _, d := range ack.DNS() {
		if a, ok := netip.AddrFromSlice(d.To4()); ok {
			l.DNS = append(l.DNS, a)
		}
	}
	return l, nil
}
