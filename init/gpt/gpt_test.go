package gpt

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// disk is an in-memory disk for tests.
type disk []byte

func (d disk) ReadAt(p []byte, off int64) (int, error) { return bytes.NewReader(d).ReadAt(p, off) }

func (d disk) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(d)) {
		return 0, errors.New("write beyond end of disk")
	}
	return copy(d[off:], p), nil
}

const testName = "dyad-data"

func mustSingle(t *testing.T, size int64) Table {
	t.Helper()
	tab, err := SinglePartition(size, testName)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestGUID(t *testing.T) {
	g, err := ParseGUID(LinuxFilesystem)
	if err != nil {
		t.Fatal(err)
	}
	// On-disk bytes of the Linux filesystem type, as in every GPT on earth.
	want := GUID{0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4}
	if g != want {
		t.Errorf("ParseGUID(%s) = % x, want % x", LinuxFilesystem, g[:], want[:])
	}
	if s := g.String(); s != LinuxFilesystem {
		t.Errorf("String() = %s, want %s", s, LinuxFilesystem)
	}
	for _, bad := range []string{"", "0FC63DAF84834772-8E79-3D69D8477DE4xx", "0FC63DAF-8483-4772-8E79-3D69D8477DEZ"} {
		if _, err := ParseGUID(bad); err == nil {
			t.Errorf("ParseGUID(%q) succeeded", bad)
		}
	}
	a, err := NewGUID()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewGUID()
	if a == b || a.IsZero() {
		t.Errorf("NewGUID gave %s and %s", a, b)
	}
	if s := a.String(); s[14] != '4' || !strings.ContainsRune("89AB", rune(s[19])) {
		t.Errorf("NewGUID %s is not a version 4, RFC 4122 variant GUID", s)
	}
}

func TestSinglePartition(t *testing.T) {
	tests := []struct {
		size        int64
		first, last uint64
		wantErr     bool
	}{
		{size: 64 << 20, first: 2048, last: 129023},
		{size: 64<<20 + 1<<19 + 511, first: 2048, last: 129023}, // partial MiB and sector at the end are left out
		{size: 3 << 20, first: 2048, last: 4095},
		{size: 3<<20 - 512, wantErr: true},
		{size: -1, wantErr: true},
	}
	for _, tt := range tests {
		tab, err := SinglePartition(tt.size, testName)
		if tt.wantErr {
			if err == nil {
				t.Errorf("SinglePartition(%d) succeeded, want error", tt.size)
			}
			continue
		}
		if err != nil {
			t.Errorf("SinglePartition(%d): %v", tt.size, err)
			continue
		}
		p := tab.Partitions[0]
		if len(tab.Partitions) != 1 || p.Number != 1 || p.FirstLBA != tt.first || p.LastLBA != tt.last ||
			p.Name != testName || p.Type.String() != LinuxFilesystem || p.ID.IsZero() || tab.DiskID.IsZero() {
			t.Errorf("SinglePartition(%d) = %+v, want partition 1 %d-%d", tt.size, tab, tt.first, tt.last)
		}
	}
}

func TestWriteReadRoundTrip(t *testing.T) {
	const size = 8 << 20
	d := make(disk, size)
	in := mustSingle(t, size)
	in.Partitions[0].Attributes = 1 << 60
	if err := Write(d, size, in); err != nil {
		t.Fatal(err)
	}
	out, err := Read(d, size)
	if err != nil {
		t.Fatal(err)
	}
	if out.FromBackup || out.DiskID != in.DiskID || out.FirstUsable != 34 || out.LastUsable != size/512-34 {
		t.Errorf("Read header = %+v, want disk %s, usable 34-%d from the primary", out, in.DiskID, size/512-34)
	}
	if len(out.Partitions) != 1 || out.Partitions[0] != in.Partitions[0] {
		t.Errorf("Read partitions = %+v, want %+v", out.Partitions, in.Partitions)
	}
	if p, ok := out.Find(testName); !ok || p.Number != 1 {
		t.Errorf("Find(%q) = %+v, %v", testName, p, ok)
	}
	mbr := d[:512]
	if mbr[450] != 0xEE || mbr[510] != 0x55 || mbr[511] != 0xAA || !bytes.Equal(mbr[454:462], []byte{1, 0, 0, 0, 0xFF, 0x3F, 0, 0}) {
		t.Errorf("protective MBR entry = % x, signature % x", mbr[446:462], mbr[510:])
	}
}

func TestReadFallsBackToBackup(t *testing.T) {
	const size = 4 << 20
	for _, damage := range []struct {
		name string
		off  int
	}{
		{"header", 512 + 40},
		{"entries", 1024 + 60},
	} {
		d := make(disk, size)
		in := mustSingle(t, size)
		if err := Write(d, size, in); err != nil {
			t.Fatal(err)
		}
		d[damage.off] ^= 0xFF
		out, err := Read(d, size)
		if err != nil {
			t.Errorf("damaged primary %s: %v", damage.name, err)
			continue
		}
		if !out.FromBackup || len(out.Partitions) != 1 || out.Partitions[0] != in.Partitions[0] {
			t.Errorf("damaged primary %s: Read = %+v, want the backup table", damage.name, out)
		}
	}
}

func TestReadErrors(t *testing.T) {
	const size = 4 << 20
	last := size - 512
	tests := []struct {
		name    string
		damage  func(d disk)
		notGPT  bool
		wantMsg string
	}{
		{name: "blank disk", damage: func(d disk) { clear(d) }, notGPT: true},
		{name: "both headers CRC", damage: func(d disk) { d[512+60] ^= 1; d[last+60] ^= 1 }, wantMsg: "CRC32"},
		{name: "both entry arrays", damage: func(d disk) { d[1024] ^= 1; d[last-32*512] ^= 1 }, wantMsg: "entries at LBA 2: CRC32"},
		{name: "primary gone, backup CRC", damage: func(d disk) { clear(d[512:1024]); d[last+60] ^= 1 }, wantMsg: "no GPT signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := make(disk, size)
			if err := Write(d, size, mustSingle(t, size)); err != nil {
				t.Fatal(err)
			}
			tt.damage(d)
			_, err := Read(d, size)
			if err == nil {
				t.Fatal("Read succeeded")
			}
			if errors.Is(err, ErrNotGPT) != tt.notGPT {
				t.Errorf("errors.Is(%v, ErrNotGPT) = %v, want %v", err, !tt.notGPT, tt.notGPT)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not mention %q", err, tt.wantMsg)
			}
		})
	}
}

func TestWriteRejects(t *testing.T) {
	const size = 4 << 20
	typ, _ := ParseGUID(LinuxFilesystem)
	ok := Partition{Number: 1, Type: typ, FirstLBA: 2048, LastLBA: 4095, Name: "a"}
	tests := []struct {
		name string
		size int64
		edit func(p *Partition, more *[]Partition)
	}{
		{"number 0", size, func(p *Partition, _ *[]Partition) { p.Number = 0 }},
		{"number 129", size, func(p *Partition, _ *[]Partition) { p.Number = 129 }},
		{"zero type", size, func(p *Partition, _ *[]Partition) { p.Type = GUID{} }},
		{"before first usable", size, func(p *Partition, _ *[]Partition) { p.FirstLBA = 33 }},
		{"after last usable", size, func(p *Partition, _ *[]Partition) { p.LastLBA = size/512 - 33 }},
		{"reversed", size, func(p *Partition, _ *[]Partition) { p.FirstLBA, p.LastLBA = 4095, 2048 }},
		{"name too long", size, func(p *Partition, _ *[]Partition) { p.Name = strings.Repeat("x", 37) }},
		{"name with NUL", size, func(p *Partition, _ *[]Partition) { p.Name = "a\x00b" }},
		{"overlap", size, func(p *Partition, more *[]Partition) {
			*more = append(*more, Partition{Number: 2, Type: typ, FirstLBA: 4095, LastLBA: 5000})
		}},
		{"same number", size, func(p *Partition, more *[]Partition) {
			*more = append(*more, Partition{Number: 1, Type: typ, FirstLBA: 5000, LastLBA: 6000})
		}},
		{"disk too small", 67 * 512, func(*Partition, *[]Partition) {}},
	}
	for _, tt := range tests {
		p := ok
		var more []Partition
		tt.edit(&p, &more)
		d := make(disk, size)
		if err := Write(d, tt.size, Table{Partitions: append([]Partition{p}, more...)}); err == nil {
			t.Errorf("%s: Write succeeded", tt.name)
		}
		if !bytes.Equal(d, make(disk, size)) {
			t.Errorf("%s: refused Write changed the disk", tt.name)
		}
	}
}

// TestReadForeignTable reads a table written by sgdisk, so the reader is not
// only proven against our own writer.
func TestReadForeignTable(t *testing.T) {
	sgdisk, err := exec.LookPath("sgdisk")
	if err != nil {
		t.Skip("sgdisk (Debian package gdisk) is not installed")
	}
	img := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(16 << 20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sgdisk, "-U", "11111111-2222-4333-8444-555555555555",
		"-n", "1:2048:+4M", "-c", "1:EFI", "-t", "1:EF00",
		"-n", "3:0:0", "-c", "3:bär data", "-t", "3:8300", "-A", "3:set:2", img).CombinedOutput()
	if err != nil {
		t.Fatalf("sgdisk: %v\n%s", err, out)
	}
	tab, err := Read(f, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	if tab.DiskID.String() != "11111111-2222-4333-8444-555555555555" || len(tab.Partitions) != 2 {
		t.Fatalf("Read = %+v", tab)
	}
	p1, p3 := tab.Partitions[0], tab.Partitions[1]
	if p1.Number != 1 || p1.Name != "EFI" || p1.Type.String() != "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" ||
		p1.FirstLBA != 2048 || p1.LastLBA != 2048+8192-1 {
		t.Errorf("partition 1 = %+v", p1)
	}
	if p3.Number != 3 || p3.Name != "bär data" || p3.Type.String() != LinuxFilesystem || p3.Attributes != 1<<2 ||
		p3.FirstLBA != 10240 || p3.LastLBA != 16<<20/512-34 {
		t.Errorf("partition 3 = %+v", p3)
	}
}

// TestLinuxToolsAcceptWrite proves the written layout is what util-linux and
// gdisk expect, on a sparse image file.
func TestLinuxToolsAcceptWrite(t *testing.T) {
	sfdisk, err := exec.LookPath("sfdisk")
	if err != nil {
		t.Skip("sfdisk (Debian package fdisk) is not installed")
	}
	const size = 64 << 20
	img := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	tab := mustSingle(t, size)
	if err := Write(f, size, tab); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	out, err := exec.Command(sfdisk, "--json", img).Output()
	if err != nil {
		t.Fatalf("sfdisk --json: %v", err)
	}
	var got struct {
		PartitionTable struct {
			Label      string `json:"label"`
			ID         string `json:"id"`
			FirstLBA   uint64 `json:"firstlba"`
			LastLBA    uint64 `json:"lastlba"`
			SectorSize int    `json:"sectorsize"`
			Partitions []struct {
				Start uint64 `json:"start"`
				Size  uint64 `json:"size"`
				Type  string `json:"type"`
				UUID  string `json:"uuid"`
				Name  string `json:"name"`
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("sfdisk output %s: %v", out, err)
	}
	pt := got.PartitionTable
	if pt.Label != "gpt" || pt.ID != tab.DiskID.String() || pt.FirstLBA != 34 || pt.LastLBA != size/512-34 ||
		pt.SectorSize != 512 || len(pt.Partitions) != 1 {
		t.Fatalf("sfdisk sees %s", out)
	}
	p := pt.Partitions[0]
	if p.Start != 2048 || p.Size != (size-2<<20)/512 || p.Type != LinuxFilesystem || p.UUID != tab.Partitions[0].ID.String() || p.Name != testName {
		t.Errorf("sfdisk sees partition %+v", p)
	}

	if sgdisk, err := exec.LookPath("sgdisk"); err == nil {
		out, err := exec.Command(sgdisk, "--verify", img).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "No problems found") {
			t.Errorf("sgdisk --verify: %v\n%s", err, out)
		}
	}
}

func FuzzRead(f *testing.F) {
	// A small disk keeps the fuzzer fast: 68 sectors for the GPT itself plus
	// a few usable ones.
	const size = 80 * 512
	typ, _ := ParseGUID(LinuxFilesystem)
	d := make(disk, size)
	if err := Write(d, size, Table{Partitions: []Partition{
		{Number: 1, Type: typ, FirstLBA: 34, LastLBA: 40, Name: testName},
		{Number: 7, Type: typ, FirstLBA: 41, LastLBA: 46, Name: "ünï"},
	}}); err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(d))
	f.Add([]byte(d[:size/2]))
	f.Add(make([]byte, 4096))
	f.Fuzz(func(t *testing.T, b []byte) {
		tab, err := Read(disk(b), int64(len(b)))
		if err != nil {
			return
		}
		// Whatever we accept must survive our own writer and reader unchanged.
		d := make(disk, len(b))
		tab.FromBackup = false
		if err := Write(d, int64(len(d)), tab); err != nil {
			return // e.g. overlapping or numbered beyond 128: readable, not writable
		}
		again, err := Read(d, int64(len(d)))
		if err != nil {
			t.Fatalf("re-reading a written table: %v", err)
		}
		if again.DiskID != tab.DiskID || len(again.Partitions) != len(tab.Partitions) {
			t.Fatalf("round trip changed the table: %+v -> %+v", tab, again)
		}
		for i := range tab.Partitions {
			if again.Partitions[i] != tab.Partitions[i] {
				t.Fatalf("round trip changed partition %d: %+v -> %+v", i, tab.Partitions[i], again.Partitions[i])
			}
		}
	})
}
