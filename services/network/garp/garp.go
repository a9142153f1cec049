// Package garp builds and parses the Ethernet ARP frames used to announce
// that an IPv4 address has moved to another machine (gratuitous ARP).
package garp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// Frame layout: Ethernet II header followed by an ARP packet for
// Ethernet/IPv4 (RFC 826).
const (
	ethHeaderLen = 14
	arpLen       = 28
	// FrameLen is the length of every frame Marshal produces and the
	// minimum length Parse accepts (shorter frames cannot hold an ARP
	// packet; longer ones carry Ethernet padding, which Parse ignores).
	FrameLen = ethHeaderLen + arpLen

	etherTypeARP  = 0x0806
	etherTypeIPv4 = 0x0800
	hwTypeEther   = 1
)

// Operation is the ARP opcode.
type Operation uint16

// ARP opcodes (RFC 826).
const (
	OpRequest Operation = 1
	OpReply   Operation = 2
)

// Packet is an ARP packet for Ethernet/IPv4 with its Ethernet header.
type Packet struct {
	EthDst    net.HardwareAddr
	EthSrc    net.HardwareAddr
	Op        Operation
	SenderMAC net.HardwareAddr
	SenderIP  netip.Addr
	TargetMAC net.HardwareAddr
	TargetIP  netip.Addr
}

// Gratuitous reports whether p announces its sender address: a broadcast
// ARP request or reply whose sender and target IP are the same.
func (p Packet) Gratuitous() bool {
	return bytes.Equal(p.EthDst, broadcast()) &&
		(p.Op == OpRequest || p.Op == OpReply) &&
		p.SenderIP.IsValid() && p.SenderIP == p.TargetIP
}

// Announcement returns the gratuitous ARP request that announces ip at mac:
// broadcast, sender = target = ip, target hardware address zero (RFC 5227
// §3 "ARP Announcement").
func Announcement(mac net.HardwareAddr, ip netip.Addr) Packet {
	return Packet{
		EthDst:    broadcast(),
		EthSrc:    mac,
		Op:        OpRequest,
		SenderMAC: mac,
		SenderIP:  ip,
		TargetMAC: make(net.HardwareAddr, 6),
		TargetIP:  ip,
	}
}

func broadcast() net.HardwareAddr {
	return net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
}

// Frame returns the wire bytes of the gratuitous ARP request announcing ip
// at mac.
func Frame(mac net.HardwareAddr, ip netip.Addr) ([]byte, error) {
	return Announcement(mac, ip).MarshalBinary()
}

// MarshalBinary encodes p as an Ethernet frame of FrameLen bytes.
func (p Packet) MarshalBinary() ([]byte, error) {
	for _, m := range []struct {
		name string
		addr net.HardwareAddr
	}{{"ethernet destination", p.EthDst}, {"ethernet source", p.EthSrc}, {"sender hardware address", p.SenderMAC}, {"target hardware address", p.TargetMAC}} {
		if len(m.addr) != 6 {
			return nil, fmt.Errorf("arp frame: %s %q is not a 6-byte MAC address", m.name, m.addr)
		}
	}
	if !p.SenderIP.Is4() {
		return nil, fmt.Errorf("arp frame: sender address %s is not IPv4", p.SenderIP)
	}
	if !p.TargetIP.Is4() {
		return nil, fmt.Errorf("arp frame: target address %s is not IPv4", p.TargetIP)
	}
	b := make([]byte, 0, FrameLen)
	b = append(b, p.EthDst...)
	b = append(b, p.EthSrc...)
	b = binary.BigEndian.AppendUint16(b, etherTypeARP)
	b = binary.BigEndian.AppendUint16(b, hwTypeEther)
	b = binary.BigEndian.AppendUint16(b, etherTypeIPv4)
	b = append(b, 6, 4)
	b = binary.BigEndian.AppendUint16(b, uint16(p.Op))
	b = append(b, p.SenderMAC...)
	b = append(b, p.SenderIP.AsSlice()...)
	b = append(b, p.TargetMAC...)
	b = append(b, p.TargetIP.AsSlice()...)
	return b, nil
}

// ErrNotARP is returned by Parse for a well-formed Ethernet frame that does
// not carry an ARP packet, so callers capturing traffic can skip it.
var ErrNotARP = errors.New("not an ARP frame")

// Parse decodes an Ethernet frame carrying an ARP packet for Ethernet/IPv4.
// b is untrusted: every length and type field is checked, and the returned
// Packet does not alias b.
func Parse(b []byte) (Packet, error) {
	if len(b) < ethHeaderLen {
		return Packet{}, fmt.Errorf("parse arp: frame of %d bytes is shorter than an Ethernet header", len(b))
	}
	if et := binary.BigEndian.Uint16(b[12:14]); et != etherTypeARP {
		return Packet{}, fmt.Errorf("parse arp: ethertype %#04x: %w", et, ErrNotARP)
	}
	if len(b) < FrameLen {
		return Packet{}, fmt.Errorf("parse arp: frame of %d bytes is shorter than %d", len(b), FrameLen)
	}
	a := b[ethHeaderLen:]
	if ht := binary.BigEndian.Uint16(a[0:2]); ht != hwTypeEther {
		return Packet{}, fmt.Errorf("parse arp: hardware type %d is not Ethernet", ht)
	}
	if pt := binary.BigEndian.Uint16(a[2:4]); pt != etherTypeIPv4 {
		return Packet{}, fmt.Errorf("parse arp: protocol type %#04x is not IPv4", pt)
	}
	if a[4] != 6 || a[5] != 4 {
		return Packet{}, fmt.Errorf("parse arp: address lengths %d/%d, want 6/4", a[4], a[5])
	}
	return Packet{
		EthDst:    bytes.Clone(b[0:6]),
		EthSrc:    bytes.Clone(b[6:12]),
		Op:        Operation(binary.BigEndian.Uint16(a[6:8])),
		SenderMAC: bytes.Clone(a[8:14]),
		SenderIP:  netip.AddrFrom4([4]byte(a[14:18])),
		TargetMAC: bytes.Clone(a[18:24]),
		TargetIP:  netip.AddrFrom4([4]byte(a[24:28])),
	}, nil
}
