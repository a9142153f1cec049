package smbios

import (
	"encoding/hex"
	"strings"
)

// Structure types decoded by this package (DSP0134 section 7).
const (
	TypeBIOS      = 0
	TypeSystem    = 1
	TypeBaseboard = 2
)

// BIOS is the type 0 structure.
type BIOS struct {
	Vendor      string
	Version     string
	ReleaseDate string
}

// System is the type 1 structure.
type System struct {
	Manufacturer string
	Product      string
	Version      string
	Serial       string
	// UUID is lower-case 8-4-4-4-12 hex, "" when the firmware marks it not
	// present (all 0xFF) or not set (all 0x00).
	UUID   string
	SKU    string
	Family string
}

// Baseboard is the type 2 structure.
type Baseboard struct {
	Manufacturer string
	Product      string
	Version      string
	Serial       string
	AssetTag     string
}

// BIOS decodes the first type 0 structure.
func (t *Table) BIOS() (BIOS, bool) {
	s, ok := t.First(TypeBIOS)
	if !ok {
		return BIOS{}, false
	}
	return BIOS{
		Vendor:      s.String(0x04),
		Version:     s.String(0x05),
		ReleaseDate: s.String(0x08),
	}, true
}

// System decodes the first type 1 structure.
func (t *Table) System() (System, bool) {
	s, ok := t.First(TypeSystem)
	if !ok {
		return System{}, false
	}
	return System{
		Manufacturer: s.String(0x04),
		Product:      s.String(0x05),
		Version:      s.String(0x06),
		Serial:       s.String(0x07),
		UUID:         uuid(s, t.EntryPoint.AtLeast(2, 6)),
		SKU:          s.String(0x19),
		Family:       s.String(0x1A),
	}, true
}

// Baseboard decodes the first type 2 structure.
func (t *Table) Baseboard() (Baseboard, bool) {
	s, ok := t.First(TypeBaseboard)
	if !ok {
		return Baseboard{}, false
	}
	return Baseboard{
		Manufacturer: s.String(0x04),
		Product:      s.String(0x05),
		Version:      s.String(0x06),
		Serial:       s.String(0x07),
		AssetTag:     s.String(0x08),
	}, true
}

const (
	uuidOff = 0x08
	uuidLen = 16
)

// uuid formats the type 1 UUID field. Since SMBIOS 2.6 the first three
// fields are little-endian (RFC 4122 wire order otherwise); Linux's
// product_uuid follows the same rule, so both sources agree.
func uuid(s Structure, littleEndian bool) string {
	if len(s.Formatted) < uuidOff+uuidLen {
		return ""
	}
	var u [uuidLen]byte
	copy(u[:], s.Formatted[uuidOff:uuidOff+uuidLen])
	if u == [uuidLen]byte{} || u == [uuidLen]byte{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF} {
		return ""
	}
	if littleEndian {
		u[0], u[1], u[2], u[3] = u[3], u[2], u[1], u[0]
		u[4], u[5] = u[5], u[4]
		u[6], u[7] = u[7], u[6]
	}
	h := hex.EncodeToString(u[:])
	return strings.Join([]string{h[0:8], h[8:12], h[12:16], h[16:20], h[20:32]}, "-")
}
