// Package gpt reads and writes GUID Partition Tables (UEFI 2.10, chapter 5) on
// 512-byte-sector disks. It covers what PID 1 needs to find and create the
// data partition: a protective MBR, the primary and backup headers and entry
// arrays, and their CRCs. The reader treats the disk as untrusted input.
package gpt

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"unicode/utf16"
)

// SectorSize is the only logical sector size supported: the virtio and SATA
// disks Dyad runs on report 512, and 4Kn disks would need a different layout.
const SectorSize = 512

// LinuxFilesystem is the partition type GUID for Linux filesystem data.
const LinuxFilesystem = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"

const (
	signature      = "EFI PART"
	revision1      = 0x00010000
	headerSize     = 92
	numEntries     = 128
	entrySize      = 128
	entriesSectors = numEntries * entrySize / SectorSize // 32
	nameUnits      = 36                                  // UTF-16 code units in an entry name

	// Limits for tables written by others: generous enough for any real
	// disk, small enough that a hostile header cannot make us allocate much.
	maxEntries    = 4096
	maxEntrySize  = 4096
	maxEntryBytes = 1 << 20

	mib = 1 << 20
)

// ErrNotGPT means neither the primary nor the backup header carries the GPT
// signature: the disk has no GPT at all (as opposed to a damaged one).
var ErrNotGPT = errors.New("no GPT signature")

// GUID is a GUID in its on-disk byte order (first three fields little-endian).
type GUID [16]byte

// String formats g in the canonical upper-case form used by UEFI and sgdisk.
func (g GUID) String() string {
	c := g.canonical()
	h := strings.ToUpper(hex.EncodeToString(c[:]))
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// IsZero reports whether g is the all-zero GUID, which marks an unused entry.
func (g GUID) IsZero() bool { return g == GUID{} }

// canonical returns the bytes in the order they are printed.
func (g GUID) canonical() [16]byte {
	var c [16]byte
	c[0], c[1], c[2], c[3] = g[3], g[2], g[1], g[0]
	c[4], c[5] = g[5], g[4]
	c[6], c[7] = g[7], g[6]
	copy(c[8:], g[8:])
	return c
}

// fromCanonical is the inverse of GUID.canonical (the swap is its own inverse).
func fromCanonical(c [16]byte) GUID { return GUID(GUID(c).canonical()) }

// ParseGUID parses the canonical form "XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX".
func ParseGUID(s string) (GUID, error) {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return GUID{}, fmt.Errorf("GUID %q: want the form XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX", s)
	}
	b, err := hex.DecodeString(s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36])
	if err != nil {
		return GUID{}, fmt.Errorf("GUID %q: %w", s, err)
	}
	return fromCanonical([16]byte(b)), nil
}

// NewGUID returns a random (version 4) GUID.
func NewGUID() (GUID, error) {
	var c [16]byte
	if _, err := rand.Read(c[:]); err != nil {
		return GUID{}, fmt.Errorf("random GUID: %w", err)
	}
	c[6] = c[6]&0x0f | 0x40 // version 4
	c[8] = c[8]&0x3f | 0x80 // RFC 4122 variant
	return fromCanonical(c), nil
}

// Partition is one used entry of the partition array.
type Partition struct {
	Number     int // 1-based entry index; Linux names the partition device after it (vda1, nvme0n1p1)
	Type       GUID
	ID         GUID
	FirstLBA   uint64
	LastLBA    uint64 // inclusive
	Attributes uint64
	Name       string
}

// Table is a partition table as read from or to be written to a disk.
type Table struct {
	DiskID      GUID
	FirstUsable uint64 // filled by Read; Write derives them from the disk size
	LastUsable  uint64
	Partitions  []Partition
	// FromBackup is set by Read when the primary header or entries were
	// damaged and the table came from the backup at the end of the disk.
	FromBackup bool
}

// Find returns the partition called name.
func (t Table) Find(name string) (Partition, bool) {
	for _, p := range t.Partitions {
		if p.Name == name {
			return p, true
		}
	}
	return Partition{}, false
}

// SinglePartition lays out a disk of size bytes with one Linux filesystem
// partition called name, from 1 MiB to the last MiB boundary that leaves at
// least 1 MiB free at the end. MiB alignment suits every SSD erase block and
// RAID stripe we may meet; the tail leaves room for the backup GPT and for
// tools that keep metadata at the end of a disk.
func SinglePartition(size int64, name string) (Table, error) {
	if size < 0 {
		return Table{}, fmt.Errorf("disk size %d is negative", size)
	}
	first := uint64(mib / SectorSize)
	end := uint64(size) / mib * mib / SectorSize // first sector past the last whole MiB
	if end < 3*first {
		return Table{}, fmt.Errorf("disk of %d bytes is too small for a partition between 1 MiB and end-1 MiB", size)
	}
	diskID, err := NewGUID()
	if err != nil {
		return Table{}, err
	}
	partID, err := NewGUID()
	if err != nil {
		return Table{}, err
	}
	typ, err := ParseGUID(LinuxFilesystem)
	if err != nil {
		return Table{}, err
	}
	return Table{
		DiskID: diskID,
		Partitions: []Partition{{
			Number:   1,
			Type:     typ,
			ID:       partID,
			FirstLBA: first,
			LastLBA:  end - first - 1,
			Name:     name,
		}},
	}, nil
}

// layout is the geometry every table written by Write has.
type layout struct {
	sectors     uint64
	last        uint64
	firstUsable uint64
	lastUsable  uint64
}

func newLayout(size int64) (layout, error) {
	if size < 0 {
		return layout{}, fmt.Errorf("disk size %d is negative", size)
	}
	n := uint64(size) / SectorSize
	// MBR + 2 headers + 2 entry arrays + at least one usable sector.
	if n < 3+2*entriesSectors+1 {
		return layout{}, fmt.Errorf("disk of %d bytes is too small for a GPT", size)
	}
	return layout{
		sectors:     n,
		last:        n - 1,
		firstUsable: 2 + entriesSectors,
		lastUsable:  n - 2 - entriesSectors,
	}, nil
}

// Write writes a protective MBR, the primary header and entries at LBA 1-33
// and the backup entries and header in the last 33 sectors of a disk of size
// bytes. Other sectors are left alone. t.FirstUsable and t.LastUsable are
// ignored: they follow from size.
func Write(w io.WriterAt, size int64, t Table) error {
	l, err := newLayout(size)
	if err != nil {
		return err
	}
	entries, err := encodeEntries(t.Partitions, l)
	if err != nil {
		return err
	}
	entriesCRC := crc32.ChecksumIEEE(entries)

	writes := []struct {
		lba  uint64
		data []byte
		what string
	}{
		{0, protectiveMBR(l.sectors), "protective MBR"},
		{1, encodeHeader(l, t.DiskID, 1, l.last, 2, entriesCRC), "primary GPT header"},
		{2, entries, "primary GPT entries"},
		{l.lastUsable + 1, entries, "backup GPT entries"},
		{l.last, encodeHeader(l, t.DiskID, l.last, 1, l.lastUsable+1, entriesCRC), "backup GPT header"},
	}
	for _, wr := range writes {
		if _, err := w.WriteAt(wr.data, int64(wr.lba*SectorSize)); err != nil {
			return fmt.Errorf("write %s at LBA %d: %w", wr.what, wr.lba, err)
		}
	}
	return nil
}

func protectiveMBR(sectors uint64) []byte {
	b := make([]byte, SectorSize)
	e := b[446:462]
	e[1], e[2], e[3] = 0x00, 0x02, 0x00 // CHS of LBA 1
	e[4] = 0xEE                         // GPT protective
	e[5], e[6], e[7] = 0xFF, 0xFF, 0xFF // CHS beyond what CHS can express
	binary.LittleEndian.PutUint32(e[8:], 1)
	binary.LittleEndian.PutUint32(e[12:], uint32(min(sectors-1, 0xFFFFFFFF)))
	b[510], b[511] = 0x55, 0xAA
	return b
}

func encodeHeader(l layout, diskID GUID, my, alternate, entriesLBA uint64, entriesCRC uint32) []byte {
	b := make([]byte, SectorSize)
	copy(b[0:8], signature)
	le := binary.LittleEndian
	le.PutUint32(b[8:], revision1)
	le.PutUint32(b[12:], headerSize)
	le.PutUint64(b[24:], my)
	le.PutUint64(b[32:], alternate)
	le.PutUint64(b[40:], l.firstUsable)
	le.PutUint64(b[48:], l.lastUsable)
	copy(b[56:72], diskID[:])
	le.PutUint64(b[72:], entriesLBA)
	le.PutUint32(b[80:], numEntries)
	le.PutUint32(b[84:], entrySize)
	le.PutUint32(b[88:], entriesCRC)
	le.PutUint32(b[16:], crc32.ChecksumIEEE(b[:headerSize]))
	return b
}

func encodeEntries(parts []Partition, l layout) ([]byte, error) {
	b := make([]byte, numEntries*entrySize)
	used := make(map[int]bool)
	for i, p := range parts {
		switch {
		case p.Number < 1 || p.Number > numEntries:
			return nil, fmt.Errorf("partition %d: number must be 1..%d", p.Number, numEntries)
		case used[p.Number]:
			return nil, fmt.Errorf("partition %d: number used twice", p.Number)
		case p.Type.IsZero():
			return nil, fmt.Errorf("partition %d: the zero type GUID marks an unused entry", p.Number)
		case p.FirstLBA < l.firstUsable || p.LastLBA > l.lastUsable || p.FirstLBA > p.LastLBA:
			return nil, fmt.Errorf("partition %d: sectors %d-%d outside the usable range %d-%d",
				p.Number, p.FirstLBA, p.LastLBA, l.firstUsable, l.lastUsable)
		}
		for _, q := range parts[:i] {
			if p.FirstLBA <= q.LastLBA && q.FirstLBA <= p.LastLBA {
				return nil, fmt.Errorf("partition %d overlaps partition %d", p.Number, q.Number)
			}
		}
		if strings.ContainsRune(p.Name, 0) {
			return nil, fmt.Errorf("partition %d: name %q contains NUL, which ends a GPT name", p.Number, p.Name)
		}
		name := utf16.Encode([]rune(p.Name))
		if len(name) > nameUnits {
			return nil, fmt.Errorf("partition %d: name %q is longer than %d UTF-16 code units", p.Number, p.Name, nameUnits)
		}
		used[p.Number] = true
		e := b[(p.Number-1)*entrySize:][:entrySize]
		copy(e[0:16], p.Type[:])
		copy(e[16:32], p.ID[:])
		binary.LittleEndian.PutUint64(e[32:], p.FirstLBA)
		binary.LittleEndian.PutUint64(e[40:], p.LastLBA)
		binary.LittleEndian.PutUint64(e[48:], p.Attributes)
		for j, u := range name {
			binary.LittleEndian.PutUint16(e[56+2*j:], u)
		}
	}
	return b, nil
}

// Read reads the GPT of a disk of size bytes. It uses the primary table and
// falls back to the backup (setting FromBackup) when the primary is damaged,
// as the kernel does. errors.Is(err, ErrNotGPT) when neither header has the
// GPT signature.
func Read(r io.ReaderAt, size int64) (Table, error) {
	if size < 0 {
		return Table{}, fmt.Errorf("disk size %d is negative", size)
	}
	sectors := uint64(size) / SectorSize
	if sectors < 3 {
		return Table{}, fmt.Errorf("disk of %d bytes is too small for a GPT: %w", size, ErrNotGPT)
	}
	primary, perr := readTable(r, sectors, 1)
	if perr == nil {
		return primary, nil
	}
	backup, berr := readTable(r, sectors, sectors-1)
	if berr == nil {
		backup.FromBackup = true
		return backup, nil
	}
	// Only a disk without either signature is "not GPT"; one damaged table
	// next to a missing one is a damaged GPT.
	switch pn, bn := errors.Is(perr, ErrNotGPT), errors.Is(berr, ErrNotGPT); {
	case pn && bn:
		return Table{}, ErrNotGPT
	case pn:
		return Table{}, fmt.Errorf("primary GPT: %v; backup GPT: %w", perr, berr)
	case bn:
		return Table{}, fmt.Errorf("primary GPT: %w; backup GPT: %v", perr, berr)
	}
	return Table{}, fmt.Errorf("primary GPT: %w; backup GPT: %w", perr, berr)
}

func readTable(r io.ReaderAt, sectors, lba uint64) (Table, error) {
	b := make([]byte, SectorSize)
	if _, err := r.ReadAt(b, int64(lba*SectorSize)); err != nil {
		return Table{}, fmt.Errorf("read header at LBA %d: %w", lba, err)
	}
	if string(b[0:8]) != signature {
		return Table{}, fmt.Errorf("header at LBA %d: %w", lba, ErrNotGPT)
	}
	le := binary.LittleEndian
	if rev := le.Uint32(b[8:]); rev>>16 != 1 {
		return Table{}, fmt.Errorf("header at LBA %d: unsupported revision %#08x", lba, rev)
	}
	hs := le.Uint32(b[12:])
	if hs < headerSize || hs > SectorSize {
		return Table{}, fmt.Errorf("header at LBA %d: header size %d not in %d..%d", lba, hs, headerSize, SectorSize)
	}
	want := le.Uint32(b[16:])
	h := bytes.Clone(b[:hs])
	clear(h[16:20])
	if got := crc32.ChecksumIEEE(h); got != want {
		return Table{}, fmt.Errorf("header at LBA %d: CRC32 is %#08x, header says %#08x", lba, got, want)
	}
	if my := le.Uint64(b[24:]); my != lba {
		return Table{}, fmt.Errorf("header at LBA %d says it is at LBA %d", lba, my)
	}
	t := Table{FirstUsable: le.Uint64(b[40:]), LastUsable: le.Uint64(b[48:])}
	copy(t.DiskID[:], b[56:72])
	if t.FirstUsable > t.LastUsable || t.LastUsable >= sectors || t.FirstUsable < 2 {
		return Table{}, fmt.Errorf("header at LBA %d: usable range %d-%d does not fit a disk of %d sectors",
			lba, t.FirstUsable, t.LastUsable, sectors)
	}
	entriesLBA := le.Uint64(b[72:])
	n, es := le.Uint32(b[80:]), le.Uint32(b[84:])
	if n > maxEntries || es < entrySize || es > maxEntrySize || es&(es-1) != 0 || uint64(n)*uint64(es) > maxEntryBytes {
		return Table{}, fmt.Errorf("header at LBA %d: %d entries of %d bytes is not a sane entry array", lba, n, es)
	}
	arrayBytes := uint64(n) * uint64(es)
	arraySectors := (arrayBytes + SectorSize - 1) / SectorSize
	if entriesLBA < 1 || entriesLBA >= sectors || arraySectors > sectors-entriesLBA {
		return Table{}, fmt.Errorf("header at LBA %d: entry array at LBA %d (%d sectors) is outside the disk", lba, entriesLBA, arraySectors)
	}
	arr := make([]byte, arrayBytes)
	if _, err := r.ReadAt(arr, int64(entriesLBA*SectorSize)); err != nil {
		return Table{}, fmt.Errorf("read entries at LBA %d: %w", entriesLBA, err)
	}
	if got, want := crc32.ChecksumIEEE(arr), le.Uint32(b[88:]); got != want {
		return Table{}, fmt.Errorf("entries at LBA %d: CRC32 is %#08x, header says %#08x", entriesLBA, got, want)
	}
	for i := range int(n) {
		e := arr[i*int(es):][:entrySize]
		var p Partition
		copy(p.Type[:], e[0:16])
		if p.Type.IsZero() {
			continue
		}
		p.Number = i + 1
		copy(p.ID[:], e[16:32])
		p.FirstLBA, p.LastLBA = le.Uint64(e[32:]), le.Uint64(e[40:])
		p.Attributes = le.Uint64(e[48:])
		if p.FirstLBA > p.LastLBA || p.FirstLBA < t.FirstUsable || p.LastLBA > t.LastUsable {
			return Table{}, fmt.Errorf("entry %d: sectors %d-%d outside the usable range %d-%d",
				p.Number, p.FirstLBA, p.LastLBA, t.FirstUsable, t.LastUsable)
		}
		p.Name = decodeName(e[56:entrySize])
		t.Partitions = append(t.Partitions, p)
	}
	return t, nil
}

func decodeName(b []byte) string {
	u := make([]uint16, 0, nameUnits)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}
