package drbd

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const ver = "version: 8.4.11 (api:1/proto:86-101)\nsrcversion: 211FB288A383ED945B83420 \n"

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseProcFixtures(t *testing.T) {
	flags := IOFlags{Raw: "r-----", Congestion: '-'}
	tests := []struct {
		file string
		want []Device
	}{
		{"connected.txt", []Device{{
			Minor: 0, CS: Connected, Role: "Primary", PeerRole: "Secondary",
			Disk: "UpToDate", PeerDisk: "UpToDate", Protocol: "C", Flags: flags,
			NS: 1048576, DW: 1049600, DR: 21134, AL: 14, EP: 1, WO: "f",
		}}},
		{"syncsource.txt", []Device{{
			Minor: 3, CS: SyncSource, Role: "Primary", PeerRole: "Secondary",
			Disk: "UpToDate", PeerDisk: "Inconsistent", Protocol: "C", Flags: flags,
			NS: 262144, DW: 512, DR: 263288, AL: 9, BM: 17, PE: 4, EP: 1, WO: "f", OOS: 786432,
			Sync: &Sync{Percent: 25.3, LeftKiB: 786432, TotalKiB: 1048576,
				Finish: 3*time.Minute + 12*time.Second, SpeedKiB: 4096, AvgSpeedKiB: 4032},
		}}},
		{"synctarget.txt", []Device{{
			Minor: 3, CS: SyncTarget, Role: "Secondary", PeerRole: "Primary",
			Disk: "Inconsistent", PeerDisk: "UpToDate", Protocol: "C", Flags: flags,
			NR: 262144, DW: 262144, BM: 16, LO: 1, UA: 1, EP: 1, WO: "f", OOS: 786432,
			Sync: &Sync{Percent: 25.3, LeftKiB: 786432, TotalKiB: 1048576,
				Finish: 3*time.Minute + 12*time.Second, SpeedKiB: 4096, AvgSpeedKiB: 4032, WantKiB: 102400},
		}}},
		{"standalone.txt", []Device{{
			Minor: 0, CS: StandAlone, Role: "Primary", PeerRole: "Unknown",
			Disk: "UpToDate", PeerDisk: "DUnknown", Protocol: "", Flags: flags,
			DW: 40960, DR: 1230, AL: 12, BM: 3, EP: 1, WO: "f", OOS: 40960,
		}}},
		{"diskless.txt", []Device{{
			Minor: 2, CS: Connected, Role: "Secondary", PeerRole: "Primary",
			Disk: "Diskless", PeerDisk: "UpToDate", Protocol: "C", Flags: flags,
			EP: 1, WO: "f",
		}}},
		{"unconfigured.txt", []Device{{Minor: 0, CS: Unconfigured}, {Minor: 1, CS: Unconfigured}}},
		{"pausedsync.txt", []Device{{
			Minor: 4, CS: PausedSyncT, Role: "Secondary", PeerRole: "Primary",
			Disk: "Inconsistent", PeerDisk: "UpToDate", Protocol: "C",
			NR: 102400, DW: 102400, BM: 7, EP: 1, WO: "f", OOS: 2994176,
			Flags: IOFlags{Raw: "r--u--", UserISP: true, Congestion: '-'},
		}, {
			Minor: 5, CS: PausedSyncS, Role: "Primary", PeerRole: "Secondary",
			Disk: "UpToDate", PeerDisk: "Inconsistent", Protocol: "C",
			EP: 1, WO: "f", OOS: 4194304,
			Flags: IOFlags{Raw: "ra----", AfterISP: true, Congestion: '-'},
		}}},
		{"verify_details.txt", []Device{{
			Minor: 0, CS: VerifyS, Role: "Primary", PeerRole: "Secondary",
			Disk: "UpToDate", PeerDisk: "UpToDate", Protocol: "C", Flags: flags,
			NS: 524288, DR: 524292, PE: 3, EP: 1, WO: "f",
			Sync: &Sync{Verify: true, Percent: 50.1, LeftKiB: 524288, TotalKiB: 1048576,
				Finish: 41 * time.Second, SpeedKiB: 12722, RecentSpeedKiB: 11000,
				AvgSpeedKiB: 12301, WantKiB: 1048576, Stalled: true},
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			p, err := ParseProc(readFixture(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if p.Version != "8.4.11" || p.API != 1 || p.ProtoMin != 86 || p.ProtoMax != 101 {
				t.Errorf("version = %q api %d proto %d-%d", p.Version, p.API, p.ProtoMin, p.ProtoMax)
			}
			if p.BuildTag != "srcversion: 211FB288A383ED945B83420" {
				t.Errorf("BuildTag = %q", p.BuildTag)
			}
			if !reflect.DeepEqual(p.Devices, tt.want) {
				t.Errorf("devices:\n got %+v\nwant %+v", dump(p.Devices), dump(tt.want))
			}
		})
	}
}

// dump shows Sync by value in failure messages.
func dump(ds []Device) []any {
	var out []any
	for _, d := range ds {
		out = append(out, d)
		if d.Sync != nil {
			out = append(out, *d.Sync)
		}
	}
	return out
}

func TestParseProcMulti(t *testing.T) {
	p, err := ParseProc(readFixture(t, "multi.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var minors []int
	for _, d := range p.Devices {
		minors = append(minors, d.Minor)
	}
	if !reflect.DeepEqual(minors, []int{0, 1, 3, 4, 5, 7}) {
		t.Fatalf("minors = %v", minors)
	}
	d3, ok := p.Device(3)
	if !ok || d3.Sync == nil {
		t.Fatalf("minor 3 = %+v", d3)
	}
	// MiB above 4 GiB, converted to KiB.
	if d3.Sync.LeftKiB != 11264*1024 || d3.Sync.TotalKiB != 20480*1024 || d3.Sync.Percent != 45 {
		t.Errorf("minor 3 sync = %+v", *d3.Sync)
	}
	if d3.Sync.SpeedKiB != 88612 || d3.Sync.AvgSpeedKiB != 85001 || d3.Sync.WantKiB != 102400 {
		t.Errorf("minor 3 speeds = %+v", *d3.Sync)
	}
	if got := d3.Sync.LeftBytes(); got != 11264<<20 {
		t.Errorf("LeftBytes = %d", got)
	}
	if d4, _ := p.Device(4); !d4.IsUnconfigured() {
		t.Errorf("minor 4 = %+v", d4)
	}
	d5, _ := p.Device(5)
	if d5.Disk != DiskOutdated || d5.Protocol != "" || d5.CS.IsConnected() {
		t.Errorf("minor 5 = %+v", d5)
	}
	d7, _ := p.Device(7)
	if !d7.Flags.Suspended || !d7.Flags.ALSuspended || d7.AP != 3 || d7.WO != "d" {
		t.Errorf("minor 7 = %+v", d7)
	}
	d1, _ := p.Device(1)
	if d1.OutOfSyncBytes() != 8192*1024 || d1.WrittenBytes() != 8192*1024 || d1.ReadBytes() != 4096*1024 {
		t.Errorf("minor 1 bytes = %d %d %d", d1.OutOfSyncBytes(), d1.WrittenBytes(), d1.ReadBytes())
	}
	if _, ok := p.Device(2); ok {
		t.Error("minor 2 should be absent")
	}
}

func TestParseProcLines(t *testing.T) {
	head := " 0: cs:SyncTarget ro:Secondary/Primary ds:Inconsistent/UpToDate C r-----\n" +
		"    ns:0 nr:1 dw:1 dr:0 al:0 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:9\n"
	tests := []struct {
		name string
		in   string
		want Sync
	}{
		{
			name: "old kernel MiB form without line break",
			in:   "\t[>....................] sync'ed:  2.1% (20020/20440)Mfinish: 12:34:56 speed: 1,234,567 (999) want: 7 K/sec\n",
			want: Sync{
				Percent: 2.1, LeftKiB: 20020 << 10, TotalKiB: 20440 << 10,
				SpeedKiB: 1234567, AvgSpeedKiB: 999, WantKiB: 7,
				Finish: 12*time.Hour + 34*time.Minute + 56*time.Second,
			},
		},
		{
			name: "padded percentage, hundreds of hours",
			in:   "\t[>....................] sync'ed:  0.0% (65536/65536)K\n\tfinish: 120:00:01 speed: 0 (0) K/sec (stalled)\n",
			want: Sync{LeftKiB: 65536, TotalKiB: 65536,
				Finish: 120*time.Hour + time.Second, Stalled: true},
		},
		{
			name: "done",
			in:   "\t[===================>] sync'ed:100.0% (0/65536)K\n\tfinish: 0:00:00 speed: 65,536 (65,536) K/sec\n",
			want: Sync{Percent: 100, TotalKiB: 65536, SpeedKiB: 65536, AvgSpeedKiB: 65536},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParseProc([]byte(ver + head + tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Devices) != 1 || p.Devices[0].Sync == nil {
				t.Fatalf("devices = %+v", p.Devices)
			}
			if got := *p.Devices[0].Sync; got != tt.want {
				t.Errorf("sync:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseProcEdge(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		devices int
		wantErr string
	}{
		{"empty", "", 0, "no version"},
		{"garbage", "hello\n", 0, "no version"},
		{"drbd 9 without devices", "version: 9.2.4 (api:2/proto:86-122)\nGIT-hash: abc build by x\nTransports (api:18): tcp (9.2.4)\n", 0, ""},
		{"built-in, no devices", "version: 8.4.11 (api:1/proto:86-101)\nbuilt-in\n", 0, ""},
		{"bad version numbers", "version: 8.4.11 (api:x/proto:86-101)\n", 0, "bad version"},
		{"duplicate minor", ver + " 0: cs:Unconfigured\n 0: cs:Unconfigured\n", 0, "twice"},
		{"missing ds", ver + " 0: cs:Connected ro:Primary/Secondary C r-----\n", 0, "without ro: or ds:"},
		{"half role", ver + " 0: cs:Connected ro:Primary ds:UpToDate/UpToDate C r-----\n", 0, "bad roles"},
		{"strange field", ver + " 0: cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate C r----- zzz\n", 0, "unexpected field"},
		{"bad counter", ver + " 0: cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate C r-----\n    ns:x\n", 0, "bad counter"},
		{"negative KiB", ver + " 0: cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate C r-----\n    ns:-1\n", 0, "bad counter"},
		{"unknown counter kept quiet", ver + " 0: cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate C r-----\n    ns:1 zz:9 oos:0\n", 1, ""},
		{"bad grouping", ver + " 0: cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent C r-----\n\tfinish: 0:00:01 speed: 4,09 (1) K/sec\n", 0, "bad rate"},
		{"bad time", ver + " 0: cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent C r-----\n\tfinish: 0:61:01 speed: 1 (1) K/sec\n", 0, "bad finish time"},
		{"bad unit", ver + " 0: cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent C r-----\n\t[>] sync'ed: 1.0% (1/2)G\n", 0, "unit"},
		{"percent over 100", ver + " 0: cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent C r-----\n\t[>] sync'ed: 101.0% (1/2)K\n", 0, "percentage"},
		{"unknown state kept", ver + " 0: cs:Futuristic ro:Primary/Secondary ds:UpToDate/UpToDate C r-----\n", 1, ""},
		{"stray lines ignored", ver + "something\n 0: cs:Unconfigured\n\tresync: used:0/61\n", 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParseProc([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Devices) != tt.devices {
				t.Errorf("devices = %+v", p.Devices)
			}
		})
	}
}

func TestConnState(t *testing.T) {
	tests := []struct {
		s                         ConnState
		known, connected, syncing bool
	}{
		{StandAlone, true, false, false},
		{WFConnection, true, false, false},
		{Connected, true, true, false},
		{SyncSource, true, true, true},
		{PausedSyncT, true, true, true},
		{VerifyS, true, true, false},
		{Ahead, true, true, false},
		{Unconfigured, true, false, false},
		{"Bogus", false, false, false},
	}
	for _, tt := range tests {
		if tt.s.Known() != tt.known || tt.s.IsConnected() != tt.connected || tt.s.IsResync() != tt.syncing {
			t.Errorf("%s: known %v connected %v resync %v", tt.s, tt.s.Known(), tt.s.IsConnected(), tt.s.IsResync())
		}
	}
}

func TestKiBSaturates(t *testing.T) {
	if got := kib(^uint64(0)); got != 1<<63-1 {
		t.Errorf("kib(max) = %d", got)
	}
	if got := kib(3); got != 3072 {
		t.Errorf("kib(3) = %d", got)
	}
}

func FuzzParseProc(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.txt"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(ver + " 0: cs:SyncTarget ro:Secondary/Primary ds:Inconsistent/UpToDate C r-----\n\t[>] sync'ed:  2.1% (20020/20440)Mfinish: 1:02:03 speed: 1,234 (5 -- 6) want: 7 K/sec (stalled)\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParseProc(data)
		if err != nil {
			return
		}
		seen := map[int]bool{}
		for _, d := range p.Devices {
			if seen[d.Minor] {
				t.Fatalf("minor %d twice", d.Minor)
			}
			seen[d.Minor] = true
			if d.Sync != nil && (d.Sync.Percent < 0 || d.Sync.Percent > 100) {
				t.Fatalf("percent %v", d.Sync.Percent)
			}
			_ = d.OutOfSyncBytes()
		}
	})
}
