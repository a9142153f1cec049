// Package smbios parses the SMBIOS (DMI) tables that firmware hands to the
// kernel, as Linux exposes them in /sys/firmware/dmi/tables: the entry point
// structure and the raw structure table. The bytes come from firmware, which
// is routinely wrong, so every read is bounds-checked and a malformed table
// yields an error, never a panic.
package smbios

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrMalformed is wrapped by every error caused by bytes that do not follow
// the SMBIOS specification.
var ErrMalformed = errors.New("malformed SMBIOS data")

// EntryPoint is the decoded anchor structure that locates the table.
type EntryPoint struct {
	// Anchor is "_SM_" (2.x, 32-bit), "_SM3_" (3.x, 64-bit) or "_DMI_"
	// (legacy DMI 2.0 without an SMBIOS anchor).
	Anchor string
	Major  uint8
	Minor  uint8
	// Revision is the docrev of a 3.x entry point; 0 otherwise.
	Revision uint8
	// TableAddress is the physical address of the table; informative only,
	// the table bytes are read from sysfs.
	TableAddress uint64
	// TableLength is the exact table length for 2.x and legacy entry points
	// and the maximum table size for 3.x ones.
	TableLength uint32
	// StructureCount is the number of structures a 2.x or legacy entry point
	// announces; 0 for 3.x, which does not announce one.
	StructureCount uint16
}

// AtLeast reports whether the entry point announces SMBIOS major.minor or later.
func (e EntryPoint) AtLeast(major, minor uint8) bool {
	return e.Major > major || (e.Major == major && e.Minor >= minor)
}

// Version returns the announced version as "major.minor" (plus ".docrev" for 3.x).
func (e EntryPoint) Version() string {
	if e.Anchor == anchor3 {
		return fmt.Sprintf("%d.%d.%d", e.Major, e.Minor, e.Revision)
	}
	return fmt.Sprintf("%d.%d", e.Major, e.Minor)
}

const (
	anchor2      = "_SM_"
	anchor3      = "_SM3_"
	anchorLegacy = "_DMI_"

	// Minimum lengths from the specification (DSP0134). Some 2.1 firmware
	// reports 0x1E instead of 0x1F; dmidecode and Linux accept it.
	entry2MinLen      = 0x1E
	entry3MinLen      = 0x18
	entryLegacyLen    = 0x0F
	intermediateStart = 0x10 // offset of "_DMI_" inside a 2.x entry point
)

// ParseEntryPoint decodes the contents of smbios_entry_point.
func ParseEntryPoint(b []byte) (EntryPoint, error) {
	switch {
	case bytes.HasPrefix(b, []byte(anchor3)):
		return parseEntry3(b)
	case bytes.HasPrefix(b, []byte(anchor2)):
		return parseEntry2(b)
	case bytes.HasPrefix(b, []byte(anchorLegacy)):
		return parseEntryLegacy(b)
	}
	return EntryPoint{}, fmt.Errorf("%w: entry point has no _SM_, _SM3_ or _DMI_ anchor", ErrMalformed)
}

func parseEntry3(b []byte) (EntryPoint, error) {
	if len(b) < entry3MinLen {
		return EntryPoint{}, fmt.Errorf("%w: 3.x entry point is %d bytes, need %d", ErrMalformed, len(b), entry3MinLen)
	}
	n := int(b[6])
	if n < entry3MinLen || n > len(b) {
		return EntryPoint{}, fmt.Errorf("%w: 3.x entry point length field %d outside [%d,%d]", ErrMalformed, n, entry3MinLen, len(b))
	}
	if !checksumOK(b[:n]) {
		return EntryPoint{}, fmt.Errorf("%w: 3.x entry point checksum mismatch", ErrMalformed)
	}
	return EntryPoint{
		Anchor:       anchor3,
		Major:        b[7],
		Minor:        b[8],
		Revision:     b[9],
		TableLength:  binary.LittleEndian.Uint32(b[12:16]),
		TableAddress: binary.LittleEndian.Uint64(b[16:24]),
	}, nil
}

func parseEntry2(b []byte) (EntryPoint, error) {
	if len(b) < entry2MinLen {
		return EntryPoint{}, fmt.Errorf("%w: 2.x entry point is %d bytes, need %d", ErrMalformed, len(b), entry2MinLen)
	}
	n := int(b[5])
	if n < entry2MinLen || n > len(b) {
		return EntryPoint{}, fmt.Errorf("%w: 2.x entry point length field %d outside [%d,%d]", ErrMalformed, n, entry2MinLen, len(b))
	}
	if !checksumOK(b[:n]) {
		return EntryPoint{}, fmt.Errorf("%w: 2.x entry point checksum mismatch", ErrMalformed)
	}
	ep, err := parseIntermediate(b[intermediateStart:n])
	if err != nil {
		return EntryPoint{}, fmt.Errorf("2.x intermediate anchor: %w", err)
	}
	ep.Anchor = anchor2
	ep.Major, ep.Minor = b[6], b[7]
	// Some firmware wrote its version in decimal where hex belongs (2.31 and
	// 2.33 meaning 2.3, 2.51 meaning 2.6); correct them as Linux does.
	if ep.Major == 2 {
		switch ep.Minor {
		case 31, 33:
			ep.Minor = 3
		case 51:
			ep.Minor = 6
		}
	}
	return ep, nil
}

// parseIntermediate decodes the _DMI_ part of a 2.x entry point. The 2.1
// firmware that announces 0x1E bytes cuts it before its last byte, the BCD
// revision: its own checksum then cannot be checked, but the outer checksum
// covers every field used (the version comes from the outer structure).
func parseIntermediate(b []byte) (EntryPoint, error) {
	if len(b) == entryLegacyLen-1 {
		if !bytes.HasPrefix(b, []byte(anchorLegacy)) {
			return EntryPoint{}, fmt.Errorf("%w: missing _DMI_ anchor", ErrMalformed)
		}
		return legacyFields(b), nil
	}
	return parseEntryLegacy(b)
}

func parseEntryLegacy(b []byte) (EntryPoint, error) {
	if len(b) < entryLegacyLen {
		return EntryPoint{}, fmt.Errorf("%w: _DMI_ anchor is %d bytes, need %d", ErrMalformed, len(b), entryLegacyLen)
	}
	if !bytes.HasPrefix(b, []byte(anchorLegacy)) {
		return EntryPoint{}, fmt.Errorf("%w: missing _DMI_ anchor", ErrMalformed)
	}
	if !checksumOK(b[:entryLegacyLen]) {
		return EntryPoint{}, fmt.Errorf("%w: _DMI_ checksum mismatch", ErrMalformed)
	}
	ep := legacyFields(b)
	bcd := b[14]
	ep.Major, ep.Minor = bcd>>4, bcd&0x0F
	return ep, nil
}

// legacyFields reads the table location of a _DMI_ structure of at least
// 14 bytes.
func legacyFields(b []byte) EntryPoint {
	return EntryPoint{
		Anchor:         anchorLegacy,
		TableLength:    uint32(binary.LittleEndian.Uint16(b[6:8])),
		TableAddress:   uint64(binary.LittleEndian.Uint32(b[8:12])),
		StructureCount: binary.LittleEndian.Uint16(b[12:14]),
	}
}

func checksumOK(b []byte) bool {
	var sum byte
	for _, c := range b {
		sum += c
	}
	return sum == 0
}

// Structure is one table entry: the formatted area (header included, so
// offsets match the specification's tables) and its string set.
type Structure struct {
	Type   uint8
	Handle uint16
	// Formatted is the formatted area including the 4-byte header.
	Formatted []byte
	// Strings holds the string set; string number n is Strings[n-1].
	Strings []string
}

// Byte returns the byte at offset off of the formatted area and whether the
// structure is long enough to hold it (older versions have shorter structures).
func (s Structure) Byte(off int) (byte, bool) {
	if off < 0 || off >= len(s.Formatted) {
		return 0, false
	}
	return s.Formatted[off], true
}

// String returns the string referenced by the string-number byte at offset off.
// Absent fields, number 0 and numbers past the string set read as "".
func (s Structure) String(off int) string {
	n, ok := s.Byte(off)
	if !ok || n == 0 || int(n) > len(s.Strings) {
		return ""
	}
	return s.Strings[n-1]
}

const (
	headerLen  = 4
	typeEndOfT = 127
)

// ParseTable splits the raw structure table (the DMI file) into structures.
// It stops after the end-of-table structure (type 127) or when the bytes run
// out; trailing bytes after type 127 are ignored, as firmware often pads.
func ParseTable(b []byte) ([]Structure, error) {
	var out []Structure
	off := 0
	for off < len(b) {
		// A table sized by a 3.x maximum may end in zero padding shorter
		// than a header; anything else that short is truncation.
		if len(b)-off < headerLen {
			if allZero(b[off:]) {
				break
			}
			return nil, fmt.Errorf("%w: %d stray bytes at offset %#x", ErrMalformed, len(b)-off, off)
		}
		typ, n := b[off], int(b[off+1])
		if n < headerLen {
			return nil, fmt.Errorf("%w: structure type %d at offset %#x has length %d < %d", ErrMalformed, typ, off, n, headerLen)
		}
		if off+n > len(b) {
			return nil, fmt.Errorf("%w: structure type %d at offset %#x has length %d past table end %#x", ErrMalformed, typ, off, n, len(b))
		}
		s := Structure{
			Type:      typ,
			Handle:    binary.LittleEndian.Uint16(b[off+2 : off+4]),
			Formatted: b[off : off+n],
		}
		strs, used, err := parseStrings(b[off+n:])
		if err != nil {
			return nil, fmt.Errorf("structure type %d at offset %#x: %w", typ, off, err)
		}
		s.Strings = strs
		out = append(out, s)
		off += n + used
		if typ == typeEndOfT {
			break
		}
	}
	return out, nil
}

// parseStrings reads a string set: NUL-terminated strings ended by an extra
// NUL; an empty set is two NULs. It returns the strings and bytes consumed.
func parseStrings(b []byte) ([]string, int, error) {
	if len(b) >= 2 && b[0] == 0 && b[1] == 0 {
		return nil, 2, nil
	}
	var strs []string
	off := 0
	for {
		i := bytes.IndexByte(b[off:], 0)
		if i < 0 {
			return nil, 0, fmt.Errorf("%w: string set not terminated", ErrMalformed)
		}
		if i == 0 {
			return strs, off + 1, nil
		}
		strs = append(strs, string(bytes.TrimSpace(b[off:off+i])))
		off += i + 1
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Table is a parsed SMBIOS table together with the entry point that dates it.
type Table struct {
	EntryPoint EntryPoint
	Structures []Structure
}

// Parse decodes the two sysfs files smbios_entry_point and DMI.
func Parse(entryPoint, table []byte) (*Table, error) {
	ep, err := ParseEntryPoint(entryPoint)
	if err != nil {
		return nil, fmt.Errorf("entry point: %w", err)
	}
	if ep.Anchor != anchor3 && uint64(len(table)) > uint64(ep.TableLength) {
		// 2.x lengths are exact: bytes past them belong to something else.
		table = table[:ep.TableLength]
	}
	ss, err := ParseTable(table)
	if err != nil {
		return nil, fmt.Errorf("SMBIOS %s table: %w", ep.Version(), err)
	}
	return &Table{EntryPoint: ep, Structures: ss}, nil
}

// First returns the first structure of the given type.
func (t *Table) First(typ uint8) (Structure, bool) {
	for _, s := range t.Structures {
		if s.Type == typ {
			return s, true
		}
	}
	return Structure{}, false
}
