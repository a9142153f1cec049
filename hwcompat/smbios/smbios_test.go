package smbios

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
)

// structure encodes one table entry: header, formatted body, string set.
func structure(typ byte, handle uint16, body []byte, strs ...string) []byte {
	b := []byte{typ, byte(headerLen + len(body)), 0, 0}
	binary.LittleEndian.PutUint16(b[2:], handle)
	b = append(b, body...)
	for _, s := range strs {
		b = append(b, s...)
		b = append(b, 0)
	}
	if len(strs) == 0 {
		b = append(b, 0)
	}
	return append(b, 0)
}

func endOfTable() []byte { return structure(typeEndOfT, 0xFEFF, nil) }

// fixChecksum sets b[at] so that the bytes of b sum to zero.
func fixChecksum(b []byte, at int) {
	b[at] = 0
	var sum byte
	for _, c := range b {
		sum += c
	}
	b[at] = -sum
}

func entry2(major, minor byte, tableLen uint16, count uint16) []byte {
	b := make([]byte, 0x1F)
	copy(b, anchor2)
	b[5], b[6], b[7] = 0x1F, major, minor
	copy(b[0x10:], anchorLegacy)
	binary.LittleEndian.PutUint16(b[0x16:], tableLen)
	binary.LittleEndian.PutUint32(b[0x18:], 0xF0000)
	binary.LittleEndian.PutUint16(b[0x1C:], count)
	b[0x1E] = major<<4 | minor&0x0F
	fixChecksum(b[0x10:], 0x15-0x10)
	fixChecksum(b, 4)
	return b
}

func entry3(major, minor, rev byte, maxLen uint32) []byte {
	b := make([]byte, 0x18)
	copy(b, anchor3)
	b[6], b[7], b[8], b[9], b[10] = 0x18, major, minor, rev, 1
	binary.LittleEndian.PutUint32(b[12:], maxLen)
	binary.LittleEndian.PutUint64(b[16:], 0x7FFF0000)
	fixChecksum(b, 5)
	return b
}

func entryLegacy(bcd byte, tableLen, count uint16) []byte {
	b := make([]byte, 0x0F)
	copy(b, anchorLegacy)
	binary.LittleEndian.PutUint16(b[6:], tableLen)
	binary.LittleEndian.PutUint32(b[8:], 0xF0000)
	binary.LittleEndian.PutUint16(b[12:], count)
	b[14] = bcd
	fixChecksum(b, 5)
	return b
}

func readFixture(t *testing.T, dir string) (entry, table []byte) {
	t.Helper()
	entry, err := os.ReadFile(filepath.Join("testdata", dir, "smbios_entry_point"))
	if err != nil {
		t.Fatal(err)
	}
	table, err = os.ReadFile(filepath.Join("testdata", dir, "DMI"))
	if err != nil {
		t.Fatal(err)
	}
	return entry, table
}

func TestParseQEMUFixtures(t *testing.T) {
	seaBIOS := BIOS{Vendor: "SeaBIOS", Version: "1.16.2-debian-1.16.2-1", ReleaseDate: "04/01/2014"}
	tests := []struct {
		dir           string
		wantVersion   string
		wantAnchor    string
		wantSystem    System
		wantBaseboard *Baseboard
	}{
		{
			dir:         "qemu-7.2-pc",
			wantVersion: "2.8",
			wantAnchor:  anchor2,
			wantSystem:  System{Manufacturer: "Dyad Lab", Product: "QEMU PM", Version: "pc-i440fx-7.2", Serial: "LAB-PM1"},
		},
		{
			dir:         "qemu-7.2-q35-smbios3",
			wantVersion: "3.0.0",
			wantAnchor:  anchor3,
			wantSystem:  System{Manufacturer: "Dyad Lab", Product: "QEMU PM", Version: "pc-q35-7.2", Serial: "LAB-PM1"},
		},
		{
			dir:         "qemu-7.2-q35-smbios3-uuid",
			wantVersion: "3.0.0",
			wantAnchor:  anchor3,
			wantSystem: System{
				Manufacturer: "Dyad Lab", Product: "QEMU PM", Version: "pc-q35-7.2", Serial: "LAB-PM2",
				UUID: "12345678-9abc-def0-1122-334455667788", SKU: "DYAD-SKU", Family: "Dyad",
			},
			wantBaseboard: &Baseboard{Manufacturer: "Dyad Boards", Product: "DB-1", Version: "rev A", Serial: "BOARD-7"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			tab, err := Parse(readFixture(t, tt.dir))
			if err != nil {
				t.Fatal(err)
			}
			if got := tab.EntryPoint.Version(); got != tt.wantVersion {
				t.Errorf("Version() = %q, want %q", got, tt.wantVersion)
			}
			if tab.EntryPoint.Anchor != tt.wantAnchor {
				t.Errorf("Anchor = %q, want %q", tab.EntryPoint.Anchor, tt.wantAnchor)
			}
			if n := tab.EntryPoint.StructureCount; n != 0 && int(n) != len(tab.Structures) {
				t.Errorf("parsed %d structures, entry point announces %d", len(tab.Structures), n)
			}
			if last := tab.Structures[len(tab.Structures)-1]; last.Type != typeEndOfT {
				t.Errorf("last structure is type %d, want end-of-table", last.Type)
			}
			sys, ok := tab.System()
			if !ok || sys != tt.wantSystem {
				t.Errorf("System() = %+v, %v; want %+v", sys, ok, tt.wantSystem)
			}
			bios, ok := tab.BIOS()
			if !ok || bios != seaBIOS {
				t.Errorf("BIOS() = %+v, %v; want %+v", bios, ok, seaBIOS)
			}
			board, ok := tab.Baseboard()
			switch {
			case tt.wantBaseboard == nil && ok:
				t.Errorf("Baseboard() = %+v, want none", board)
			case tt.wantBaseboard != nil && (!ok || board != *tt.wantBaseboard):
				t.Errorf("Baseboard() = %+v, %v; want %+v", board, ok, *tt.wantBaseboard)
			}
		})
	}
}

func TestParseEntryPoint(t *testing.T) {
	badSum := entry3(3, 2, 0, 100)
	badSum[5]++
	badIntermediate := entry2(2, 8, 100, 3)
	badIntermediate[0x15]++
	fixChecksum(badIntermediate, 4)
	shortLen := entry3(3, 0, 0, 100)
	shortLen[6] = 0x10
	fixChecksum(shortLen[:0x10], 5)
	longLen := entry2(2, 8, 100, 3)
	longLen[5] = 0x40
	// 2.1 firmware that announces 0x1E bytes; Linux exports only those.
	short21 := entry2(2, 1, 200, 5)[:0x1E]
	short21[5] = 0x1E
	fixChecksum(short21, 4)
	short21NoAnchor := slices.Clone(short21)
	short21NoAnchor[0x10] = 'X'
	fixChecksum(short21NoAnchor, 4)

	tests := []struct {
		name    string
		in      []byte
		want    EntryPoint
		wantErr bool
	}{
		{"3.x", entry3(3, 2, 1, 4096), EntryPoint{Anchor: anchor3, Major: 3, Minor: 2, Revision: 1, TableLength: 4096, TableAddress: 0x7FFF0000}, false},
		{"2.x", entry2(2, 8, 374, 9), EntryPoint{Anchor: anchor2, Major: 2, Minor: 8, TableLength: 374, TableAddress: 0xF0000, StructureCount: 9}, false},
		{"2.x written as 2.51 means 2.6", entry2(2, 51, 10, 1), EntryPoint{Anchor: anchor2, Major: 2, Minor: 6, TableLength: 10, TableAddress: 0xF0000, StructureCount: 1}, false},
		{"2.x written as 2.33 means 2.3", entry2(2, 33, 10, 1), EntryPoint{Anchor: anchor2, Major: 2, Minor: 3, TableLength: 10, TableAddress: 0xF0000, StructureCount: 1}, false},
		{"2.1 with length 0x1E", short21, EntryPoint{Anchor: anchor2, Major: 2, Minor: 1, TableLength: 200, TableAddress: 0xF0000, StructureCount: 5}, false},
		{"2.1 with length 0x1E, no intermediate anchor", short21NoAnchor, EntryPoint{}, true},
		{"legacy DMI 2.0", entryLegacy(0x20, 50, 2), EntryPoint{Anchor: anchorLegacy, Major: 2, Minor: 0, TableLength: 50, TableAddress: 0xF0000, StructureCount: 2}, false},
		{"empty", nil, EntryPoint{}, true},
		{"unknown anchor", []byte("_XX_ 0123456789012345678901234567"), EntryPoint{}, true},
		{"3.x truncated", entry3(3, 0, 0, 1)[:0x17], EntryPoint{}, true},
		{"2.x truncated", entry2(2, 8, 1, 1)[:0x1D], EntryPoint{}, true},
		{"legacy truncated", entryLegacy(0x21, 1, 1)[:0x0E], EntryPoint{}, true},
		{"bad checksum", badSum, EntryPoint{}, true},
		{"bad intermediate checksum", badIntermediate, EntryPoint{}, true},
		{"length field below minimum", shortLen, EntryPoint{}, true},
		{"length field past the bytes", longLen, EntryPoint{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseEntryPoint(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("ParseEntryPoint() = %+v, %v; want ErrMalformed", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseEntryPoint() = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func concat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func TestParseTable(t *testing.T) {
	bios := structure(TypeBIOS, 0, []byte{1, 2, 0, 0, 3}, "Vendor ", "1.0", "01/02/2020")
	tests := []struct {
		name        string
		in          []byte
		wantTypes   []uint8
		wantStrings [][]string
		wantErr     bool
	}{
		{"empty table", nil, nil, nil, false},
		{"no strings", concat(structure(32, 1, []byte{0, 0, 0, 0, 0, 0, 0}), endOfTable()), []uint8{32, 127}, [][]string{nil, nil}, false},
		{"strings trimmed", concat(bios, endOfTable()), []uint8{0, 127}, [][]string{{"Vendor", "1.0", "01/02/2020"}, nil}, false},
		{"garbage after end of table ignored", concat(bios, endOfTable(), []byte{0xde, 0xad, 1}), []uint8{0, 127}, [][]string{{"Vendor", "1.0", "01/02/2020"}, nil}, false},
		{"zero padding ignored", concat(bios, []byte{0, 0, 0}), []uint8{0}, [][]string{{"Vendor", "1.0", "01/02/2020"}}, false},
		{"stray bytes", concat(bios, []byte{1, 0}), nil, nil, true},
		{"length below header", []byte{1, 3, 0, 0, 0, 0}, nil, nil, true},
		{"length past end", []byte{1, 0x1b, 0, 0, 0, 0}, nil, nil, true},
		{"strings unterminated", []byte{1, 4, 0, 0, 'a', 'b'}, nil, nil, true},
		{"string set missing final NUL", []byte{1, 4, 0, 0, 'a', 0}, nil, nil, true},
		{"formatted area runs to the end", []byte{1, 4, 0, 0}, nil, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ss, err := ParseTable(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("ParseTable() = %d structures, %v; want ErrMalformed", len(ss), err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var types []uint8
			var strs [][]string
			for _, s := range ss {
				types = append(types, s.Type)
				strs = append(strs, s.Strings)
			}
			if !reflect.DeepEqual(types, tt.wantTypes) || !reflect.DeepEqual(strs, tt.wantStrings) {
				t.Fatalf("ParseTable() types %v strings %q; want %v %q", types, strs, tt.wantTypes, tt.wantStrings)
			}
		})
	}
}

func TestParseTruncatesToExactLength(t *testing.T) {
	table := concat(structure(TypeSystem, 1, []byte{1, 0, 0, 0}, "Maker"), endOfTable())
	// A 2.x table length is exact: what follows it is not part of the table.
	withTrailer := append(append([]byte{}, table...), 0xFF, 0xFF)
	tab, err := Parse(entry2(2, 8, uint16(len(table)), 2), withTrailer)
	if err != nil {
		t.Fatal(err)
	}
	if len(tab.Structures) != 2 {
		t.Fatalf("got %d structures, want 2", len(tab.Structures))
	}
	if _, err := Parse(entry2(2, 8, uint16(len(table)-3), 2), table); !errors.Is(err, ErrMalformed) {
		t.Fatalf("table cut short by its entry point: err = %v, want ErrMalformed", err)
	}
	if _, err := Parse([]byte("junk"), table); !errors.Is(err, ErrMalformed) {
		t.Fatalf("bad entry point: err = %v, want ErrMalformed", err)
	}
}

func TestSystemDecoding(t *testing.T) {
	rawUUID := []byte{0x78, 0x56, 0x34, 0x12, 0xbc, 0x9a, 0xf0, 0xde, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88}
	ff := []byte{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}
	body := func(uuid []byte) []byte {
		b := append([]byte{1, 2, 3, 4}, uuid...)
		return append(b, 6, 5, 9) // wake-up type, SKU, family (9: past the string set)
	}
	tests := []struct {
		name  string
		entry []byte
		body  []byte
		want  System
	}{
		{"2.6 little-endian UUID", entry3(3, 0, 0, 0), body(rawUUID),
			System{Manufacturer: "M", Product: "P", Version: "V", Serial: "S", UUID: "12345678-9abc-def0-1122-334455667788", SKU: "K"}},
		{"2.5 wire-order UUID", entry2(2, 5, 0, 0), body(rawUUID),
			System{Manufacturer: "M", Product: "P", Version: "V", Serial: "S", UUID: "78563412-bc9a-f0de-1122-334455667788", SKU: "K"}},
		{"UUID not present", entry3(3, 0, 0, 0), body(ff),
			System{Manufacturer: "M", Product: "P", Version: "V", Serial: "S", SKU: "K"}},
		{"UUID not settable", entry3(3, 0, 0, 0), body(make([]byte, 16)),
			System{Manufacturer: "M", Product: "P", Version: "V", Serial: "S", SKU: "K"}},
		{"2.0 structure without UUID", entryLegacy(0x20, 0, 0), []byte{1, 0, 3, 4},
			System{Manufacturer: "M", Version: "V", Serial: "S"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			table := concat(structure(TypeSystem, 1, tt.body, "M", "P", "V", "S", "K"), endOfTable())
			ep, err := ParseEntryPoint(tt.entry)
			if err != nil {
				t.Fatal(err)
			}
			ss, err := ParseTable(table)
			if err != nil {
				t.Fatal(err)
			}
			tab := &Table{EntryPoint: ep, Structures: ss}
			got, ok := tab.System()
			if !ok || got != tt.want {
				t.Fatalf("System() = %+v, %v; want %+v", got, ok, tt.want)
			}
			if _, ok := tab.BIOS(); ok {
				t.Error("BIOS() found a structure in a table without type 0")
			}
		})
	}
}

// FuzzParse feeds arbitrary entry points and tables: parsing firmware bytes
// must never panic, and whatever is accepted must be self-consistent.
func FuzzParse(f *testing.F) {
	for _, dir := range []string{"qemu-7.2-pc", "qemu-7.2-q35-smbios3", "qemu-7.2-q35-smbios3-uuid"} {
		e, err := os.ReadFile(filepath.Join("testdata", dir, "smbios_entry_point"))
		if err != nil {
			f.Fatal(err)
		}
		tb, err := os.ReadFile(filepath.Join("testdata", dir, "DMI"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(e, tb)
	}
	f.Add(entryLegacy(0x21, 8, 1), endOfTable())
	f.Fuzz(func(t *testing.T, entry, table []byte) {
		tab, err := Parse(entry, table)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		for _, s := range tab.Structures {
			if len(s.Formatted) < headerLen || s.Formatted[0] != s.Type {
				t.Fatalf("inconsistent structure %+v", s)
			}
			for off := -1; off <= len(s.Formatted); off++ {
				s.String(off)
			}
		}
		tab.System()
		tab.BIOS()
		tab.Baseboard()
		tab.EntryPoint.Version()
	})
}
