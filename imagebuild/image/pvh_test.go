package image

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// testSegment is a segment of a synthetic kernel ELF.
type testSegment struct {
	typ   elf.ProgType
	vaddr uint64
	data  []byte
	memsz uint64 // 0: len(data)
}

// xenNote is a Xen ELF note of type typ with a 4-byte descriptor.
func xenNote(typ uint32) []byte {
	b := make([]byte, 12+4+4)
	binary.LittleEndian.PutUint32(b[0:], 4) // "Xen\x00"
	binary.LittleEndian.PutUint32(b[4:], 4)
	binary.LittleEndian.PutUint32(b[8:], typ)
	copy(b[12:], "Xen\x00")
	binary.LittleEndian.PutUint32(b[16:], 0x1000000)
	return b
}

// testKernelELF lays out segs in an x86-64 executable as a linker would
// (page-aligned file offsets) with a section header table at the end,
// which trimELF must drop. A PT_NOTE segment with vaddr inside a PT_LOAD
// one points at those bytes of the load segment's data.
func testKernelELF(t testing.TB, entry uint64, segs []testSegment) []byte {
	t.Helper()
	le := binary.LittleEndian
	off := uint64(4096)
	offs := make([]uint64, len(segs))
	var body []byte
	for i, s := range segs {
		if s.typ != elf.PT_LOAD {
			continue
		}
		offs[i] = off
		body = append(body, s.data...)
		pad := (4096 - len(s.data)%4096) % 4096
		body = append(body, make([]byte, pad)...)
		off += uint64(len(s.data) + pad)
	}
	for i, s := range segs {
		if s.typ == elf.PT_LOAD {
			continue
		}
		for j, l := range segs {
			if l.typ == elf.PT_LOAD && s.vaddr >= l.vaddr && s.vaddr+uint64(len(s.data)) <= l.vaddr+uint64(len(l.data)) {
				offs[i] = offs[j] + s.vaddr - l.vaddr
			}
		}
		if offs[i] == 0 {
			t.Fatalf("note segment %d lies in no load segment", i)
		}
	}
	out := make([]byte, 4096)
	copy(out, "\x7fELF\x02\x01\x01")
	le.PutUint16(out[16:], uint16(elf.ET_EXEC))
	le.PutUint16(out[18:], uint16(elf.EM_X86_64))
	le.PutUint32(out[20:], 1)
	le.PutUint64(out[24:], entry)
	le.PutUint64(out[32:], 64)
	le.PutUint64(out[40:], uint64(4096+len(body))) // e_shoff: one null section header
	le.PutUint16(out[52:], 64)
	le.PutUint16(out[54:], 56)
	le.PutUint16(out[56:], uint16(len(segs)))
	le.PutUint16(out[58:], 64)
	le.PutUint16(out[60:], 1)
	for i, s := range segs {
		p := out[64+56*i:]
		memsz := s.memsz
		if memsz == 0 {
			memsz = uint64(len(s.data))
		}
		le.PutUint32(p[0:], uint32(s.typ))
		le.PutUint32(p[4:], uint32(elf.PF_R|elf.PF_X))
		le.PutUint64(p[8:], offs[i])
		le.PutUint64(p[16:], s.vaddr)
		le.PutUint64(p[24:], s.vaddr-0xffffffff80000000)
		le.PutUint64(p[32:], uint64(len(s.data)))
		le.PutUint64(p[40:], memsz)
		le.PutUint64(p[48:], 0x200000)
	}
	out = append(out, body...)
	return append(out, make([]byte, 64)...)
}

func TestTrimELF(t *testing.T) {
	note := xenNote(xenElfnotePhys32Entry)
	text := append(append(bytes.Repeat([]byte{0xcc}, 5000), note...), 1, 2, 3)
	data := append([]byte("data"), make([]byte, 3*4096)...) // a zero tail, as .bss stored in the file
	kernel := testKernelELF(t, 0x1000000, []testSegment{
		{typ: elf.PT_LOAD, vaddr: 0xffffffff81000000, data: text},
		{typ: elf.PT_LOAD, vaddr: 0xffffffff82000000, data: data, memsz: 1 << 20},
		{typ: elf.PT_NOTE, vaddr: 0xffffffff81000000 + 5000, data: note},
	})
	out, err := trimELF(kernel)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) >= len(kernel) {
		t.Errorf("trimmed kernel is %d bytes, the input %d", len(out), len(kernel))
	}
	f, err := elf.NewFile(bytes.NewReader(out))
	if err != nil {
		t.Fatalf("trimmed kernel: %v", err)
	}
	if f.Entry != 0x1000000 || len(f.Sections) != 0 || len(f.Progs) != 3 {
		t.Fatalf("trimmed kernel: entry %#x, %d sections, %d segments", f.Entry, len(f.Sections), len(f.Progs))
	}
	for i, want := range []struct {
		data  []byte
		memsz uint64
	}{{text, uint64(len(text))}, {[]byte("data"), 1 << 20}} {
		p := f.Progs[i]
		got, _ := io.ReadAll(p.Open())
		if p.Type != elf.PT_LOAD || !bytes.Equal(got, want.data) || p.Memsz != want.memsz || p.Off%4096 != p.Vaddr%4096 {
			t.Errorf("segment %d: %v off %#x filesz %d memsz %d, data %q; want its data without the zero tail and memsz %d", i, p.Type, p.Off, p.Filesz, p.Memsz, got[:min(len(got), 8)], want.memsz)
		}
	}
	if n, _ := io.ReadAll(f.Progs[2].Open()); f.Progs[2].Type != elf.PT_NOTE || !bytes.Equal(n, note) {
		t.Errorf("note segment: %v %x, want %x", f.Progs[2].Type, n, note)
	}
	if !hasPVHNote(f) {
		t.Error("trimmed kernel lost its PVH note")
	}
}

func TestTrimELFRejects(t *testing.T) {
	// The note bytes are in the loaded text; a PT_NOTE segment names them.
	load := func(typ uint32) testSegment {
		return testSegment{typ: elf.PT_LOAD, vaddr: 0xffffffff81000000, data: append(bytes.Repeat([]byte{1}, 100), xenNote(typ)...)}
	}
	noteAt := func(typ uint32) testSegment {
		return testSegment{typ: elf.PT_NOTE, vaddr: 0xffffffff81000000 + 100, data: xenNote(typ)}
	}
	for _, tc := range []struct {
		name   string
		kernel []byte
		errHas string
	}{
		{"not ELF", []byte("MZ not a kernel"), "not ELF"},
		{"no note segment", testKernelELF(t, 0x1000000, []testSegment{load(xenElfnotePhys32Entry)}), "no PVH entry note"},
		{"other Xen note", testKernelELF(t, 0x1000000, []testSegment{load(6), noteAt(6)}), "no PVH entry note"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := trimELF(tc.kernel); err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("trimELF: %v, want an error containing %q", err, tc.errHas)
			}
		})
	}
}

func FuzzTrimELF(f *testing.F) {
	note := xenNote(xenElfnotePhys32Entry)
	f.Add([]byte("\x7fELF"))
	f.Add(testKernelELF(f, 0x1000000, []testSegment{
		{typ: elf.PT_LOAD, vaddr: 0xffffffff81000000, data: append([]byte{1, 2, 3, 4}, note...)},
		{typ: elf.PT_NOTE, vaddr: 0xffffffff81000004, data: note},
	}))
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := trimELF(b)
		if err != nil {
			return
		}
		ef, err := elf.NewFile(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("trimELF output is not ELF: %v", err)
		}
		if !hasPVHNote(ef) {
			t.Fatal("trimELF output has no PVH note")
		}
	})
}

// testBzImage wraps payload in a minimal bzImage setup header (protocol
// 2.15, one setup sector).
func testBzImage(payload []byte, version uint16) []byte {
	b := make([]byte, 1024)
	b[0x1f1] = 1
	copy(b[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(b[0x206:], version)
	binary.LittleEndian.PutUint32(b[0x248:], 0x40) // payload 64 bytes into the protected-mode code
	binary.LittleEndian.PutUint32(b[0x24c:], uint32(len(payload)))
	b = append(b, make([]byte, 0x40)...)
	return append(append(b, payload...), "trailing decompressor code"...)
}

func TestBzImagePayload(t *testing.T) {
	gz := []byte{0x1f, 0x8b, 8, 0}
	xz := []byte{0xfd, '7', 'z', 'X', 'Z', 0, 1, 2}
	bad := testBzImage(gz, 0x20f)
	binary.LittleEndian.PutUint32(bad[0x24c:], 1<<30)
	for _, tc := range []struct {
		name        string
		b           []byte
		payload     []byte
		compression string
		errHas      string
	}{
		{"gzip", testBzImage(gz, 0x20f), gz, "gzip", ""},
		{"xz", testBzImage(xz, 0x20f), xz, "xz", ""},
		{"zstd", testBzImage([]byte{0x28, 0xb5, 0x2f, 0xfd, 9}, 0x20f), []byte{0x28, 0xb5, 0x2f, 0xfd, 9}, "zstd", ""},
		{"lz4", testBzImage([]byte{0x02, 0x21, 0x4c, 0x18}, 0x20f), nil, "", "unsupported method"},
		{"old protocol", testBzImage(gz, 0x207), nil, "", "predates"},
		{"payload past the end", bad, nil, "", "outside"},
		{"empty payload", testBzImage(nil, 0x20f), nil, "", "outside"},
		{"no header", make([]byte, 4096), nil, "", "no HdrS"},
		{"short", []byte("HdrS"), nil, "", "no HdrS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, c, err := bzImagePayload(tc.b)
			if (tc.errHas == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("bzImagePayload: %v, want error containing %q", err, tc.errHas)
			}
			if !bytes.Equal(p, tc.payload) || c != tc.compression {
				t.Errorf("bzImagePayload = % x, %q; want % x, %q", p, c, tc.payload, tc.compression)
			}
		})
	}
}

func FuzzBzImagePayload(f *testing.F) {
	f.Add(testBzImage([]byte{0x1f, 0x8b, 8, 0}, 0x20f))
	f.Add(testBzImage([]byte{0xfd, '7', 'z', 'X', 'Z', 0, 1, 2}, 0x20f))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, c, err := bzImagePayload(b)
		if err != nil {
			return
		}
		if len(p) == 0 || c == "" {
			t.Fatalf("bzImagePayload = %d bytes, %q without an error", len(p), c)
		}
	})
}

// TestGuestKernelGzip runs the whole path on a synthetic bzImage whose
// payload is gzip, which needs no external tool.
func TestGuestKernelGzip(t *testing.T) {
	note := xenNote(xenElfnotePhys32Entry)
	kernel := testKernelELF(t, 0x1000000, []testSegment{
		{typ: elf.PT_LOAD, vaddr: 0xffffffff81000000, data: append(bytes.Repeat([]byte{0x90}, 64), note...)},
		{typ: elf.PT_NOTE, vaddr: 0xffffffff81000040, data: note},
	})
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(kernel)
	zw.Close()
	dir := t.TempDir()
	bz := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(bz, testBzImage(gz.Bytes(), 0x20f), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "vmlinux")
	if err := GuestKernel(context.Background(), bz, out); err != nil {
		t.Fatal(err)
	}
	want, err := trimELF(kernel)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
		t.Errorf("GuestKernel wrote %d bytes, want the %d of the trimmed kernel", len(got), len(want))
	}
}

// TestGuestKernelDebian unpacks the host's Debian kernel (xz) and checks
// that every loadable byte and memory size survived the trimming.
func TestGuestKernelDebian(t *testing.T) {
	_, vmlinuz, err := findKernel("/boot", "/lib/modules", "")
	if err != nil {
		t.Skipf("host has no Debian kernel: %v", err)
	}
	b, err := os.ReadFile(vmlinuz)
	if err != nil {
		t.Skip(err)
	}
	payload, compression, err := bzImagePayload(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath(compression); err != nil && compression != "gzip" {
		t.Skipf("no %s on the host: %v", compression, err)
	}
	raw, err := decompress(context.Background(), payload, compression)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "vmlinux")
	if err := GuestKernel(context.Background(), vmlinuz, out); err != nil {
		t.Fatal(err)
	}
	orig, err := elf.NewFile(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	trimmed, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer trimmed.Close()
	st, _ := os.Stat(out)
	t.Logf("%s: %s payload, vmlinux %d bytes, trimmed %d bytes", vmlinuz, compression, len(raw), st.Size())
	if trimmed.Entry != orig.Entry || !hasPVHNote(trimmed) {
		t.Errorf("trimmed kernel entry %#x (want %#x), PVH note %v", trimmed.Entry, orig.Entry, hasPVHNote(trimmed))
	}
	var loads []*elf.Prog
	for _, p := range orig.Progs {
		if p.Type == elf.PT_LOAD {
			loads = append(loads, p)
		}
	}
	for i, p := range loads {
		q := trimmed.Progs[i]
		a, _ := io.ReadAll(p.Open())
		c, _ := io.ReadAll(q.Open())
		// What the loader puts in memory: the file bytes, zero-filled
		// up to the memory size.
		a = append(a, make([]byte, p.Memsz-p.Filesz)...)
		c = append(c, make([]byte, q.Memsz-q.Filesz)...)
		if q.Type != elf.PT_LOAD || q.Paddr != p.Paddr || q.Vaddr != p.Vaddr || q.Flags != p.Flags || !bytes.Equal(a, c) {
			t.Errorf("load segment %d differs in memory after trimming (paddr %#x vs %#x)", i, q.Paddr, p.Paddr)
		}
	}
}
