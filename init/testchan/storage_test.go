package testchan

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func patternBytes(t *testing.T, seed int64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(Pattern(seed), b); err != nil {
		t.Fatal(err)
	}
	return b
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestPatternIsStable pins the pattern: a host may compute it to know what
// a PM's disk must hold, so it must not change with the code.
func TestPatternIsStable(t *testing.T) {
	if got, want := hexSum(patternBytes(t, 1, 4096)), hexSum(patternBytes(t, 1, 4096)); got != want {
		t.Fatalf("Pattern(1) differs between two reads: %s, %s", got, want)
	}
	if bytes.Equal(patternBytes(t, 1, 64), patternBytes(t, 2, 64)) {
		t.Error("seeds 1 and 2 give the same pattern")
	}
	const golden = "cc566a8831a1204c352290b97b7866a79dd5c943a5484b569c717fa74e4447df"
	if got := hexSum(patternBytes(t, 1, 4096)); got != golden {
		t.Errorf("SHA-256 of the first 4 KiB of Pattern(1) is %s, was %s: the pattern changed", got, golden)
	}
}

// storageFile returns a file of size zero bytes under /tmp, where
// writefile may write too.
func storageFile(t *testing.T, size int64) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "testchan-")
	if err != nil {
		t.Skipf("no /tmp: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := filepath.Join(dir, "disk")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPWriteAndSHA256(t *testing.T) {
	h := newHarness(t, 0)
	disk := storageFile(t, 4<<20)
	file := func() []byte {
		b, err := os.ReadFile(disk)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name              string
		off, length, seed int64
		direct            bool
	}{
		{"buffered, unaligned", 3, 1<<20 + 17, 7, false},
		{"direct, several chunks", 8192, 2<<20 + 4096, -9, true},
		{"direct, one block", 0, 4096, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := patternBytes(t, tc.seed, int(tc.length))
			resp := h.call(fmt.Sprintf(`{"id":1,"op":"pwrite","path":%q,"offset":%d,"length":%d,"seed":%d,"direct":%v}`,
				disk, tc.off, tc.length, tc.seed, tc.direct))
			if resp.Error != "" || string(resp.Data) != hexSum(want) {
				t.Fatalf("pwrite: %+v; want data %s", resp, hexSum(want))
			}
			if got := file()[tc.off : tc.off+tc.length]; !bytes.Equal(got, want) {
				t.Fatal("the file does not hold the pattern where it was written")
			}
			// The whole range, and a part that starts and ends inside blocks.
			for _, r := range [][2]int64{{tc.off, tc.length}, {tc.off + 1000, tc.length - 2000}} {
				resp := h.call(fmt.Sprintf(`{"id":2,"op":"sha256","path":%q,"offset":%d,"length":%d}`, disk, r[0], r[1]))
				if want := hexSum(file()[r[0] : r[0]+r[1]]); resp.Error != "" || string(resp.Data) != want {
					t.Errorf("sha256 %d+%d: %+v, want %s", r[0], r[1], resp, want)
				}
			}
		})
	}
	// A file whose size is not a multiple of the alignment: the direct
	// read comes up short of the aligned end and falls back.
	if err := os.Truncate(disk, 5000); err != nil {
		t.Fatal(err)
	}
	resp := h.call(fmt.Sprintf(`{"id":3,"op":"sha256","path":%q,"offset":10,"length":4990}`, disk))
	if want := hexSum(file()[10:5000]); resp.Error != "" || string(resp.Data) != want {
		t.Errorf("sha256 up to an unaligned end of file: %+v, want %s", resp, want)
	}

	for _, tc := range []struct {
		name, req, errHas string
	}{
		{"beyond the end", fmt.Sprintf(`{"id":4,"op":"sha256","path":%q,"offset":4096,"length":4096}`, disk), "ends at 5000"},
		{"never creates", fmt.Sprintf(`{"id":5,"op":"pwrite","path":%q,"length":4096}`, disk+"-missing"), "no such file"},
		{"missing device", `{"id":6,"op":"sha256","path":"/dev/dyad-no-such-disk","length":1}`, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if resp := h.call(tc.req); !strings.Contains(resp.Error, tc.errHas) || resp.Data != nil {
				t.Errorf("%s: %+v, want an error containing %q", tc.req, resp, tc.errHas)
			}
		})
	}
	if _, err := os.Stat(disk + "-missing"); err == nil {
		t.Error("pwrite created the file it was given")
	}
}

func TestDWrite(t *testing.T) {
	h := newHarness(t, 0)
	disk := storageFile(t, 1<<20)
	for _, tc := range []struct {
		name          string
		direct, dsync bool
	}{{"direct dsync", true, true}, {"buffered", false, false}} {
		t.Run(tc.name, func(t *testing.T) {
			resp := h.call(fmt.Sprintf(`{"id":1,"op":"dwrite","path":%q,"offset":8192,"block_size":4096,"count":20,"seed":5,"direct":%v,"dsync":%v}`,
				disk, tc.direct, tc.dsync))
			if resp.Error != "" {
				t.Fatal(resp.Error)
			}
			var r DWriteResult
			dec := json.NewDecoder(bytes.NewReader(resp.Data))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&r); err != nil {
				t.Fatalf("result %q: %v", resp.Data, err)
			}
			if r.Bytes != 20*4096 || r.LatP50NS <= 0 || r.LatP50NS > r.LatP95NS || r.LatP95NS > r.LatMaxNS || r.ElapsedNS < r.LatMaxNS {
				t.Errorf("result %+v", r)
			}
			b, err := os.ReadFile(disk)
			if err != nil {
				t.Fatal(err)
			}
			block := patternBytes(t, 5, 4096)
			if !bytes.Equal(b[8192:8192+20*4096], bytes.Repeat(block, 20)) || !bytes.Equal(b[:8192], make([]byte, 8192)) {
				t.Error("the file does not hold 20 pattern blocks from 8192")
			}
		})
	}
	if resp := h.call(`{"id":2,"op":"dwrite","path":"/dev/dyad-no-such-disk","block_size":1,"count":1}`); !strings.Contains(resp.Error, "no such file") {
		t.Errorf("dwrite to a missing device: %+v", resp)
	}
}

func TestPercentile(t *testing.T) {
	for _, tc := range []struct {
		sorted []int64
		p      int
		want   int64
	}{
		{[]int64{7}, 50, 7},
		{[]int64{7}, 95, 7},
		{[]int64{1, 2}, 50, 1},
		{[]int64{1, 2}, 95, 2},
		{[]int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 50, 5},
		{[]int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 95, 10},
		{[]int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 100, 10},
	} {
		if got := percentile(tc.sorted, tc.p); got != tc.want {
			t.Errorf("percentile(%v, %d) = %d, want %d", tc.sorted, tc.p, got, tc.want)
		}
	}
}

func TestWriteFile(t *testing.T) {
	h := newHarness(t, 0)
	dir, err := os.MkdirTemp("/tmp", "testchan-")
	if err != nil {
		t.Skipf("no /tmp: %v", err)
	}
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, "new", "r1.res")
	content := "resource r1 {\n}\n"
	resp := h.call(fmt.Sprintf(`{"id":1,"op":"writefile","path":%q,"data":%q}`, p, base64.StdEncoding.EncodeToString([]byte(content))))
	if resp.Error != "" {
		t.Fatal(resp.Error)
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != content {
		t.Errorf("file holds %q, %v; want %q", b, err, content)
	}
	// Replaced, not appended to.
	resp = h.call(fmt.Sprintf(`{"id":2,"op":"writefile","path":%q}`, p))
	if b, err := os.ReadFile(p); resp.Error != "" || err != nil || len(b) != 0 {
		t.Errorf("after writing nothing: %+v, file %q, %v", resp, b, err)
	}
	if resp := h.call(`{"id":3,"op":"writefile","path":"/etc/dyad-testchan"}`); !strings.Contains(resp.Error, "under /run/ or /tmp/") {
		t.Errorf("writefile outside /run and /tmp: %+v", resp)
	}
}
