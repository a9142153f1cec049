package main

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"math"
	"strings"
	"testing"
)

func block(n uint64) []byte {
	b := make([]byte, BlockSize)
	EncodeBlock(b, n)
	return b
}

func TestDecodeBlock(t *testing.T) {
	badCRC := block(7)
	badCRC[16] ^= 0xff
	flipped := block(7)
	flipped[8] ^= 1 // the counter changed, the checksum did not
	trailing := block(7)
	trailing[BlockSize-1] = 1
	wrongMagic := block(7)
	copy(wrongMagic, "DYADCTR2")
	garbage := bytes.Repeat([]byte{0xa5}, BlockSize)
	dirtyBlank := make([]byte, BlockSize)
	dirtyBlank[100] = 1
	for _, tc := range []struct {
		name    string
		b       []byte
		want    uint64
		wantErr string
	}{
		{"blank disk", make([]byte, BlockSize), 0, ""},
		{"zero", block(0), 0, ""},
		{"one", block(1), 1, ""},
		{"large", block(1 << 40), 1 << 40, ""},
		{"max", block(math.MaxUint64), math.MaxUint64, ""},
		{"short", make([]byte, 512), 0, "512 bytes"},
		{"long", make([]byte, 2*BlockSize), 0, "8192 bytes"},
		{"bad checksum", badCRC, 0, "checksum"},
		{"bit flip in counter", flipped, 0, "checksum"},
		{"data after header", trailing, 0, "after its header"},
		{"wrong magic", wrongMagic, 0, "magic"},
		{"garbage", garbage, 0, "magic"},
		{"blank magic, data elsewhere", dirtyBlank, 0, "magic"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeBlock(tc.b)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("DecodeBlock = %d, %v; want error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("DecodeBlock = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

// TestEncodeBlockLayout pins the on-disk format: tests in other processes
// (and other languages) may read a guest's disk.
func TestEncodeBlockLayout(t *testing.T) {
	b := bytes.Repeat([]byte{0xff}, BlockSize) // EncodeBlock must clear old content
	EncodeBlock(b, 0x0102030405060708)
	want := make([]byte, BlockSize)
	copy(want, "DYADCTR1")
	copy(want[8:], []byte{8, 7, 6, 5, 4, 3, 2, 1})
	binary.LittleEndian.PutUint32(want[16:], crc32.ChecksumIEEE(want[:16]))
	if !bytes.Equal(b, want) {
		t.Errorf("EncodeBlock header = % x, want % x", b[:24], want[:24])
	}
}

// FuzzDecodeBlock fuzzes the header (the first bytes of the block) and one
// byte anywhere in the block rather than whole 4 KiB blocks: with seeds
// of BlockSize bytes Go's fuzzer barely runs (a handful of executions a
// minute on the CI machine).
func FuzzDecodeBlock(f *testing.F) {
	f.Add([]byte{}, uint16(0), byte(0))
	f.Add(block(42)[:headerLen], uint16(0), byte(0))
	f.Add(block(math.MaxUint64)[:headerLen], uint16(BlockSize-1), byte(1))
	f.Add([]byte("DYADCTR1"), uint16(9), byte(0x80))
	f.Fuzz(func(t *testing.T, head []byte, pos uint16, x byte) {
		// Any length: DecodeBlock must refuse, not panic.
		if _, err := DecodeBlock(head); err == nil && len(head) != BlockSize {
			t.Fatalf("DecodeBlock accepted %d bytes", len(head))
		}
		b := make([]byte, BlockSize)
		copy(b, head)
		b[int(pos)%BlockSize] ^= x
		n, err := DecodeBlock(b)
		if err != nil {
			return
		}
		// Whatever decodes is a blank disk or re-encodes to itself.
		if !bytes.Equal(block(n), b) && !(n == 0 && isZero(b)) {
			t.Fatalf("DecodeBlock accepted a block that does not re-encode: n=%d header % x", n, b[:headerLen])
		}
	})
}

func TestParseBootID(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"0f8e2c1d-3b4a-4c5d-8e9f-0a1b2c3d4e5f\n", "0f8e2c1d-3b4a-4c5d-8e9f-0a1b2c3d4e5f", true},
		{"0f8e2c1d-3b4a-4c5d-8e9f-0a1b2c3d4e5f", "0f8e2c1d-3b4a-4c5d-8e9f-0a1b2c3d4e5f", true},
		{"", "", false},
		{"0F8E2C1D-3B4A-4C5D-8E9F-0A1B2C3D4E5F", "", false},
		{"0f8e2c1d 3b4a-4c5d-8e9f-0a1b2c3d4e5f", "", false},
		{"0f8e2c1d-3b4a-4c5d-8e9f-0a1b2c3d4e5", "", false},
		{"0f8e2c1d-3b4a-4c5d-8e9f-0a1b2c3d4e5fa", "", false},
		{"0f8e2c1d3b4a-4c5d-8e9f-0a1b2c3d4e5f-", "", false},
	} {
		got, err := ParseBootID(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseBootID(%q) = %q, %v; want %q, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
