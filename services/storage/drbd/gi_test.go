package drbd

import (
	"errors"
	"strings"
	"testing"
)

// showGI is drbdsetup-84 show-gi output: the get-gi line framed by the
// legend of dt_pretty_print_uuids (drbd-utils user/v84/drbdtool_common.c).
const showGI = `
       +--<  Current data generation UUID  >-
       |               +--<  Bitmap's base data generation UUID  >-
       |               |                 +--<  younger history UUID  >-
       |               |                 |         +-<  older history  >-
       V               V                 V         V
6E1A4E3D7FDE2C61:0000000000000000:A2D5F3B0C1E9D2A4:A2D4F3B0C1E9D2A5:1:1:1:1:0:0:0
                                                                    ^ ^ ^ ^ ^ ^ ^
                                      -<  Data consistency flag  >--+ | | | | | |
                             -<  Data was/is currently up-to-date  >--+ | | | | |
                                  -<  Node was/is currently primary  >--+ | | | |
                                  -<  Node was/is currently connected  >--+ | | |
         -<  Node was in the progress of setting all bits in the bitmap  >--+ | |
                        -<  The peer's disk was out-dated or inconsistent  >--+ |
      -<  This node was a crashed primary, and has not seen its peer since   >--+

flags: Primary, Connected, UpToDate
meta-data: clean
`

func TestParseGI(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    GI
		wantErr error
		errText string
	}{
		{
			name: "get-gi",
			in:   "6E1A4E3D7FDE2C61:0000000000000000:A2D5F3B0C1E9D2A4:A2D4F3B0C1E9D2A5:1:1:1:1:0:0:0\n",
			want: GI{Current: 0x6E1A4E3D7FDE2C61, History1: 0xA2D5F3B0C1E9D2A4, History2: 0xA2D4F3B0C1E9D2A5,
				HasFlags: true, Flags: GIFlags{Consistent: true, WasUpToDate: true, Primary: true, Connected: true}},
		},
		{
			name: "show-gi",
			in:   showGI,
			want: GI{Current: 0x6E1A4E3D7FDE2C61, History1: 0xA2D5F3B0C1E9D2A4, History2: 0xA2D4F3B0C1E9D2A5,
				HasFlags: true, Flags: GIFlags{Consistent: true, WasUpToDate: true, Primary: true, Connected: true}},
		},
		{
			name: "just created, all flags",
			in:   "0000000000000004:0000000000000000:0000000000000000:0000000000000000:0:0:0:0:1:1:1\n",
			want: GI{Current: UUIDJustCreated, HasFlags: true,
				Flags: GIFlags{FullSync: true, PeerOutdated: true, CrashedPrimary: true}},
		},
		{
			name: "older five-flag form, lower-case hex",
			in:   "6e1a4e3d7fde2c61:1111111111111111:2222222222222222:3333333333333333:1:0:1:0:1\n",
			want: GI{Current: 0x6E1A4E3D7FDE2C61, Bitmap: 0x1111111111111111, History1: 0x2222222222222222,
				History2: 0x3333333333333333, HasFlags: true,
				Flags: GIFlags{Consistent: true, Primary: true, FullSync: true}},
		},
		{
			name: "no flags, trailing colon",
			in:   "0000000000000005:0000000000000000:0000000000000000:0000000000000000:",
			want: GI{Current: 5},
		},
		{name: "empty", in: "", wantErr: ErrNoGI},
		{name: "stderr text", in: "Device has no disk\n", wantErr: ErrNoGI},
		{name: "short uuid", in: "6E1A:0000000000000000:0000000000000000:0000000000000000:1\n", wantErr: ErrNoGI},
		{name: "three uuids", in: "0000000000000005:0000000000000000:0000000000000000\n", wantErr: ErrNoGI},
		{name: "damaged second uuid", in: "0000000000000005:00000000000000G0:0000000000000000:0000000000000000\n", errText: "bad gi line"},
		{name: "bad flag", in: "0000000000000005:0000000000000000:0000000000000000:0000000000000000:2\n", errText: "bad gi flag"},
		{name: "too many flags", in: "0000000000000005:0000000000000000:0000000000000000:0000000000000000:1:1:1:1:1:1:1:1:1\n", errText: "flags"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseGI([]byte(tt.in))
			switch {
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			case tt.errText != "":
				if err == nil || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("err = %v, want %q", err, tt.errText)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestGIString(t *testing.T) {
	g := GI{Current: 0x6E1A4E3D7FDE2C61, History1: 1}
	if s := g.String(); s != "6E1A4E3D7FDE2C61:0000000000000000:0000000000000001:0000000000000000" {
		t.Errorf("String = %q", s)
	}
	if s := g.CurrentHex(); s != "6E1A4E3D7FDE2C61" {
		t.Errorf("CurrentHex = %q", s)
	}
	// Round trip through the parser.
	back, err := ParseGI([]byte(g.String()))
	if err != nil || back != g {
		t.Errorf("round trip = %+v, %v", back, err)
	}
}

func TestCompare(t *testing.T) {
	const (
		a = 0xAAAA00000000AAA0
		b = 0xBBBB00000000BBB0
		c = 0xCCCC00000000CCC0
		d = 0xDDDD00000000DDD0
		e = 0xEEEE00000000EEE0
		o = uuidNewBMOffset
	)
	gi := func(cur, bm, h1, h2 uint64) GI { return GI{Current: cur, Bitmap: bm, History1: h1, History2: h2} }
	crashed := func(g GI) GI { g.Flags.CrashedPrimary = true; return g }
	tests := []struct {
		name        string
		local, peer GI
		want        Verdict
	}{
		{"both just created", gi(UUIDJustCreated, 0, 0, 0), gi(UUIDJustCreated, 0, 0, 0), Verdict{Same, 10, false}},
		{"local just created", gi(UUIDJustCreated, 0, 0, 0), gi(a, 0, 0, 0), Verdict{PeerNewer, 20, true}},
		{"local just created, primary bit", gi(UUIDJustCreated|1, 0, 0, 0), gi(a, 0, 0, 0), Verdict{PeerNewer, 20, true}},
		{"local zero", gi(0, 0, 0, 0), gi(a, 0, 0, 0), Verdict{PeerNewer, 20, true}},
		{"peer just created", gi(a, 0, 0, 0), gi(UUIDJustCreated, 0, 0, 0), Verdict{LocalNewer, 30, true}},
		{"in sync", gi(a, 0, b, c), gi(a, 0, b, c), Verdict{Same, 40, false}},
		{"in sync, lowest bit differs", gi(a|1, 0, b, c), gi(a, 0, b|1, c), Verdict{Same, 40, false}},
		{"local crashed primary", crashed(gi(a, 0, b, c)), gi(a, 0, b, c), Verdict{LocalNewer, 40, false}},
		{"peer crashed primary", gi(a, 0, b, c), crashed(gi(a, 0, b, c)), Verdict{PeerNewer, 40, false}},
		{"both crashed primaries", crashed(gi(a, 0, b, c)), crashed(gi(a, 0, b, c)), Verdict{Same, 40, false}},
		{"local missed end of its resync as source", gi(a, b, c, d), gi(a, 0, b, c), Verdict{LocalNewer, 34, false}},
		{"local source, peer failed to write sync uuid", gi(a, b, c, d), gi(a, 0, e, c), Verdict{LocalNewer, 36, false}},
		{"peer missed end of resync", gi(a, 0, b, c), gi(a, b, c, d), Verdict{PeerNewer, 35, false}},
		{"local target failed to write sync uuid", gi(a, 0, e, c), gi(a, b, c, d), Verdict{PeerNewer, 37, false}},
		// The peer went on writing while we were away: its bitmap is
		// based on our current UUID.
		{"peer wrote while disconnected", gi(a, 0, b, c), gi(d, a, b, c), Verdict{PeerNewer, 50, false}},
		{"peer wrote, lowest bits", gi(a|1, 0, b, c), gi(d, a|1, b, c), Verdict{PeerNewer, 50, false}},
		{"peer's sync uuid packet lost", gi(a, 0, b, c), gi(d, a+o, a, b), Verdict{PeerNewer, 51, false}},
		{"local current in peer history", gi(a, 0, b, c), gi(d, 0, a, b), Verdict{PeerNewer, 60, true}},
		{"local current in peer older history", gi(a, 0, b, c), gi(d, 0, e, a), Verdict{PeerNewer, 60, true}},
		{"we wrote while disconnected", gi(d, a, b, c), gi(a, 0, b, c), Verdict{LocalNewer, 70, false}},
		{"our sync uuid packet lost", gi(d, a+o, a, b), gi(a, 0, b, c), Verdict{LocalNewer, 71, false}},
		{"peer current in our history", gi(d, 0, a, b), gi(a, 0, b, c), Verdict{LocalNewer, 80, true}},
		// Both became Primary apart from the same base.
		{"split brain", gi(d, a, b, c), gi(e, a, b, c), Verdict{SplitBrain, 90, false}},
		{"split brain after history moved", gi(d, 0, a, b), gi(e, 0, c, a), Verdict{SplitBrain, 100, true}},
		{"unrelated", gi(a, 0, b, 0xF0), gi(c, 0, d, 0xE0), Verdict{Unrelated, 1000, true}},
		// Like the kernel, two empty history slots count as a match.
		{"zero histories", gi(a, 0, 0, 0), gi(c, 0, 0, 0), Verdict{SplitBrain, 100, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := CompareVerdict(tt.local, tt.peer)
			if got != tt.want {
				t.Errorf("CompareVerdict = %+v, want %+v", got, tt.want)
			}
			if r := Compare(tt.local, tt.peer); r != tt.want.Relation {
				t.Errorf("Compare = %v", r)
			}
			// Swapping sides mirrors the answer.
			mirror := map[Relation]Relation{Same: Same, LocalNewer: PeerNewer, PeerNewer: LocalNewer, SplitBrain: SplitBrain, Unrelated: Unrelated}
			if r := Compare(tt.peer, tt.local); r != mirror[tt.want.Relation] {
				t.Errorf("swapped Compare = %v, want %v", r, mirror[tt.want.Relation])
			}
		})
	}
}

func TestRelationString(t *testing.T) {
	for r, s := range map[Relation]string{Same: "Same", LocalNewer: "LocalNewer", PeerNewer: "PeerNewer",
		SplitBrain: "SplitBrain", Unrelated: "Unrelated", 9: "Relation(9)"} {
		if r.String() != s {
			t.Errorf("%d.String() = %q", int(r), r.String())
		}
	}
}

func FuzzParseGI(f *testing.F) {
	f.Add([]byte(showGI))
	f.Add([]byte("6E1A4E3D7FDE2C61:0000000000000000:A2D5F3B0C1E9D2A4:A2D4F3B0C1E9D2A5:1:1:1:1:0:0:0\n"))
	f.Add([]byte("0000000000000004:0000000000000000:0000000000000000:0000000000000000:"))
	f.Add([]byte("6e1a4e3d7fde2c61:1111111111111111:2222222222222222:3333333333333333:1:0:1:0:1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := ParseGI(data)
		if err != nil {
			return
		}
		back, err := ParseGI([]byte(g.String()))
		if err != nil || back.Current != g.Current || back.Bitmap != g.Bitmap ||
			back.History1 != g.History1 || back.History2 != g.History2 {
			t.Fatalf("round trip of %q: %+v, %v", g.String(), back, err)
		}
		_ = Compare(g, back)
	})
}
