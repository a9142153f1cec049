package garp

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"
)

func TestFrameBytes(t *testing.T) {
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0xd7, 0x01, 0x02}
	got, err := Frame(mac, netip.MustParseAddr("10.99.0.10"))
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // ethernet destination: broadcast
		0x52, 0x54, 0x00, 0xd7, 0x01, 0x02, // ethernet source
		0x08, 0x06, // ethertype ARP
		0x00, 0x01, // hardware type Ethernet
		0x08, 0x00, // protocol type IPv4
		0x06, 0x04, // address lengths
		0x00, 0x01, // request
		0x52, 0x54, 0x00, 0xd7, 0x01, 0x02, // sender MAC
		10, 99, 0, 10, // sender IP
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // target MAC
		10, 99, 0, 10, // target IP
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Frame:\n got %x\nwant %x", got, want)
	}
}

func TestFrameRejects(t *testing.T) {
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0xd7, 0x01, 0x02}
	tests := []struct {
		name string
		mac  net.HardwareAddr
		ip   netip.Addr
	}{
		{"IPv6 address", mac, netip.MustParseAddr("fe80::1")},
		{"IPv4-mapped IPv6 address", mac, netip.MustParseAddr("::ffff:10.0.0.1")},
		{"zero address", mac, netip.Addr{}},
		{"short MAC", mac[:4], netip.MustParseAddr("10.0.0.1")},
		{"EUI-64 hardware address", append(mac, 1, 2), netip.MustParseAddr("10.0.0.1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if b, err := Frame(tt.mac, tt.ip); err == nil {
				t.Fatalf("Frame(%v, %v) = %x, want error", tt.mac, tt.ip, b)
			}
		})
	}
}

func TestParse(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	garp, err := Frame(mac, netip.MustParseAddr("192.0.2.7"))
	if err != nil {
		t.Fatal(err)
	}
	reply := Packet{
		EthDst: net.HardwareAddr{0x02, 0, 0, 0, 0, 2}, EthSrc: mac, Op: OpReply,
		SenderMAC: mac, SenderIP: netip.MustParseAddr("192.0.2.7"),
		TargetMAC: net.HardwareAddr{0x02, 0, 0, 0, 0, 2}, TargetIP: netip.MustParseAddr("192.0.2.8"),
	}
	unicastReply, err := reply.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	padded := append(bytes.Clone(garp), make([]byte, 60-len(garp))...)
	withIPv4 := bytes.Clone(garp)
	withIPv4[12], withIPv4[13] = 0x08, 0x00
	badHW := bytes.Clone(garp)
	badHW[15] = 6
	badProto := bytes.Clone(garp)
	badProto[16] = 0x86
	badLens := bytes.Clone(garp)
	badLens[18] = 8

	tests := []struct {
		name       string
		in         []byte
		wantErr    bool
		notARP     bool
		gratuitous bool
		sender     string
	}{
		{name: "gratuitous request", in: garp, gratuitous: true, sender: "192.0.2.7"},
		{name: "ethernet padding ignored", in: padded, gratuitous: true, sender: "192.0.2.7"},
		{name: "unicast reply is not gratuitous", in: unicastReply, sender: "192.0.2.7"},
		{name: "empty", in: nil, wantErr: true},
		{name: "truncated header", in: garp[:13], wantErr: true},
		{name: "truncated arp", in: garp[:FrameLen-1], wantErr: true},
		{name: "IPv4 ethertype", in: withIPv4, wantErr: true, notARP: true},
		{name: "non-Ethernet hardware type", in: badHW, wantErr: true},
		{name: "non-IPv4 protocol type", in: badProto, wantErr: true},
		{name: "wrong address lengths", in: badLens, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Parse = %+v, want error", p)
				}
				if got := errors.Is(err, ErrNotARP); got != tt.notARP {
					t.Fatalf("errors.Is(%v, ErrNotARP) = %v, want %v", err, got, tt.notARP)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Gratuitous() != tt.gratuitous {
				t.Errorf("Gratuitous() = %v, want %v (%+v)", p.Gratuitous(), tt.gratuitous, p)
			}
			if p.SenderIP.String() != tt.sender {
				t.Errorf("SenderIP = %v, want %v", p.SenderIP, tt.sender)
			}
			if !bytes.Equal(p.SenderMAC, mac) {
				t.Errorf("SenderMAC = %v, want %v", p.SenderMAC, mac)
			}
		})
	}
}

func TestParseDoesNotAlias(t *testing.T) {
	b, err := Frame(net.HardwareAddr{0x02, 0, 0, 0, 0, 1}, netip.MustParseAddr("192.0.2.7"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 0
	}
	if p.SenderMAC.String() != "02:00:00:00:00:01" || p.EthDst.String() != "ff:ff:ff:ff:ff:ff" {
		t.Fatalf("Parse result changed with its input: %+v", p)
	}
}

// FuzzParse checks that Parse never panics on untrusted bytes and that
// whatever it accepts re-encodes to the same ARP frame (padding aside).
func FuzzParse(f *testing.F) {
	garp, err := Frame(net.HardwareAddr{0x52, 0x54, 0, 0xd7, 1, 2}, netip.MustParseAddr("10.99.0.10"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(garp)
	f.Add(append(bytes.Clone(garp), make([]byte, 18)...))
	f.Add(garp[:20])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			return
		}
		out, err := p.MarshalBinary()
		if err != nil {
			t.Fatalf("accepted frame %x does not re-encode: %v", b, err)
		}
		if !bytes.Equal(out, b[:FrameLen]) {
			t.Fatalf("round trip changed the frame:\n in %x\nout %x", b[:FrameLen], out)
		}
	})
}
