package image

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
)

// The test guest boots its kernel through PVH: QEMU loads an ELF kernel
// with a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY; Debian's kernel has
// CONFIG_PVH) straight into guest memory and jumps to it. A bzImage makes
// the guest decompress itself (xz, for Debian) and relocate itself for
// KASLR first: half of a boot under plain TCG (6.5 s against 3 s), and
// about a fifth of one under TCG inside a TCG PM (measured 270 s against
// 220 s on average, on a loaded host), where code run once costs far more
// than a tight decompression loop. The kernel is Debian's, unchanged: GuestKernel only unpacks
// the vmlinux ELF the bzImage carries and drops the zero tails of its
// segments (the bss and the init scratch area), which QEMU's ELF loader
// zero-fills from the segment's memory size anyway.

// xenElfnotePhys32Entry is the ELF note type of the PVH entry point
// (xen/include/public/elfnote.h).
const xenElfnotePhys32Entry = 18

// maxVmlinux bounds the unpacked kernel; Debian's is about 66 MiB.
const maxVmlinux = 512 << 20

// bzImagePayload returns the compressed kernel inside a bzImage and the
// name of its compression, from the boot protocol's setup header
// (Documentation/arch/x86/boot.rst): the protected-mode code starts after
// the setup sectors, and payload_offset/payload_length (protocol 2.08 and
// later) locate the payload inside it.
func bzImagePayload(b []byte) (payload []byte, compression string, err error) {
	const (
		setupSectsOff  = 0x1f1
		magicOff       = 0x202
		versionOff     = 0x206
		payloadOffOff  = 0x248
		payloadLenOff  = 0x24c
		minHeaderBytes = 0x250
	)
	if len(b) < minHeaderBytes || string(b[magicOff:magicOff+4]) != "HdrS" {
		return nil, "", errors.New("not a bzImage: no HdrS setup header")
	}
	if v := binary.LittleEndian.Uint16(b[versionOff:]); v < 0x208 {
		return nil, "", fmt.Errorf("bzImage boot protocol %#x predates payload fields (2.08)", v)
	}
	setup := int(b[setupSectsOff])
	if setup == 0 {
		setup = 4 // as the boot protocol says for old kernels
	}
	start := uint64(setup+1) * 512
	off := start + uint64(binary.LittleEndian.Uint32(b[payloadOffOff:]))
	n := uint64(binary.LittleEndian.Uint32(b[payloadLenOff:]))
	if n == 0 || off > uint64(len(b)) || n > uint64(len(b))-off {
		return nil, "", fmt.Errorf("bzImage payload [%d, +%d) lies outside the %d-byte file", off, n, len(b))
	}
	payload = b[off : off+n]
	for _, c := range []struct {
		magic []byte
		name  string
	}{
		{[]byte{0x1f, 0x8b}, "gzip"},
		{[]byte{0xfd, '7', 'z', 'X', 'Z', 0x00}, "xz"},
		{[]byte{0x28, 0xb5, 0x2f, 0xfd}, "zstd"},
	} {
		if bytes.HasPrefix(payload, c.magic) {
			return payload, c.name, nil
		}
	}
	return nil, "", fmt.Errorf("bzImage payload compressed with an unsupported method (starts % x); gzip, xz and zstd are", payload[:min(len(payload), 6)])
}

// decompress unpacks a kernel payload: gzip in Go, xz and zstd with the
// Debian tools (xz-utils, zstd). The kernel's build appends the
// uncompressed size (32 bits, little endian) to xz and zstd payloads
// (size_append in scripts/Makefile.lib); it is cut off before
// decompressing and checked after.
func decompress(ctx context.Context, payload []byte, compression string) ([]byte, error) {
	var r io.Reader
	want := -1
	switch compression {
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(payload))
		if err != nil {
			return nil, err
		}
		zr.Multistream(false)
		r = zr
	case "xz", "zstd":
		if len(payload) < 4 {
			return nil, fmt.Errorf("%s payload of %d bytes", compression, len(payload))
		}
		want = int(binary.LittleEndian.Uint32(payload[len(payload)-4:]))
		if _, err := exec.LookPath(compression); err != nil {
			return nil, fmt.Errorf("the kernel is %s-compressed and %s is not installed (Debian package %s): %w", compression, compression, map[string]string{"xz": "xz-utils", "zstd": "zstd"}[compression], err)
		}
		cmd := exec.CommandContext(ctx, compression, "-dc")
		cmd.Stdin = bytes.NewReader(payload[:len(payload)-4])
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("%s -dc: %w: %s", compression, err, bytes.TrimSpace(stderr.Bytes()))
		}
		r = bytes.NewReader(out)
	default:
		return nil, fmt.Errorf("unsupported kernel compression %q", compression)
	}
	out, err := io.ReadAll(io.LimitReader(r, maxVmlinux+1))
	if err != nil {
		return nil, fmt.Errorf("decompressing the kernel (%s): %w", compression, err)
	}
	if len(out) > maxVmlinux {
		return nil, fmt.Errorf("decompressed kernel exceeds %d bytes", maxVmlinux)
	}
	if want >= 0 && len(out) != want {
		return nil, fmt.Errorf("decompressed kernel is %d bytes, its payload says %d", len(out), want)
	}
	return out, nil
}

// trimELF rewrites a vmlinux as a minimal ELF that QEMU boots the same
// way: the ELF header, the program headers, and for each loadable segment
// its bytes up to the last non-zero one (the memory size is kept, so the
// rest is zero-filled at load). PT_NOTE segments are kept, pointing at the
// same bytes inside the loadable data. Section headers, which no loader
// reads, are dropped. The kernel must have a PVH entry note.
func trimELF(b []byte) ([]byte, error) {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("unpacked kernel is not ELF: %w", err)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 || f.ByteOrder != binary.LittleEndian || f.Type != elf.ET_EXEC {
		return nil, fmt.Errorf("unpacked kernel is %v %v %v %v, want a little-endian x86-64 executable", f.Class, f.Machine, f.ByteOrder, f.Type)
	}
	if !hasPVHNote(f) {
		return nil, errors.New("the kernel has no PVH entry note (CONFIG_PVH); QEMU could not boot it as an ELF")
	}
	type seg struct {
		hdr  elf.ProgHeader
		data []byte
	}
	var loads, notes []seg
	for _, p := range f.Progs {
		if p.Filesz > p.Memsz || p.Off > uint64(len(b)) || p.Filesz > uint64(len(b))-p.Off {
			return nil, fmt.Errorf("segment at file offset %#x (+%#x) is not inside the %d-byte kernel", p.Off, p.Filesz, len(b))
		}
		switch p.Type {
		case elf.PT_LOAD:
			data := bytes.TrimRight(b[p.Off:p.Off+p.Filesz], "\x00")
			loads = append(loads, seg{p.ProgHeader, data})
		case elf.PT_NOTE:
			notes = append(notes, seg{hdr: p.ProgHeader})
		}
	}
	if len(loads) == 0 {
		return nil, errors.New("the kernel has no loadable segment")
	}
	const (
		ehdrSize = 64
		phdrSize = 56
		align    = 4096 // file offsets keep the page offset of their address
	)
	n := len(loads) + len(notes)
	off := uint64(ehdrSize + n*phdrSize)
	newOff := make([]uint64, len(loads))
	for i, l := range loads {
		off = (off + align - 1) &^ (align - 1)
		off += l.hdr.Vaddr % align
		newOff[i] = off
		off += uint64(len(l.data))
	}
	out := make([]byte, off)
	var phdrs []elf.ProgHeader
	for i, l := range loads {
		h := l.hdr
		h.Off, h.Filesz = newOff[i], uint64(len(l.data))
		copy(out[h.Off:], l.data)
		phdrs = append(phdrs, h)
	}
	for _, nt := range notes {
		h := nt.hdr
		i := slices.IndexFunc(loads, func(l seg) bool {
			return h.Off >= l.hdr.Off && h.Off+h.Filesz <= l.hdr.Off+uint64(len(l.data))
		})
		if i < 0 {
			return nil, fmt.Errorf("note segment at file offset %#x is not inside loaded data", h.Off)
		}
		h.Off = newOff[i] + (h.Off - loads[i].hdr.Off)
		phdrs = append(phdrs, h)
	}
	// ELF header: the original identification, entry and flags; program
	// headers right after it; no sections.
	copy(out, b[:16])
	le := binary.LittleEndian
	le.PutUint16(out[16:], uint16(elf.ET_EXEC))
	le.PutUint16(out[18:], uint16(elf.EM_X86_64))
	le.PutUint32(out[20:], uint32(elf.EV_CURRENT))
	le.PutUint64(out[24:], f.Entry)
	le.PutUint64(out[32:], ehdrSize) // e_phoff
	le.PutUint64(out[40:], 0)        // e_shoff
	le.PutUint32(out[48:], le.Uint32(b[48:]))
	le.PutUint16(out[52:], ehdrSize)
	le.PutUint16(out[54:], phdrSize)
	le.PutUint16(out[56:], uint16(n))
	le.PutUint16(out[58:], 64) // e_shentsize, as usual though unused
	le.PutUint16(out[60:], 0)  // e_shnum
	le.PutUint16(out[62:], 0)  // e_shstrndx
	for i, h := range phdrs {
		p := out[ehdrSize+i*phdrSize:]
		le.PutUint32(p[0:], uint32(h.Type))
		le.PutUint32(p[4:], uint32(h.Flags))
		le.PutUint64(p[8:], h.Off)
		le.PutUint64(p[16:], h.Vaddr)
		le.PutUint64(p[24:], h.Paddr)
		le.PutUint64(p[32:], h.Filesz)
		le.PutUint64(p[40:], h.Memsz)
		le.PutUint64(p[48:], h.Align)
	}
	return out, nil
}

// hasPVHNote reports whether f has a Xen PHYS32_ENTRY note, which QEMU
// needs to boot an ELF kernel on x86.
func hasPVHNote(f *elf.File) bool {
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(p.Open(), 1<<20))
		if err != nil {
			return false
		}
		for len(b) >= 12 {
			namesz, descsz, typ := binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:]), binary.LittleEndian.Uint32(b[8:])
			nameEnd := 12 + (uint64(namesz)+3)&^3
			end := nameEnd + (uint64(descsz)+3)&^3
			if end > uint64(len(b)) {
				break
			}
			if typ == xenElfnotePhys32Entry && namesz >= 3 && string(b[12:15]) == "Xen" {
				return true
			}
			b = b[end:]
		}
	}
	return false
}

// GuestKernel writes to output the guest's kernel as QEMU boots it fastest:
// the vmlinux inside the bzImage at vmlinuz, unpacked and trimmed (see
// above). It is booted with -kernel like the bzImage, and needs QEMU's
// pvh.bin option ROM.
func GuestKernel(ctx context.Context, vmlinuz, output string) error {
	b, err := os.ReadFile(vmlinuz)
	if err != nil {
		return fmt.Errorf("guest kernel: %w", err)
	}
	payload, compression, err := bzImagePayload(b)
	if err != nil {
		return fmt.Errorf("guest kernel %s: %w", vmlinuz, err)
	}
	raw, err := decompress(ctx, payload, compression)
	if err != nil {
		return fmt.Errorf("guest kernel %s: %w", vmlinuz, err)
	}
	elfKernel, err := trimELF(raw)
	if err != nil {
		return fmt.Errorf("guest kernel %s: %w", vmlinuz, err)
	}
	if err := os.WriteFile(output, elfKernel, 0o644); err != nil {
		return fmt.Errorf("guest kernel: %w", err)
	}
	return nil
}
