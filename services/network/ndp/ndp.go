// Package ndp builds, parses and sends the IPv6 neighbour advertisements
// used to announce that an address has moved to another machine (RFC 4861
// §7.2.6 "unsolicited neighbor advertisement"), the IPv6 counterpart of a
// gratuitous ARP.
package ndp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// Frame layout: Ethernet II header, IPv6 header without extension headers,
// ICMPv6 neighbour advertisement (RFC 4861 §4.4) and, when the link-layer
// address is known, one Target Link-Layer Address option (§4.6.1).
const (
	ethHeaderLen  = 14
	ipv6HeaderLen = 40
	naLen         = 24 // type, code, checksum, flags+reserved, target
	tllaOptLen    = 8  // type, length (in units of 8 bytes), 6-byte MAC

	// FrameLen is the length of every frame Frame produces.
	FrameLen = ethHeaderLen + ipv6HeaderLen + naLen + tllaOptLen

	etherTypeIPv6 = 0x86dd
	protoICMPv6   = 58
	typeNA        = 136
	optTargetLLA  = 2

	// hopLimit is the only value receivers accept: it proves the message
	// was not forwarded by a router (RFC 4861 §7.1.2).
	hopLimit = 255

	flagRouter    = 0x80
	flagSolicited = 0x40
	flagOverride  = 0x20
)

// AllNodes returns the link-local all-nodes multicast group (ff02::1) that
// unsolicited advertisements are sent to.
func AllNodes() netip.Addr {
	return netip.AddrFrom16([16]byte{0: 0xff, 1: 0x02, 15: 0x01})
}

// Advertisement is an ICMPv6 neighbour advertisement with the Ethernet and
// IPv6 headers that carry it.
type Advertisement struct {
	EthDst net.HardwareAddr
	EthSrc net.HardwareAddr
	Src    netip.Addr
	Dst    netip.Addr

	Router    bool
	Solicited bool
	// Override tells receivers to replace a cached link-layer address
	// instead of keeping it, which is what moves traffic to the new holder.
	Override bool
	Target   netip.Addr
	// TargetLinkAddr is the Target Link-Layer Address option; nil when the
	// message carries none.
	TargetLinkAddr net.HardwareAddr
}

// Unsolicited reports whether a announces its target to every node: sent
// to ff02::1, not in answer to a solicitation, overriding cached entries
// and carrying the link-layer address to cache.
func (a Advertisement) Unsolicited() bool {
	return a.Dst == AllNodes() && !a.Solicited && a.Override && a.TargetLinkAddr != nil
}

// Announcement returns the unsolicited neighbour advertisement that
// announces addr at mac. Like Linux's own (ndisc_send_unsol_na) it is sent
// from addr itself, so it needs no link-local address on the link and works
// while addr is still tentative (duplicate address detection running).
func Announcement(mac net.HardwareAddr, addr netip.Addr) Advertisement {
	return Advertisement{
		EthDst:         multicastMAC(AllNodes()),
		EthSrc:         mac,
		Src:            addr,
		Dst:            AllNodes(),
		Override:       true,
		Target:         addr,
		TargetLinkAddr: mac,
	}
}

// multicastMAC maps an IPv6 multicast group to its Ethernet address
// (RFC 2464 §7).
func multicastMAC(group netip.Addr) net.HardwareAddr {
	a := group.As16()
	return net.HardwareAddr{0x33, 0x33, a[12], a[13], a[14], a[15]}
}

// Frame returns the wire bytes of the unsolicited neighbour advertisement
// announcing addr at mac.
func Frame(mac net.HardwareAddr, addr netip.Addr) ([]byte, error) {
	if err := CheckUnicast(addr); err != nil {
		return nil, fmt.Errorf("neighbour advertisement: %w", err)
	}
	return Announcement(mac, addr).MarshalBinary()
}

// checkUnicast accepts the addresses a link can hold and announce.
func CheckUnicast(addr netip.Addr) error {
	if !addr.Is6() || addr.Is4In6() || addr.IsUnspecified() || addr.IsMulticast() {
		return fmt.Errorf("%s is not an IPv6 unicast address", addr)
	}
	return nil
}

// MarshalBinary encodes a as an Ethernet frame with hop limit 255 and a
// valid ICMPv6 checksum.
func (a Advertisement) MarshalBinary() ([]byte, error) {
	for _, m := range []struct {
		name string
		addr net.HardwareAddr
	}{{"ethernet destination", a.EthDst}, {"ethernet source", a.EthSrc}} {
		if len(m.addr) != 6 {
			return nil, fmt.Errorf("neighbour advertisement: %s %q is not a 6-byte MAC address", m.name, m.addr)
		}
	}
	if a.TargetLinkAddr != nil && len(a.TargetLinkAddr) != 6 {
		return nil, fmt.Errorf("neighbour advertisement: target link-layer address %q is not a 6-byte MAC address", a.TargetLinkAddr)
	}
	for _, ip := range []struct {
		name string
		addr netip.Addr
	}{{"source", a.Src}, {"destination", a.Dst}, {"target", a.Target}} {
		if !ip.addr.Is6() || ip.addr.Zone() != "" {
			return nil, fmt.Errorf("neighbour advertisement: %s address %s is not an IPv6 address without zone", ip.name, ip.addr)
		}
	}
	if a.Target.IsMulticast() {
		return nil, fmt.Errorf("neighbour advertisement: target %s is a multicast address", a.Target)
	}

	icmp := make([]byte, 0, naLen+tllaOptLen)
	icmp = append(icmp, typeNA, 0, 0, 0) // checksum filled in below
	var flags byte
	if a.Router {
		flags |= flagRouter
	}
	if a.Solicited {
		flags |= flagSolicited
	}
	if a.Override {
		flags |= flagOverride
	}
	icmp = append(icmp, flags, 0, 0, 0)
	icmp = append(icmp, a.Target.AsSlice()...)
	if a.TargetLinkAddr != nil {
		icmp = append(icmp, optTargetLLA, tllaOptLen/8)
		icmp = append(icmp, a.TargetLinkAddr...)
	}
	binary.BigEndian.PutUint16(icmp[2:4], checksum(a.Src, a.Dst, icmp))

	b := make([]byte, 0, ethHeaderLen+ipv6HeaderLen+len(icmp))
	b = append(b, a.EthDst...)
	b = append(b, a.EthSrc...)
	b = binary.BigEndian.AppendUint16(b, etherTypeIPv6)
	b = append(b, 0x60, 0, 0, 0) // version 6, traffic class 0, flow label 0
	b = binary.BigEndian.AppendUint16(b, uint16(len(icmp)))
	b = append(b, protoICMPv6, hopLimit)
	b = append(b, a.Src.AsSlice()...)
	b = append(b, a.Dst.AsSlice()...)
	return append(b, icmp...), nil
}

// checksum is the ICMPv6 checksum of msg (whose checksum field must be
// zero) over the IPv6 pseudo-header of RFC 8200 §8.1.
func checksum(src, dst netip.Addr, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for len(b) >= 2 {
			sum += uint32(binary.BigEndian.Uint16(b))
			b = b[2:]
		}
		if len(b) == 1 {
			sum += uint32(b[0]) << 8
		}
	}
	s, d := src.As16(), dst.As16()
	add(s[:])
	add(d[:])
	add(binary.BigEndian.AppendUint32(nil, uint32(len(msg))))
	add([]byte{0, 0, 0, protoICMPv6})
	add(msg)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// ErrNotNA is returned by Parse for a well-formed frame that does not carry
// an ICMPv6 neighbour advertisement, so callers capturing traffic can skip
// it.
var ErrNotNA = errors.New("not a neighbour advertisement")

// Parse decodes an Ethernet frame carrying an IPv6 neighbour advertisement
// and applies the validity checks of RFC 4861 §7.1.2 (hop limit 255,
// checksum, code 0, length, non-multicast target, no Solicited flag on a
// multicast destination, well-formed options). b is untrusted; the returned
// Advertisement does not alias it. Bytes after the IPv6 payload (Ethernet
// padding) are ignored, and so are options other than Target Link-Layer
// Address. Messages behind IPv6 extension headers are reported as
// ErrNotNA: receivers would drop them anyway.
func Parse(b []byte) (Advertisement, error) {
	if len(b) < ethHeaderLen {
		return Advertisement{}, fmt.Errorf("parse neighbour advertisement: frame of %d bytes is shorter than an Ethernet header", len(b))
	}
	if et := binary.BigEndian.Uint16(b[12:14]); et != etherTypeIPv6 {
		return Advertisement{}, fmt.Errorf("parse neighbour advertisement: ethertype %#04x: %w", et, ErrNotNA)
	}
	ip := b[ethHeaderLen:]
	if len(ip) < ipv6HeaderLen {
		return Advertisement{}, fmt.Errorf("parse neighbour advertisement: IPv6 header truncated to %d bytes", len(ip))
	}
	if v := ip[0] >> 4; v != 6 {
		return Advertisement{}, fmt.Errorf("parse neighbour advertisement: IP version %d in an IPv6 frame", v)
	}
	if nh := ip[6]; nh != protoICMPv6 {
		return Advertisement{}, fmt.Errorf("parse neighbour advertisement: next header %d: %w", nh, ErrNotNA)
	}
	plen := int(binary.BigEndian.Uint16(ip[4:6]))
	if len(ip)-ipv6HeaderLen < plen {
		return Advertisement{}, fmt.Errorf("parse neighbour advertisement: payload length %d exceeds the %d bytes captured", plen, len(ip)-ipv6HeaderLen)
	}
	msg := ip[ipv6HeaderLen : ipv6HeaderLen+plen]
	if len(msg) < 1 {
		return Advertisement{}, fmt.Errorf("parse neighbour advertisement: empty ICMPv6 message")
	}
	if msg[0] != typeNA {
		return Advertisement{}, fmt.Errorf("parse neighbour advertisement: ICMPv6 type %d: %w", msg[0], ErrNotNA)
	}
	if len(msg) < naLen {
		return Advertisement{}, fmt.Errorf("parse neighbour advertisement: message of %d bytes is shorter than %d", len(msg), naLen)
	}
	if ip[7] != hopLimit {
		return Advertisement{}, fmt.Errorf("parse neighbour advertisement: hop limit %d, want %d (forwarded by a router)", ip[7], hopLimit)
	}
	if msg[1] != 0 {
		return Advertisement{}, fmt.Errorf("parse neighbour advertisement: ICMPv6 code %d, want 0", msg[1])
	}
	src := netip.AddrFrom16([16]byte(ip[8:24]))
	dst := netip.AddrFrom16([16]byte(ip[24:40]))
	// Summing a message that includes its own correct checksum yields 0.
	if c := checksum(src, dst, msg); c != 0 {
		return Advertisement{}, fmt.Errorf("parse neighbour advertisement: bad ICMPv6 checksum %#04x", binary.BigEndian.Uint16(msg[2:4]))
	}
	a := Advertisement{
		EthDst:    bytes.Clone(b[0:6]),
		EthSrc:    bytes.Clone(b[6:12]),
		Src:       src,
		Dst:       dst,
		Router:    msg[4]&flagRouter != 0,
		Solicited: msg[4]&flagSolicited != 0,
		Override:  msg[4]&flagOverride != 0,
		Target:    netip.AddrFrom16([16]byte(msg[8:24])),
	}
	if a.Target.IsMulticast() {
		return Advertisement{}, fmt.Errorf("parse neighbour advertisement: target %s is a multicast address", a.Target)
	}
	if a.Solicited && dst.IsMulticast() {
		return Advertisement{}, fmt.Errorf("parse neighbour advertisement: solicited advertisement sent to multicast %s", dst)
	}
	for opts := msg[naLen:]; len(opts) > 0; {
		if len(opts) < 2 {
			return Advertisement{}, fmt.Errorf("parse neighbour advertisement: option truncated to %d byte", len(opts))
		}
		n := int(opts[1]) * 8
		if n == 0 {
			return Advertisement{}, fmt.Errorf("parse neighbour advertisement: option %d has length 0", opts[0])
		}
		if n > len(opts) {
			return Advertisement{}, fmt.Errorf("parse neighbour advertisement: option %d of %d bytes overruns the message", opts[0], n)
		}
		if opts[0] == optTargetLLA && a.TargetLinkAddr == nil {
			if n != tllaOptLen {
				return Advertisement{}, fmt.Errorf("parse neighbour advertisement: target link-layer address option of %d bytes is not an Ethernet address", n)
			}
			a.TargetLinkAddr = bytes.Clone(opts[2:8])
		}
		opts = opts[n:]
	}
	return a, nil
}
