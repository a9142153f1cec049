package probe

import (
	"bytes"
	"errors"
	"net"
	"reflect"
	"strings"
	"testing"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

func testProbe() Probe {
	return Probe{
		Unit:      "lab",
		Node:      2,
		Port:      "biz1",
		MAC:       net.HardwareAddr{0x52, 0x54, 0x00, 0xd7, 0x02, 0x03},
		SpeedMbps: 10000,
		BootID:    "5b1c7d4e-2f0a-4c61-9d3e-7a8b9c0d1e2f",
		Seq:       42,
	}
}

func TestFrameLayout(t *testing.T) {
	p := testProbe()
	p.BootID = "b"
	got, err := p.Frame(testKey)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{
		0x03, 0x44, 0x59, 0x41, 0x44, 0x00, // destination: Group
		0x52, 0x54, 0x00, 0xd7, 0x02, 0x03, // source: the port's MAC
		0x88, 0xb5, // ethertype
		'D', 'Y', 'P', 'R', '1',
		2,                      // node
		0x00, 0x00, 0x27, 0x10, // 10000 Mb/s
		0, 0, 0, 0, 0, 0, 0, 42, // seq
		0x52, 0x54, 0x00, 0xd7, 0x02, 0x03, // MAC
		3, 'l', 'a', 'b',
		4, 'b', 'i', 'z', '1',
		1, 'b',
	}
	want = append(want, tag(testKey, want[ethHeaderLen:])...)
	if !bytes.Equal(got, want) {
		t.Fatalf("Frame:\n got %x\nwant %x", got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	long := testProbe()
	long.Unit = strings.Repeat("u", maxUnit)
	long.Port = strings.Repeat("p", maxPort)
	long.BootID = strings.Repeat("b", maxBootID)
	long.SpeedMbps = 1<<32 - 1
	long.Seq = 1<<64 - 1
	short := testProbe()
	short.Unit, short.Port, short.BootID, short.SpeedMbps, short.Node = "u", "p", "", 0, 1
	for _, p := range []Probe{testProbe(), long, short} {
		b, err := p.Frame(testKey)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) < minFrameLen || len(b) > MaxFrameLen {
			t.Errorf("frame of %d bytes outside [%d, %d]", len(b), minFrameLen, MaxFrameLen)
		}
		got, err := Parse(testKey, b)
		if err != nil {
			t.Fatalf("Parse(Frame(%+v)): %v", p, err)
		}
		if !reflect.DeepEqual(got, p) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, p)
		}
	}
}

func TestFrameRejects(t *testing.T) {
	tests := []struct {
		name   string
		key    []byte
		change func(*Probe)
	}{
		{"short key", testKey[:MinKeyLen-1], func(*Probe) {}},
		{"node 0", testKey, func(p *Probe) { p.Node = 0 }},
		{"node 3", testKey, func(p *Probe) { p.Node = 3 }},
		{"short MAC", testKey, func(p *Probe) { p.MAC = p.MAC[:5] }},
		{"negative speed", testKey, func(p *Probe) { p.SpeedMbps = -1 }},
		{"speed beyond 32 bits", testKey, func(p *Probe) { p.SpeedMbps = 1 << 32 }},
		{"empty unit", testKey, func(p *Probe) { p.Unit = "" }},
		{"long unit", testKey, func(p *Probe) { p.Unit = strings.Repeat("u", maxUnit+1) }},
		{"empty port", testKey, func(p *Probe) { p.Port = "" }},
		{"long port", testKey, func(p *Probe) { p.Port = strings.Repeat("p", maxPort+1) }},
		{"long boot ID", testKey, func(p *Probe) { p.BootID = strings.Repeat("b", maxBootID+1) }},
		{"control character", testKey, func(p *Probe) { p.Port = "biz1\n" }},
		{"space", testKey, func(p *Probe) { p.Unit = "my lab" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testProbe()
			tt.change(&p)
			if b, err := p.Frame(tt.key); err == nil {
				t.Fatalf("Frame(%+v) = %x, want error", p, b)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	good, err := testProbe().Frame(testKey)
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	// resign re-authenticates a frame whose body was changed, to reach the
	// checks behind the tag.
	resign := func(b []byte) []byte {
		body := b[ethHeaderLen : len(b)-tagLen]
		return append(b[:len(b)-tagLen], tag(testKey, body)...)
	}
	tests := []struct {
		name     string
		key      []byte
		frame    []byte
		notProbe bool
		auth     bool
	}{
		{name: "wrong key", key: []byte("another unit key, also 32 bytes!"), frame: good, auth: true},
		{name: "short key", key: testKey[:8], frame: good},
		{name: "empty", frame: nil, notProbe: true},
		{name: "ethernet header only", frame: good[:ethHeaderLen], notProbe: true},
		{name: "other ethertype", frame: edit(func(b []byte) []byte { b[13] = 0xb6; return b }), notProbe: true},
		{name: "wrong magic", frame: edit(func(b []byte) []byte { b[ethHeaderLen+4] = '2'; return b }), notProbe: true},
		{name: "truncated tag", frame: good[:len(good)-1], auth: true},
		{name: "truncated to the minimum length", frame: good[:minFrameLen], auth: true},
		{name: "shorter than any probe", frame: good[:minFrameLen-1]},
		{name: "ethernet padding appended", frame: append(bytes.Clone(good), 0, 0, 0, 0), auth: true},
		{name: "longer than any probe", frame: append(bytes.Clone(good), make([]byte, MaxFrameLen)...)},
		{name: "tampered speed", frame: edit(func(b []byte) []byte { b[ethHeaderLen+8] ^= 1; return b }), auth: true},
		{name: "tampered tag", frame: edit(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), auth: true},
		{name: "signed node 7", frame: edit(func(b []byte) []byte { b[ethHeaderLen+5] = 7; return resign(b) })},
		{name: "signed unit length past the end", frame: edit(func(b []byte) []byte { b[ethHeaderLen+fixedLen] = 200; return resign(b) })},
		{name: "signed boot ID shorter than its field", frame: edit(func(b []byte) []byte {
			i := len(b) - tagLen - len(testProbe().BootID) - 1
			b[i]--
			return resign(b)
		})},
		{name: "signed newline in port", frame: edit(func(b []byte) []byte {
			b[ethHeaderLen+fixedLen+1+len("lab")+1+3] = '\n'
			return resign(b)
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := tt.key
			if key == nil {
				key = testKey
			}
			p, err := Parse(key, tt.frame)
			if err == nil {
				t.Fatalf("Parse = %+v, want error", p)
			}
			if got := errors.Is(err, ErrNotProbe); got != tt.notProbe {
				t.Errorf("errors.Is(%v, ErrNotProbe) = %v, want %v", err, got, tt.notProbe)
			}
			if got := errors.Is(err, ErrAuth); got != tt.auth {
				t.Errorf("errors.Is(%v, ErrAuth) = %v, want %v", err, got, tt.auth)
			}
		})
	}
}

func TestParseDoesNotAlias(t *testing.T) {
	b, err := testProbe().Frame(testKey)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(testKey, b)
	if err != nil {
		t.Fatal(err)
	}
	clear(b)
	if !reflect.DeepEqual(p, testProbe()) {
		t.Fatalf("Parse result changed with its input: %+v", p)
	}
}

// FuzzParse checks that Parse never panics on untrusted bytes and that
// whatever it accepts re-encodes to the same frame.
func FuzzParse(f *testing.F) {
	good, err := testProbe().Frame(testKey)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add(good[:ethHeaderLen+len(magic)])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(testKey, b)
		if err != nil {
			return
		}
		checkReencodes(t, p, b)
	})
}

// FuzzParseSigned signs whatever body the fuzzer makes up, so that the
// field decoding behind the tag, which FuzzParse's random bytes almost
// never reach, is explored too.
func FuzzParseSigned(f *testing.F) {
	good, err := testProbe().Frame(testKey)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good[:ethHeaderLen], good[ethHeaderLen:len(good)-tagLen])
	f.Add(good[:ethHeaderLen], []byte(magic))
	f.Fuzz(func(t *testing.T, header, body []byte) {
		b := append(append(bytes.Clone(header), body...), tag(testKey, body)...)
		p, err := Parse(testKey, b)
		if err != nil {
			return
		}
		checkReencodes(t, p, b)
	})
}

func checkReencodes(t *testing.T, p Probe, b []byte) {
	t.Helper()
	out, err := p.Frame(testKey)
	if err != nil {
		t.Fatalf("accepted frame %x does not re-encode: %v", b, err)
	}
	// The Ethernet addresses are not authenticated and Frame rewrites them.
	if !bytes.Equal(out[12:], b[12:]) {
		t.Fatalf("round trip changed the frame:\n in %x\nout %x", b, out)
	}
}
