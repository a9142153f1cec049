package hwcompat

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/dyad-ha/dyad/hwcompat/smbios"
)

// collectFirmware fills the firmware identity from the raw SMBIOS table,
// falling back to the kernel's decoded /sys/class/dmi/id when the table is
// absent or unusable.
func collectFirmware(root string, inv *Inventory) {
	t, err := readSMBIOS(root)
	if err == nil {
		fromSMBIOS(t, inv)
		return
	}
	if !errors.Is(err, fs.ErrNotExist) {
		inv.Warnings = append(inv.Warnings, fmt.Sprintf("SMBIOS table unusable, using /sys/class/dmi/id: %v", err))
	}
	if fromDMIID(root, inv) {
		return
	}
	inv.FirmwareSource = FirmwareNone
}

func readSMBIOS(root string) (*smbios.Table, error) {
	dir := sysPath(root, "sys", "firmware", "dmi", "tables")
	ep, err := os.ReadFile(sysPath(dir, "smbios_entry_point"))
	if err != nil {
		return nil, err
	}
	table, err := os.ReadFile(sysPath(dir, "DMI"))
	if err != nil {
		return nil, err
	}
	t, err := smbios.Parse(ep, table)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return t, nil
}

func fromSMBIOS(t *smbios.Table, inv *Inventory) {
	inv.FirmwareSource = FirmwareSMBIOS
	inv.SMBIOSVersion = t.EntryPoint.Version()
	if s, ok := t.System(); ok {
		inv.System = System{
			Manufacturer: s.Manufacturer,
			Product:      s.Product,
			Version:      s.Version,
			Serial:       s.Serial,
			UUID:         s.UUID,
			SKU:          s.SKU,
			Family:       s.Family,
		}
	}
	if b, ok := t.BIOS(); ok {
		inv.BIOS = BIOS{Vendor: b.Vendor, Version: b.Version, ReleaseDate: b.ReleaseDate}
	}
	if b, ok := t.Baseboard(); ok {
		inv.Baseboard = &Baseboard{
			Manufacturer: b.Manufacturer,
			Product:      b.Product,
			Version:      b.Version,
			Serial:       b.Serial,
			AssetTag:     b.AssetTag,
		}
	}
}

// fromDMIID reads the kernel's decoded DMI attributes; it reports false
// when the kernel has none (no DMI support or no firmware table).
func fromDMIID(root string, inv *Inventory) bool {
	dir := sysPath(root, "sys", "class", "dmi", "id")
	if _, err := os.Stat(dir); err != nil {
		return false
	}
	attr := func(name string) string { return optional(sysPath(dir, name)) }
	inv.FirmwareSource = FirmwareSysfs
	inv.System = System{
		Manufacturer: attr("sys_vendor"),
		Product:      attr("product_name"),
		Version:      attr("product_version"),
		Serial:       attr("product_serial"),
		UUID:         attr("product_uuid"),
		SKU:          attr("product_sku"),
		Family:       attr("product_family"),
	}
	inv.BIOS = BIOS{
		Vendor:      attr("bios_vendor"),
		Version:     attr("bios_version"),
		ReleaseDate: attr("bios_date"),
	}
	board := Baseboard{
		Manufacturer: attr("board_vendor"),
		Product:      attr("board_name"),
		Version:      attr("board_version"),
		Serial:       attr("board_serial"),
		AssetTag:     attr("board_asset_tag"),
	}
	if board != (Baseboard{}) {
		inv.Baseboard = &board
	}
	return true
}
