package disk

import (
	"encoding/binary"
	"hash/crc32"
	"slices"
	"testing"
	"unicode/utf16"
)

// put returns a zeroed buffer of n bytes with each value written at its
// offset.
func put(n int, at ...any) []byte {
	b := make([]byte, n)
	for i := 0; i < len(at); i += 2 {
		off := at[i].(int)
		switch v := at[i+1].(type) {
		case string:
			copy(b[off:], v)
		case []byte:
			copy(b[off:], v)
		default:
			panic("put: want string or []byte")
		}
	}
	return b
}

func le16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// gptImage lays out a GPT of 128 entries of 128 bytes with partitions
// named names on a disk of size bytes with sector size ss, and returns the
// disk's first and last EdgeBytes.
func gptImage(size int64, ss int, names ...string) (head, tail []byte) {
	disk := make([]byte, size)
	sectors := uint64(size) / uint64(ss)
	entries := make([]byte, 128*128)
	for i, n := range names {
		e := entries[i*128:]
		copy(e[0:16], "\xaf\x3d\xc6\x0f\x83\x84\x72\x47\x8e\x79\x3d\x69\xd8\x47\x7d\xe4") // Linux filesystem
		e[16] = byte(i + 1)                                                               // partition GUID
		binary.LittleEndian.PutUint64(e[32:], 2048)
		binary.LittleEndian.PutUint64(e[40:], 4095)
		for j, u := range utf16.Encode([]rune(n)) {
			binary.LittleEndian.PutUint16(e[56+2*j:], u)
		}
	}
	entriesSectors := uint64(len(entries)) / uint64(ss)
	if entriesSectors == 0 {
		entriesSectors = 1
	}
	header := func(my, alt, entriesLBA uint64) []byte {
		h := make([]byte, ss)
		copy(h, "EFI PART")
		le := binary.LittleEndian
		le.PutUint32(h[8:], 0x00010000)
		le.PutUint32(h[12:], 92)
		le.PutUint64(h[24:], my)
		le.PutUint64(h[32:], alt)
		le.PutUint64(h[40:], 2+entriesSectors)
		le.PutUint64(h[48:], sectors-2-entriesSectors)
		le.PutUint64(h[72:], entriesLBA)
		le.PutUint32(h[80:], 128)
		le.PutUint32(h[84:], 128)
		le.PutUint32(h[88:], crc32.ChecksumIEEE(entries))
		le.PutUint32(h[16:], crc32.ChecksumIEEE(h[:92]))
		return h
	}
	last := sectors - 1
	copy(disk[ss:], header(1, last, 2))
	copy(disk[2*ss:], entries)
	backupEntries := last - entriesSectors
	copy(disk[backupEntries*uint64(ss):], entries)
	copy(disk[last*uint64(ss):], header(last, 1, backupEntries))
	// Protective MBR.
	disk[446+4] = 0xee
	disk[510], disk[511] = 0x55, 0xaa
	n := min(size, EdgeBytes)
	return disk[:n], disk[size-n:]
}

func TestIdentify(t *testing.T) {
	gptHead, gptTail := gptImage(4<<20, 512, "boot", "root")
	gpt4kHead, gpt4kTail := gptImage(8<<20, 4096, "data")
	zero := make([]byte, EdgeBytes)
	mbr := put(512, 446+4, "\x83", 510, "\x55\xaa")
	drbdTail := func(slack int, magic uint32) []byte {
		return put(EdgeBytes, EdgeBytes-slack-4096+60, be32(magic))
	}
	ext := func(compat, incompat uint32) []byte {
		return put(4096, 1024+56, le16(0xef53), 1024+92, le32(compat), 1024+96, le32(incompat))
	}
	tests := []struct {
		name       string
		head, tail []byte
		want       string
	}{
		{"zeros", zero, zero, ""},
		{"empty buffers", nil, nil, ""},
		{"short zeros", make([]byte, 100), make([]byte, 3), ""},
		{"GPT", gptHead, gptTail, "GPT partition table"},
		{"GPT on 4Kn", gpt4kHead, gpt4kTail, "GPT partition table"},
		{"GPT backup only", zero, gptTail, "GPT partition table (backup header only)"},
		{"MBR with a partition", mbr, zero, "MBR partition table"},
		{"boot sector without partitions", put(512, 510, "\x55\xaa"), zero, "non-zero data"},
		{"LVM label in sector 0", put(4096, 0, "LABELONE", 24, "LVM2 001"), zero, "LVM2 physical volume"},
		{"LVM label in sector 1", put(4096, 512, "LABELONE", 512+24, "LVM2 001"), zero, "LVM2 physical volume"},
		{"LVM label id without type", put(4096, 512, "LABELONE"), zero, "non-zero data"},
		{"ext2", ext(0, 0), nil, "ext2 file system"},
		{"ext3", ext(0x4, 0x2), nil, "ext3 file system"},
		{"ext4", ext(0x4, 0x2|0x40|0x200), nil, "ext4 file system"},
		{"ext magic in a short buffer", put(1081, 1024+56, "\x53"), nil, "non-zero data"},
		{"XFS", put(512, 0, "XFSB"), zero, "XFS file system"},
		{"btrfs", put(1<<17, 65536+64, "_BHRfS_M"), zero, "btrfs file system"},
		{"swap 4 KiB pages", put(4096, 4096-10, "SWAPSPACE2"), zero, "swap space"},
		{"swap 64 KiB pages", put(65536, 65536-10, "SWAPSPACE2"), zero, "swap space"},
		{"DRBD internal meta-data, aligned end", zero, drbdTail(0, 0x8374026b), "DRBD meta-data"},
		{"DRBD internal meta-data, unclean 8.4", zero, drbdTail(0, 0x8374026c), "DRBD meta-data"},
		{"DRBD internal meta-data, end not 4 KiB aligned", zero, drbdTail(3*512, 0x8374026b), "DRBD meta-data"},
		{"DRBD 9 meta-data", zero, drbdTail(0, 0x8374026d), "DRBD meta-data"},
		{"DRBD external meta-data", put(4096, 60, be32(0x8374026b)), zero, "DRBD meta-data"},
		{"DRBD packet magic is not meta-data", zero, drbdTail(0, 0x83740267), "non-zero data"},
		{"DRBD magic in a tiny tail", nil, be32(0x8374026b), "non-zero data"},
		{"ISO 9660", put(40000, 32769, "CD001"), zero, "ISO 9660 file system"},
		{"LUKS", put(512, 0, "LUKS\xba\xbe"), zero, "LUKS encrypted volume"},
		{"LUKS2 secondary header", put(20000, 16384, "SKUL\xba\xbe"), zero, "LUKS encrypted volume"},
		{"md 1.2", put(8192, 4096, le32(mdMagic)), zero, "Linux RAID member"},
		{"md 0.90 near the end", zero, put(EdgeBytes, EdgeBytes-64<<10, le32(mdMagic)), "Linux RAID member"},
		{"ZFS", put(EdgeBytes, 128<<10+5<<10, le32(zfsUberMagic)), zero, "ZFS pool member"},
		{"FAT32", put(512, 82, "FAT32   ", 510, "\x55\xaa"), zero, "FAT file system"},
		{"NTFS", put(512, 3, "NTFS    ", 510, "\x55\xaa"), zero, "NTFS file system"},
		{"one byte at the end", zero, put(EdgeBytes, EdgeBytes-1, "\x01"), "non-zero data"},
		{"one byte at the start", put(EdgeBytes, 0, "\x01"), zero, "non-zero data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Identify(tt.head, tt.tail); got != tt.want {
				t.Errorf("Identify = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPartitionNames(t *testing.T) {
	const size = 4 << 20
	head, tail := gptImage(size, 512, "dyad-data", "other")
	damagedHead := slices.Clone(head)
	damagedHead[512+40]++ // first usable LBA: header CRC fails
	damagedTail := slices.Clone(tail)
	damagedTail[len(tail)-512+40]++
	h4k, t4k := gptImage(8<<20, 4096, "dyad-data")
	tests := []struct {
		name       string
		head, tail []byte
		size       int64
		want       []string
		ok         bool
	}{
		{"primary", head, tail, size, []string{"dyad-data", "other"}, true},
		{"backup when the primary is damaged", damagedHead, tail, size, []string{"dyad-data", "other"}, true},
		{"both damaged", damagedHead, damagedTail, size, nil, false},
		{"4Kn", h4k, t4k, 8 << 20, []string{"dyad-data"}, true},
		{"no GPT", make([]byte, EdgeBytes), make([]byte, EdgeBytes), size, nil, false},
		{"size smaller than the tail", head, tail, 100, nil, false},
		{"zero size", head, tail, 0, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := partitionNames(tt.head, tt.tail, tt.size)
			if ok != tt.ok || !slices.Equal(got, tt.want) {
				t.Errorf("partitionNames = %q, %v; want %q, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func FuzzIdentify(f *testing.F) {
	h, tl := gptImage(4<<20, 512, "dyad-data")
	f.Add(h[:8192], tl[len(tl)-8192:], int64(4<<20))
	f.Add(put(4096, 0, "LABELONE", 24, "LVM2 001"), []byte{}, int64(4096))
	f.Add(put(2048, 1024+56, le16(0xef53)), put(8192, 8192-4096+60, be32(0x8374026b)), int64(1<<30))
	f.Add(put(600, 512, "EFI PART", 510, "\x55\xaa"), put(600, 88, "EFI PART"), int64(1200))
	f.Add([]byte{}, []byte{}, int64(0))
	f.Fuzz(func(t *testing.T, head, tail []byte, size int64) {
		what := Identify(head, tail)
		allZero := !slices.ContainsFunc(head, func(b byte) bool { return b != 0 }) &&
			!slices.ContainsFunc(tail, func(b byte) bool { return b != 0 })
		if (what == "") != allZero {
			t.Fatalf("Identify = %q for all-zero=%v buffers", what, allZero)
		}
		// The GPT reader gets the same untrusted bytes with any size.
		partitionNames(head, tail, size)
	})
}
