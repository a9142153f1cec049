package ndp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"testing"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

var testMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0xd7, 0x01, 0x02}

func TestFrameBytes(t *testing.T) {
	addr := netip.MustParseAddr("2001:db8::10")
	got, err := Frame(testMAC, addr)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{
		0x33, 0x33, 0x00, 0x00, 0x00, 0x01, // ethernet destination: all-nodes multicast
		0x52, 0x54, 0x00, 0xd7, 0x01, 0x02, // ethernet source
		0x86, 0xdd, // ethertype IPv6
		0x60, 0x00, 0x00, 0x00, // version 6, traffic class, flow label
		0x00, 0x20, // payload length 32
		58, 255, // next header ICMPv6, hop limit
		0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, // source: the announced address
		0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // destination ff02::1
		136, 0, // type neighbour advertisement, code 0
		0x00, 0x00, // checksum, checked separately below
		0x20, 0, 0, 0, // flags: Override only
		0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, // target
		2, 1, // option Target Link-Layer Address, 8 bytes
		0x52, 0x54, 0x00, 0xd7, 0x01, 0x02,
	}
	if len(got) != FrameLen {
		t.Fatalf("len(Frame) = %d, want FrameLen %d", len(got), FrameLen)
	}
	const csum = 56
	gotSum := binary.BigEndian.Uint16(got[csum : csum+2])
	zeroed := bytes.Clone(got)
	zeroed[csum], zeroed[csum+1] = 0, 0
	if !bytes.Equal(zeroed, want) {
		t.Fatalf("Frame (checksum zeroed):\n got %x\nwant %x", zeroed, want)
	}

	// Cross-check the checksum with an independent implementation.
	body := bytes.Clone(want[csum+2:])
	m := icmp.Message{Type: ipv6.ICMPTypeNeighborAdvertisement, Body: &icmp.RawBody{Data: body}}
	ref, err := m.Marshal(icmp.IPv6PseudoHeader(addr.AsSlice(), AllNodes().AsSlice()))
	if err != nil {
		t.Fatal(err)
	}
	if wantSum := binary.BigEndian.Uint16(ref[2:4]); gotSum != wantSum {
		t.Fatalf("checksum = %#04x, want %#04x (golang.org/x/net/icmp)", gotSum, wantSum)
	}
}

func TestFrameRejects(t *testing.T) {
	tests := []struct {
		name string
		mac  net.HardwareAddr
		addr netip.Addr
	}{
		{"IPv4 address", testMAC, netip.MustParseAddr("10.0.0.1")},
		{"IPv4-mapped IPv6 address", testMAC, netip.MustParseAddr("::ffff:10.0.0.1")},
		{"unspecified address", testMAC, netip.IPv6Unspecified()},
		{"multicast address", testMAC, netip.MustParseAddr("ff02::1")},
		{"zone", testMAC, netip.MustParseAddr("fe80::1%eth0")},
		{"zero address", testMAC, netip.Addr{}},
		{"short MAC", testMAC[:4], netip.MustParseAddr("2001:db8::1")},
		{"EUI-64 hardware address", append(bytes.Clone(testMAC), 1, 2), netip.MustParseAddr("2001:db8::1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if b, err := Frame(tt.mac, tt.addr); err == nil {
				t.Fatalf("Frame(%v, %v) = %x, want error", tt.mac, tt.addr, b)
			}
		})
	}
}

// mutate returns a copy of frame changed by fn; when fixSum is set it then
// recomputes the ICMPv6 checksum, so the case tests the check it targets
// rather than the checksum.
func mutate(t *testing.T, frame []byte, fixSum bool, fn func(b []byte)) []byte {
	t.Helper()
	b := bytes.Clone(frame)
	fn(b)
	if fixSum {
		ip := b[ethHeaderLen:]
		msg := ip[ipv6HeaderLen : ipv6HeaderLen+int(binary.BigEndian.Uint16(ip[4:6]))]
		msg[2], msg[3] = 0, 0
		binary.BigEndian.PutUint16(msg[2:4], checksum(netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40])), msg))
	}
	return b
}

func TestParse(t *testing.T) {
	addr := netip.MustParseAddr("2001:db8::10")
	frame, err := Frame(testMAC, addr)
	if err != nil {
		t.Fatal(err)
	}
	const flags, target, opt = 58, 62, 78
	solicited := Advertisement{
		EthDst: net.HardwareAddr{0x02, 0, 0, 0, 0, 2}, EthSrc: testMAC,
		Src: addr, Dst: netip.MustParseAddr("fe80::2"),
		Router: true, Solicited: true, Target: addr,
	}
	solicitedFrame, err := solicited.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	// An unknown option before the link-layer address must be skipped.
	withNonce := bytes.Clone(frame)
	withNonce = append(withNonce[:opt], append([]byte{14, 1, 1, 2, 3, 4, 5, 6}, withNonce[opt:]...)...)
	binary.BigEndian.PutUint16(withNonce[ethHeaderLen+4:], 40)
	withNonce = mutate(t, withNonce, true, func(b []byte) {})

	tests := []struct {
		name    string
		in      []byte
		wantErr bool
		notNA   bool
		want    Advertisement
	}{
		{name: "unsolicited announcement", in: frame, want: Announcement(testMAC, addr)},
		{name: "ethernet padding ignored", in: append(bytes.Clone(frame), 0, 0, 0, 0), want: Announcement(testMAC, addr)},
		{name: "unknown option skipped", in: withNonce, want: Announcement(testMAC, addr)},
		{name: "solicited without link-layer option", in: solicitedFrame, want: solicited},
		{name: "empty", in: nil, wantErr: true},
		{name: "truncated ethernet header", in: frame[:13], wantErr: true},
		{name: "IPv4 ethertype", in: mutate(t, frame, false, func(b []byte) { b[12], b[13] = 0x08, 0x00 }), wantErr: true, notNA: true},
		{name: "truncated IPv6 header", in: frame[:ethHeaderLen+39], wantErr: true},
		{name: "IP version 4", in: mutate(t, frame, false, func(b []byte) { b[14] = 0x40 }), wantErr: true},
		{name: "UDP", in: mutate(t, frame, false, func(b []byte) { b[20] = 17 }), wantErr: true, notNA: true},
		{name: "payload longer than frame", in: frame[:FrameLen-1], wantErr: true},
		{name: "neighbour solicitation", in: mutate(t, frame, true, func(b []byte) { b[54] = 135 }), wantErr: true, notNA: true},
		{name: "forwarded (hop limit 64)", in: mutate(t, frame, true, func(b []byte) { b[21] = 64 }), wantErr: true},
		{name: "bad checksum", in: mutate(t, frame, false, func(b []byte) { b[target] ^= 1 }), wantErr: true},
		{name: "nonzero code", in: mutate(t, frame, true, func(b []byte) { b[55] = 1 }), wantErr: true},
		{name: "multicast target", in: mutate(t, frame, true, func(b []byte) { b[target] = 0xff }), wantErr: true},
		{name: "solicited to multicast", in: mutate(t, frame, true, func(b []byte) { b[flags] |= flagSolicited }), wantErr: true},
		{name: "message shorter than 24 bytes", in: mutate(t, frame, true, func(b []byte) { binary.BigEndian.PutUint16(b[18:], 23) }), wantErr: true},
		{name: "zero-length option", in: mutate(t, frame, true, func(b []byte) { b[opt+1] = 0 }), wantErr: true},
		{name: "option overruns message", in: mutate(t, frame, true, func(b []byte) { b[opt+1] = 2 }), wantErr: true},
		{name: "truncated option", in: mutate(t, frame, true, func(b []byte) { binary.BigEndian.PutUint16(b[18:], 25) }), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := Parse(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Parse = %+v, want error", a)
				}
				t.Log(err)
				if got := errors.Is(err, ErrNotNA); got != tt.notNA {
					t.Fatalf("errors.Is(%v, ErrNotNA) = %v, want %v", err, got, tt.notNA)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(a, tt.want) {
				t.Fatalf("Parse:\n got %+v\nwant %+v", a, tt.want)
			}
			if a.Unsolicited() != tt.want.Unsolicited() {
				t.Fatalf("Unsolicited() = %v", a.Unsolicited())
			}
		})
	}
}

func TestUnsolicited(t *testing.T) {
	a := Announcement(testMAC, netip.MustParseAddr("2001:db8::1"))
	if !a.Unsolicited() {
		t.Fatalf("Announcement %+v is not unsolicited", a)
	}
	for name, change := range map[string]func(*Advertisement){
		"solicited":          func(a *Advertisement) { a.Solicited = true },
		"no override":        func(a *Advertisement) { a.Override = false },
		"unicast":            func(a *Advertisement) { a.Dst = netip.MustParseAddr("fe80::1") },
		"no link-layer addr": func(a *Advertisement) { a.TargetLinkAddr = nil },
	} {
		b := a
		change(&b)
		if b.Unsolicited() {
			t.Errorf("%s: Unsolicited() = true for %+v", name, b)
		}
	}
}

func TestParseDoesNotAlias(t *testing.T) {
	b, err := Frame(testMAC, netip.MustParseAddr("2001:db8::7"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	clear(b)
	if a.EthSrc.String() != testMAC.String() || a.TargetLinkAddr.String() != testMAC.String() || a.EthDst.String() != "33:33:00:00:00:01" {
		t.Fatalf("Parse result changed with its input: %+v", a)
	}
}

// FuzzParse checks that Parse never panics on untrusted bytes and that
// whatever it accepts re-encodes to a frame that parses to the same
// advertisement.
func FuzzParse(f *testing.F) {
	frame, err := Frame(testMAC, netip.MustParseAddr("2001:db8::10"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(frame)
	f.Add(append(bytes.Clone(frame), 0, 0))
	f.Add(frame[:60])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := Parse(b)
		if err != nil {
			return
		}
		out, err := a.MarshalBinary()
		if err != nil {
			t.Fatalf("accepted frame %x does not re-encode: %v", b, err)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("re-encoded frame %x does not parse: %v", out, err)
		}
		if !reflect.DeepEqual(a, again) {
			t.Fatalf("round trip changed the advertisement:\n in %+v\nout %+v", a, again)
		}
	})
}
