package lvm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// PV is a physical volume.
type PV struct {
	// Name is the device, e.g. "/dev/vdb"; "[unknown]" when the PV is missing.
	Name string
	// VG is the volume group, "" for a PV in none.
	VG   string
	Size int64 // bytes
	Free int64 // bytes not allocated to LVs
	UUID string
	// Attr is pv_attr: allocatable (a), exported (x), missing (m).
	Attr string
	// Missing is set for a PV the VG's metadata lists but no device holds.
	Missing bool
}

// VG is a volume group.
type VG struct {
	Name       string
	Size       int64 // bytes
	Free       int64 // bytes
	ExtentSize int64 // bytes; LV sizes are rounded up to it
	PVCount    int
	LVCount    int
	// MissingPVs counts physical volumes of the VG that no device holds.
	MissingPVs int
	UUID       string
	// Attr is vg_attr; its fourth character is 'p' when PVs are missing.
	Attr string
	Tags []string
}

// LV is a logical volume.
type LV struct {
	Name string
	VG   string
	Size int64 // bytes
	// Attr is lv_attr, ten characters; see Active, Partial, IsSnapshot and
	// Invalid.
	Attr string
	// Origin is the LV a snapshot was taken of, "" for others.
	Origin string
	// Devices are the PVs the LV lies on, in order of first use, e.g.
	// ["/dev/vdb", "/dev/vdc"]; "[unknown]" stands for a missing PV. A
	// snapshot's are those of its copy-on-write area.
	Devices []string
	// Created is when the LV was created; zero if LVM does not know.
	Created time.Time
	// DataPercent is how full a snapshot's copy-on-write area is
	// (snap_percent, else data_percent), -1 when LVM reports none: the LV is
	// not a snapshot or is inactive.
	DataPercent float64
	Tags        []string
	UUID        string
}

// Active reports whether the LV is active (has a device node).
func (l LV) Active() bool { return len(l.Attr) > 4 && l.Attr[4] == 'a' }

// Partial reports whether part of the LV lies on a missing PV.
func (l LV) Partial() bool { return len(l.Attr) > 8 && l.Attr[8] == 'p' }

// IsSnapshot reports whether the LV is a copy-on-write snapshot ('s', or 'S'
// while it merges back into its origin).
func (l LV) IsSnapshot() bool { return len(l.Attr) > 0 && (l.Attr[0] == 's' || l.Attr[0] == 'S') }

// Invalid reports whether the LV is a snapshot made useless because its
// copy-on-write area overflowed ('I', or 'S' when also suspended).
func (l LV) Invalid() bool { return len(l.Attr) > 4 && (l.Attr[4] == 'I' || l.Attr[4] == 'S') }

// lvTimeLayout is LVM's default report/time_format, "%Y-%m-%d %T %z".
const lvTimeLayout = "2006-01-02 15:04:05 -0700"

// row is one report line. With --reportformat json LVM writes every value,
// numbers included, as a JSON string.
type row map[string]string

// ParsePVs parses the output of "pvs --reportformat json --units b --nosuffix".
func ParsePVs(data []byte) ([]PV, error) {
	rows, err := parseReport(data, "pv")
	if err != nil {
		return nil, err
	}
	pvs := make([]PV, 0, len(rows))
	for i, r := range rows {
		f := fields{r: r}
		p := PV{
			Name: f.str("pv_name"),
			VG:   f.str("vg_name"),
			Size: f.bytes("pv_size"),
			Free: f.bytes("pv_free"),
			UUID: f.str("pv_uuid"),
			Attr: f.str("pv_attr"),
		}
		p.Missing = f.str("pv_missing") == "missing" || (len(p.Attr) > 2 && p.Attr[2] == 'm')
		if f.err == nil && p.Name == "" {
			f.err = errors.New("empty pv_name")
		}
		if f.err != nil {
			return nil, fmt.Errorf("lvm pv report row %d: %w", i, f.err)
		}
		pvs = append(pvs, p)
	}
	return pvs, nil
}

// ParseVGs parses the output of "vgs --reportformat json --units b --nosuffix".
func ParseVGs(data []byte) ([]VG, error) {
	rows, err := parseReport(data, "vg")
	if err != nil {
		return nil, err
	}
	vgs := make([]VG, 0, len(rows))
	for i, r := range rows {
		f := fields{r: r}
		v := VG{
			Name:       f.str("vg_name"),
			Size:       f.bytes("vg_size"),
			Free:       f.bytes("vg_free"),
			ExtentSize: f.bytes("vg_extent_size"),
			PVCount:    f.count("pv_count"),
			LVCount:    f.count("lv_count"),
			MissingPVs: f.count("vg_missing_pv_count"),
			UUID:       f.str("vg_uuid"),
			Attr:       f.str("vg_attr"),
			Tags:       splitList(f.str("vg_tags")),
		}
		if f.err == nil && v.Name == "" {
			f.err = errors.New("empty vg_name")
		}
		if f.err != nil {
			return nil, fmt.Errorf("lvm vg report row %d: %w", i, f.err)
		}
		vgs = append(vgs, v)
	}
	return vgs, nil
}

// ParseLVs parses the output of "lvs --reportformat json --units b
// --nosuffix". Asking for the devices field makes LVM print one row per
// segment, so the rows of one LV (same VG and name) are merged and their
// devices joined.
func ParseLVs(data []byte) ([]LV, error) {
	rows, err := parseReport(data, "lv")
	if err != nil {
		return nil, err
	}
	lvs := make([]LV, 0, len(rows))
	index := make(map[string]int) // VG/LV to index in lvs
	for i, r := range rows {
		f := fields{r: r}
		l := LV{
			Name:        f.str("lv_name"),
			VG:          f.str("vg_name"),
			Size:        f.bytes("lv_size"),
			Attr:        f.str("lv_attr"),
			Origin:      f.str("origin"),
			Created:     f.time("lv_time"),
			DataPercent: f.percent("snap_percent"),
			Tags:        splitList(f.str("lv_tags")),
			UUID:        f.str("lv_uuid"),
		}
		if dp := f.percent("data_percent"); l.DataPercent < 0 {
			l.DataPercent = dp
		}
		devs := f.devices("devices")
		if f.err == nil && (l.Name == "" || l.VG == "") {
			f.err = errors.New("empty lv_name or vg_name")
		}
		if f.err != nil {
			return nil, fmt.Errorf("lvm lv report row %d: %w", i, f.err)
		}
		key := l.VG + "/" + l.Name
		if j, ok := index[key]; ok {
			for _, d := range devs {
				lvs[j].Devices = appendUnique(lvs[j].Devices, d)
			}
			continue
		}
		for _, d := range devs {
			l.Devices = appendUnique(l.Devices, d)
		}
		index[key] = len(lvs)
		lvs = append(lvs, l)
	}
	return lvs, nil
}

// parseReport returns the rows of kind ("pv", "vg", "lv") from an LVM JSON
// report: {"report":[{"lv":[{...},...]}]}. Lines before the JSON are
// skipped, since LVM prints some messages on stdout, and so is anything
// after it.
func parseReport(data []byte, kind string) ([]row, error) {
	start := jsonStart(data)
	if start < 0 {
		return nil, errors.New("lvm report: no JSON object in output")
	}
	var doc struct {
		Report []map[string]json.RawMessage `json:"report"`
	}
	if err := json.NewDecoder(bytes.NewReader(data[start:])).Decode(&doc); err != nil {
		return nil, fmt.Errorf("lvm report: %w", err)
	}
	for _, section := range doc.Report {
		raw, ok := section[kind]
		if !ok {
			continue
		}
		var rows []row
		if err := json.Unmarshal(raw, &rows); err != nil {
			return nil, fmt.Errorf("lvm report %q: %w", kind, err)
		}
		for i, r := range rows {
			if r == nil {
				return nil, fmt.Errorf("lvm report %q row %d: null", kind, i)
			}
		}
		return rows, nil
	}
	return nil, fmt.Errorf("lvm report: no %q section", kind)
}

// jsonStart is the offset of the first line that starts, after blanks,
// with '{'; -1 if none.
func jsonStart(data []byte) int {
	for off := 0; off < len(data); {
		line := data[off:]
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			line = line[:i+1]
		}
		trimmed := bytes.TrimLeft(line, " \t\r")
		if len(trimmed) > 0 && trimmed[0] == '{' {
			return off + len(line) - len(trimmed)
		}
		off += len(line)
	}
	return -1
}

// fields reads typed values out of a row, keeping the first error so a
// parser can read them all and check once.
type fields struct {
	r   row
	err error
}

func (f *fields) fail(name, why string) {
	if f.err == nil {
		f.err = fmt.Errorf("field %q: %s", name, why)
	}
}

func (f *fields) str(name string) string {
	v, ok := f.r[name]
	if !ok {
		f.fail(name, "missing")
	}
	return v
}

// bytes is a size in bytes: a non-negative decimal integer.
func (f *fields) bytes(name string) int64 {
	v, ok := f.r[name]
	if !ok {
		f.fail(name, "missing")
		return 0
	}
	if v == "" || v[0] < '0' || v[0] > '9' {
		f.fail(name, fmt.Sprintf("%q is not a non-negative integer", v))
		return 0
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		f.fail(name, fmt.Sprintf("%q is not a non-negative integer", v))
		return 0
	}
	return n
}

// count is a non-negative count that fits an int.
func (f *fields) count(name string) int {
	n := f.bytes(name)
	if int64(int(n)) != n {
		f.fail(name, "out of range")
		return 0
	}
	return int(n)
}

// percent is a percentage, -1 when empty (LVM has none to report).
func (f *fields) percent(name string) float64 {
	v, ok := f.r[name]
	if !ok {
		f.fail(name, "missing")
		return -1
	}
	if v == "" {
		return -1
	}
	p, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(p) || p < 0 || p > 100 {
		f.fail(name, fmt.Sprintf("%q is not a percentage", v))
		return -1
	}
	return p
}

// time is a time in LVM's default format; zero when empty.
func (f *fields) time(name string) time.Time {
	v, ok := f.r[name]
	if !ok {
		f.fail(name, "missing")
		return time.Time{}
	}
	if v == "" {
		return time.Time{}
	}
	t, err := time.Parse(lvTimeLayout, v)
	if err != nil {
		f.fail(name, fmt.Sprintf("%q is not a time", v))
		return time.Time{}
	}
	return t
}

// devices parses "/dev/vdb(0),/dev/vdc(12)" into ["/dev/vdb", "/dev/vdc"],
// dropping the starting extents.
func (f *fields) devices(name string) []string {
	var devs []string
	for _, d := range splitList(f.str(name)) {
		open := strings.LastIndexByte(d, '(')
		if open <= 0 || !strings.HasSuffix(d, ")") {
			f.fail(name, fmt.Sprintf("%q is not device(extent)", d))
			return nil
		}
		ext := d[open+1 : len(d)-1]
		if _, err := strconv.ParseUint(ext, 10, 64); err != nil {
			f.fail(name, fmt.Sprintf("%q is not device(extent)", d))
			return nil
		}
		devs = append(devs, d[:open])
	}
	return devs
}

// splitList splits LVM's comma-separated lists (tags, devices); nil for "".
func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func appendUnique(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}
