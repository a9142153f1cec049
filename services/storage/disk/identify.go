package disk

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"unicode/utf16"
)

// EdgeBytes is how much of each end of a disk Scan reads and Wipe zeroes:
// every partition table, volume manager label and file system superblock
// we know of lies in the first or the last MiB.
const EdgeBytes = 1 << 20

// Identify names the kind of data found in head (the first bytes of a disk,
// normally EdgeBytes of them) and tail (the last bytes, ending at the end of
// the disk). It returns "" only when both are all zeros, and "non-zero data"
// when something is there that it does not recognise. The buffers are
// untrusted: any length, any content.
func Identify(head, tail []byte) string {
	// Containers come before what they may contain: a GPT has a protective
	// MBR; a FAT or NTFS boot sector ends in 55 AA like an MBR.
	signatures := [...]func(head, tail []byte) string{
		gptSignature,
		lvmSignature,
		luksSignature,
		mdSignature,
		drbdSignature,
		fatNTFSSignature,
		mbrSignature,
		extSignature,
		xfsSignature,
		btrfsSignature,
		swapSignature,
		iso9660Signature,
		zfsSignature,
	}
	for _, s := range signatures {
		if what := s(head, tail); what != "" {
			return what
		}
	}
	if bytes.ContainsFunc(head, notZero) || bytes.ContainsFunc(tail, notZero) {
		return "non-zero data"
	}
	return ""
}

func notZero(r rune) bool { return r != 0 }

// at reports whether b holds magic at offset off.
func at(b []byte, off int, magic string) bool {
	return off >= 0 && off <= len(b)-len(magic) && string(b[off:off+len(magic)]) == magic
}

// atEnd reports whether b holds magic at off bytes before its end.
func atEnd(b []byte, fromEnd int, magic string) bool {
	return at(b, len(b)-fromEnd, magic)
}

func u32le(b []byte, off int) (uint32, bool) {
	if off < 0 || off > len(b)-4 {
		return 0, false
	}
	return binary.LittleEndian.Uint32(b[off:]), true
}

func u32be(b []byte, off int) (uint32, bool) {
	if off < 0 || off > len(b)-4 {
		return 0, false
	}
	return binary.BigEndian.Uint32(b[off:]), true
}

const gptMagic = "EFI PART"

func gptSignature(head, tail []byte) string {
	// The header is LBA 1: byte 512 on 512-byte-sector disks, 4096 on 4Kn
	// ones; the backup header is the last LBA.
	if at(head, 512, gptMagic) || at(head, 4096, gptMagic) {
		return "GPT partition table"
	}
	if atEnd(tail, 512, gptMagic) || atEnd(tail, 4096, gptMagic) {
		return "GPT partition table (backup header only)"
	}
	return ""
}

func lvmSignature(head, _ []byte) string {
	// The label is in one of the first four 512-byte sectors: the id at 0
	// and the type at 24 of that sector.
	for s := range 4 {
		if at(head, s*512, "LABELONE") && at(head, s*512+24, "LVM2 001") {
			return "LVM2 physical volume"
		}
	}
	return ""
}

func luksSignature(head, _ []byte) string {
	if at(head, 0, "LUKS\xba\xbe") || at(head, 16384, "SKUL\xba\xbe") {
		return "LUKS encrypted volume"
	}
	return ""
}

// mdMagic is the Linux software RAID superblock magic, stored little-endian
// by 1.x superblocks and in host order (little-endian on our hosts) by 0.90.
const mdMagic = 0xa92b4efc

func mdSignature(head, tail []byte) string {
	// 1.1 at 0, 1.2 at 4 KiB; 1.0 and 0.90 near the end, at an alignment
	// that depends on the disk size, hence the 512-byte-step search of the
	// last 128 KiB.
	for _, off := range []int{0, 4096} {
		if m, ok := u32le(head, off); ok && m == mdMagic {
			return "Linux RAID member"
		}
	}
	for back := 512; back <= 128<<10; back += 512 {
		if m, ok := u32le(tail, len(tail)-back); ok && m == mdMagic {
			return "Linux RAID member"
		}
	}
	return ""
}

// drbdMagicOffset is where the magic lies in a DRBD meta-data super block
// (struct meta_data_on_disk: five u64 UUIDs and sizes, two more u64, the
// u32 flags, then the u32 magic), big-endian.
const drbdMagicOffset = 60

// isDRBDMagic reports a meta-data magic at off: DRBD_MAGIC 0x83740267 plus
// 3 (v07), 4 (v08), 5 (8.4 after an unclean shutdown) or 6 (DRBD 9).
// DRBD_MAGIC itself marks network packets, never meta-data.
func isDRBDMagic(b []byte, off int) bool {
	m, ok := u32be(b, off)
	return ok && m >= 0x83740267+3 && m <= 0x83740267+6
}

func drbdSignature(head, tail []byte) string {
	// Internal meta-data: the super block is the last 4 KiB-aligned 4 KiB
	// block of the device, at sector (capacity & ~7) - 8 (drbd_md_ss in
	// drbd_int.h). Identify does not know the disk size, so try each of the
	// eight sector alignments the end of the disk may have.
	for slack := 0; slack < 4096; slack += 512 {
		if isDRBDMagic(tail, len(tail)-slack-4096+drbdMagicOffset) {
			return "DRBD meta-data"
		}
	}
	// External (flexible) meta-data starts at byte 0 of its device.
	if isDRBDMagic(head, drbdMagicOffset) {
		return "DRBD meta-data"
	}
	return ""
}

func fatNTFSSignature(head, _ []byte) string {
	if at(head, 3, "NTFS    ") {
		return "NTFS file system"
	}
	if !at(head, 510, "\x55\xaa") {
		return ""
	}
	if at(head, 82, "FAT32   ") || at(head, 54, "FAT12   ") || at(head, 54, "FAT16   ") || at(head, 54, "FAT     ") {
		return "FAT file system"
	}
	return ""
}

func mbrSignature(head, _ []byte) string {
	if !at(head, 510, "\x55\xaa") {
		return ""
	}
	// A boot sector with the signature but an empty table is not a
	// partition table; it falls through to "non-zero data".
	for i := range 4 {
		e := 446 + 16*i
		if head[e+4] != 0 { // partition type
			return "MBR partition table"
		}
	}
	return ""
}

func extSignature(head, _ []byte) string {
	const sb = 1024
	if !at(head, sb+56, "\x53\xef") { // s_magic 0xEF53, little-endian
		return ""
	}
	compat, _ := u32le(head, sb+92)
	incompat, _ := u32le(head, sb+96)
	const (
		hasJournal = 0x4
		// Incompatible features ext3 lacks: extents, 64bit, flex_bg,
		// mmp, inline data...
		ext4Only = 0x40 | 0x80 | 0x100 | 0x200 | 0x8000
	)
	switch {
	case incompat&ext4Only != 0:
		return "ext4 file system"
	case compat&hasJournal != 0:
		return "ext3 file system"
	}
	return "ext2 file system"
}

func xfsSignature(head, _ []byte) string {
	if at(head, 0, "XFSB") {
		return "XFS file system"
	}
	return ""
}

func btrfsSignature(head, _ []byte) string {
	if at(head, 65536+64, "_BHRfS_M") {
		return "btrfs file system"
	}
	return ""
}

func swapSignature(head, _ []byte) string {
	// The magic ends the first page; try the page sizes Linux runs with.
	for _, page := range []int{4096, 8192, 16384, 65536} {
		if at(head, page-10, "SWAPSPACE2") || at(head, page-10, "SWAP-SPACE") {
			return "swap space"
		}
	}
	return ""
}

func iso9660Signature(head, _ []byte) string {
	if at(head, 32769, "CD001") {
		return "ISO 9660 file system"
	}
	return ""
}

// zfsUberMagic starts each 1 KiB uberblock in the second half of a 256 KiB
// ZFS vdev label, in the byte order of the host that wrote it.
const zfsUberMagic = 0x00bab10c

func zfsSignature(head, _ []byte) string {
	// Labels 0 and 1 are at 0 and 256 KiB. Labels 2 and 3 are at the end
	// but aligned to the disk size, which Identify does not know; a pool
	// member with both front labels gone is left to "non-zero data".
	for _, label := range []int{0, 256 << 10} {
		for off := label + 128<<10; off < label+256<<10; off += 1 << 10 {
			le, ok := u32le(head, off)
			be, _ := u32be(head, off)
			if ok && (le == zfsUberMagic || be == zfsUberMagic) {
				return "ZFS pool member"
			}
		}
	}
	return ""
}

// gptHeader is what partitionNames needs from a GPT header.
type gptHeader struct {
	entriesLBA uint64
	count      uint32
	size       uint32
	crc        uint32
}

// parseGPTHeader checks the header in b (one logical sector) with its CRC.
func parseGPTHeader(b []byte, lba uint64) (gptHeader, error) {
	if !at(b, 0, gptMagic) || len(b) < 92 {
		return gptHeader{}, fmt.Errorf("no GPT header at LBA %d", lba)
	}
	le := binary.LittleEndian
	hs := le.Uint32(b[12:])
	if hs < 92 || int(hs) > len(b) {
		return gptHeader{}, fmt.Errorf("GPT header at LBA %d: header size %d", lba, hs)
	}
	h := bytes.Clone(b[:hs])
	clear(h[16:20])
	if crc32.ChecksumIEEE(h) != le.Uint32(b[16:]) {
		return gptHeader{}, fmt.Errorf("GPT header at LBA %d: bad CRC", lba)
	}
	if my := le.Uint64(b[24:]); my != lba {
		return gptHeader{}, fmt.Errorf("GPT header at LBA %d says it is at LBA %d", lba, my)
	}
	g := gptHeader{entriesLBA: le.Uint64(b[72:]), count: le.Uint32(b[80:]), size: le.Uint32(b[84:]), crc: le.Uint32(b[88:])}
	if g.size < 128 || g.size > 4096 || g.count > 4096 || uint64(g.count)*uint64(g.size) > 1<<20 {
		return gptHeader{}, fmt.Errorf("GPT header at LBA %d: %d entries of %d bytes", lba, g.count, g.size)
	}
	return g, nil
}

// partitionNames returns the names of the GPT partitions of a disk of size
// bytes whose first and last bytes are head and tail, from the primary
// table or, failing that, the backup, as the kernel and PID 1 do. ok is
// false when no valid table lies within head and tail.
func partitionNames(head, tail []byte, size int64) (names []string, ok bool) {
	// slice returns the bytes [off, off+n) of the disk if head or tail
	// holds them.
	slice := func(off, n uint64) []byte {
		if off+n < off || off+n > uint64(size) {
			return nil
		}
		if off+n <= uint64(len(head)) {
			return head[off : off+n]
		}
		tailStart := uint64(size) - uint64(len(tail))
		if off >= tailStart {
			return tail[off-tailStart : off-tailStart+n]
		}
		return nil
	}
	if size <= 0 || int64(len(tail)) > size {
		return nil, false
	}
	for _, ss := range []uint64{512, 4096} {
		sectors := uint64(size) / ss
		if sectors < 3 {
			continue
		}
		for _, lba := range []uint64{1, sectors - 1} {
			hb := slice(lba*ss, ss)
			if hb == nil {
				continue
			}
			h, err := parseGPTHeader(hb, lba)
			if err != nil {
				continue
			}
			if h.entriesLBA >= sectors {
				continue
			}
			arr := slice(h.entriesLBA*ss, uint64(h.count)*uint64(h.size))
			if arr == nil || crc32.ChecksumIEEE(arr) != h.crc {
				continue
			}
			for i := range int(h.count) {
				e := arr[i*int(h.size):][:128]
				if bytes.Count(e[:16], []byte{0}) == 16 { // unused entry
					continue
				}
				names = append(names, utf16Name(e[56:128]))
			}
			return names, true
		}
	}
	return nil, false
}

// utf16Name decodes a GPT partition name: UTF-16LE up to the first NUL.
func utf16Name(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}
