package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
)

// The counter block is the first BlockSize bytes of the disk:
//
//	offset 0  magic "DYADCTR1"
//	offset 8  counter, uint64 little endian
//	offset 16 CRC-32 (IEEE) of bytes 0..15, uint32 little endian
//	offset 20 zero up to BlockSize
//
// The header lies inside the first 512-byte sector, which disks write
// atomically, so a power cut leaves either the old or the new value.
const (
	// BlockSize is the unit of O_DIRECT I/O: a multiple of every logical
	// sector size a virtio disk may have.
	BlockSize = 4096
	// Magic marks a formatted counter block.
	Magic     = "DYADCTR1"
	headerLen = 20
)

// EncodeBlock fills b (BlockSize bytes) with the block holding n.
func EncodeBlock(b []byte, n uint64) {
	clear(b)
	copy(b, Magic)
	binary.LittleEndian.PutUint64(b[8:16], n)
	binary.LittleEndian.PutUint32(b[16:20], crc32.ChecksumIEEE(b[:16]))
}

// DecodeBlock returns the counter in b. An all-zero block is a blank disk
// and holds 0; anything else that is not a valid block is an error rather
// than 0, because restarting the count would hide lost writes, which are
// what the tests using this guest look for.
func DecodeBlock(b []byte) (uint64, error) {
	if len(b) != BlockSize {
		return 0, fmt.Errorf("counter block is %d bytes, want %d", len(b), BlockSize)
	}
	if !bytes.Equal(b[:len(Magic)], []byte(Magic)) {
		if isZero(b) {
			return 0, nil
		}
		return 0, fmt.Errorf("counter block has magic %q, want %q", b[:len(Magic)], Magic)
	}
	if got, want := binary.LittleEndian.Uint32(b[16:20]), crc32.ChecksumIEEE(b[:16]); got != want {
		return 0, fmt.Errorf("counter block checksum %#08x, want %#08x", got, want)
	}
	if !isZero(b[headerLen:]) {
		return 0, errors.New("counter block has data after its header")
	}
	return binary.LittleEndian.Uint64(b[8:16]), nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// ParseBootID checks the content of /proc/sys/kernel/random/boot_id, a
// UUID, and returns it without the newline. Being printed in every line the
// tests parse, it must be a single word.
func ParseBootID(s string) (string, error) {
	id := strings.TrimSpace(s)
	if len(id) != 36 {
		return "", fmt.Errorf("boot id %q is not a UUID", id)
	}
	for i, c := range id {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return "", fmt.Errorf("boot id %q is not a UUID", id)
			}
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f':
		default:
			return "", fmt.Errorf("boot id %q is not a UUID", id)
		}
	}
	return id, nil
}
