package drbd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// UUIDJustCreated is the current UUID drbdmeta create-md writes: the data
// has never been used. The kernel compares it with the lowest bit cleared
// like every other UUID.
const UUIDJustCreated = 4

// uuidNewBMOffset is what the kernel adds to a bitmap UUID when it starts
// a resync as source (UUID_NEW_BM_OFFSET, protocol >= 96); the handshake
// uses it to spot a lost sync-UUID packet.
const uuidNewBMOffset = uint64(1) << 48

// GI is a device's data generation identifiers, as printed by
// "drbdsetup-84 get-gi <minor>" (or drbdmeta get-gi):
//
//	CURRENT:BITMAP:HISTORY1:HISTORY2:c:u:p:n:f:o:x
//
// four 64-bit UUIDs in upper-case hex, then the meta-data flags as 0/1.
type GI struct {
	Current  uint64 // data generation now
	Bitmap   uint64 // generation the bitmap is based on; 0 when in sync
	History1 uint64 // younger history
	History2 uint64 // older history
	// HasFlags tells whether flags followed the UUIDs.
	HasFlags bool
	Flags    GIFlags
}

// GIFlags are the meta-data flags after the UUIDs, in their printed order.
type GIFlags struct {
	Consistent     bool // data consistent (not Inconsistent)
	WasUpToDate    bool // data was/is UpToDate (not Outdated)
	Primary        bool // node was/is Primary
	Connected      bool // node was/is connected
	FullSync       bool // a full sync was being set up
	PeerOutdated   bool // the peer's disk was marked Outdated
	CrashedPrimary bool // node was Primary when it crashed, not seen its peer since
}

// String prints the UUIDs the way get-gi does (without flags).
func (g GI) String() string {
	return fmt.Sprintf("%016X:%016X:%016X:%016X", g.Current, g.Bitmap, g.History1, g.History2)
}

// CurrentHex is the current UUID as 16 upper-case hex digits, the form
// kept in unit.Leg.Generation.
func (g GI) CurrentHex() string { return fmt.Sprintf("%016X", g.Current) }

// ErrNoGI is returned when no generation-identifier line is found.
var ErrNoGI = errors.New("drbd: no generation identifiers in output")

// ParseGI finds the generation-identifier line in the output of get-gi or
// show-gi (whose line is framed by an ASCII-art legend).
func ParseGI(out []byte) (GI, error) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 1024), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.Contains(line, ":") {
			continue
		}
		g, ok, err := parseGILine(line)
		if err != nil {
			return GI{}, err
		}
		if ok {
			return g, nil
		}
	}
	if err := sc.Err(); err != nil {
		return GI{}, fmt.Errorf("drbd: reading gi: %w", err)
	}
	return GI{}, ErrNoGI
}

// parseGILine returns ok=false for a line that is not a gi line at all
// (legend, "flags:"), and an error for one that starts like a gi line but
// is damaged.
func parseGILine(line string) (GI, bool, error) {
	parts := strings.Split(line, ":")
	if len(parts) < 4 || !isHex16(parts[0]) {
		return GI{}, false, nil
	}
	var u [4]uint64
	for i := range 4 {
		if !isHex16(parts[i]) {
			return GI{}, false, fmt.Errorf("drbd: bad gi line %q", line)
		}
		u[i], _ = strconv.ParseUint(parts[i], 16, 64)
	}
	g := GI{Current: u[0], Bitmap: u[1], History1: u[2], History2: u[3]}
	flags := parts[4:]
	if len(flags) > 0 && flags[len(flags)-1] == "" {
		// tolerate a trailing colon
		flags = flags[:len(flags)-1]
	}
	if len(flags) > 8 {
		return GI{}, false, fmt.Errorf("drbd: bad gi line %q: %d flags", line, len(flags))
	}
	dst := []*bool{
		&g.Flags.Consistent, &g.Flags.WasUpToDate, &g.Flags.Primary,
		&g.Flags.Connected, &g.Flags.FullSync, &g.Flags.PeerOutdated,
		&g.Flags.CrashedPrimary,
	}
	for i, f := range flags {
		if f != "0" && f != "1" {
			return GI{}, false, fmt.Errorf("drbd: bad gi flag %q in %q", f, line)
		}
		if i < len(dst) {
			*dst[i] = f == "1"
		}
	}
	g.HasFlags = len(flags) > 0
	return g, true, nil
}

// isHex16 accepts the 16 hex digits of %016llX (lower case too).
func isHex16(s string) bool {
	if len(s) != 16 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'F' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Relation is how two legs' data relate, seen from the local leg.
type Relation int

// Relations. LocalNewer means the peer can be brought up to date from us
// (we would be SyncSource); PeerNewer the other way round. SplitBrain
// means both changed since they last were in sync: one side's writes must
// be discarded. Unrelated means the two never shared data.
const (
	Same Relation = iota
	LocalNewer
	PeerNewer
	SplitBrain
	Unrelated
)

func (r Relation) String() string {
	switch r {
	case Same:
		return "Same"
	case LocalNewer:
		return "LocalNewer"
	case PeerNewer:
		return "PeerNewer"
	case SplitBrain:
		return "SplitBrain"
	case Unrelated:
		return "Unrelated"
	}
	return "Relation(" + strconv.Itoa(int(r)) + ")"
}

// Verdict is Compare with its reasons: the kernel's rule number (as in
// the "uuid_compare()=%d by rule %d" kernel message) and whether the
// resync would be a full one rather than bitmap-based.
type Verdict struct {
	Relation Relation
	Rule     int
	FullSync bool
}

// Compare tells how the local and peer generation identifiers relate.
// See CompareVerdict.
func Compare(local, peer GI) Relation { return CompareVerdict(local, peer).Relation }

// CompareVerdict follows DRBD 8.4's drbd_uuid_compare (protocol >= 96)
// for two Secondary legs, without mutating anything: where the kernel
// would "correct" a lost sync-UUID packet it reports the direction the
// correction leads to. The lowest bit of every UUID is ignored, as the
// kernel does (it only records the role at the time the UUID was made).
//
// With equal current UUIDs and no bitmap difference the kernel breaks the
// tie with the crashed-primary flags (rule 40): a leg that was Primary
// when its node crashed may hold writes its peer lacks. When both carry
// the flag, the kernel picks a side by connection role; both legs then
// hold the same data up to in-flight writes, so this reports Same.
func CompareVerdict(local, peer GI) Verdict {
	const low = ^uint64(1)
	self := local.Current & low
	p := peer.Current & low

	if self == UUIDJustCreated && p == UUIDJustCreated {
		return Verdict{Same, 10, false}
	}
	if (self == UUIDJustCreated || self == 0) && p != UUIDJustCreated {
		return Verdict{PeerNewer, 20, true}
	}
	if self != UUIDJustCreated && (p == UUIDJustCreated || p == 0) {
		return Verdict{LocalNewer, 30, true}
	}

	if self == p {
		// One side finished a resync as source but the other did not
		// record it: the one still holding a bitmap UUID is the source.
		if peer.Bitmap == 0 && local.Bitmap != 0 {
			if local.Bitmap&low == peer.History1&low && local.History1&low == peer.History2&low {
				return Verdict{LocalNewer, 34, false}
			}
			return Verdict{LocalNewer, 36, false}
		}
		if local.Bitmap == 0 && peer.Bitmap != 0 {
			if local.History1&low == peer.Bitmap&low && local.History2&low == peer.History1&low {
				return Verdict{PeerNewer, 35, false}
			}
			return Verdict{PeerNewer, 37, false}
		}
		switch {
		case local.Flags.CrashedPrimary && !peer.Flags.CrashedPrimary:
			return Verdict{LocalNewer, 40, false}
		case !local.Flags.CrashedPrimary && peer.Flags.CrashedPrimary:
			return Verdict{PeerNewer, 40, false}
		}
		return Verdict{Same, 40, false}
	}

	// The peer's bitmap is based on our current data: the peer wrote on.
	if self == peer.Bitmap&low {
		return Verdict{PeerNewer, 50, false}
	}
	// Same, but the peer's last sync-UUID packet got lost.
	if self == peer.History1&low && peer.History1&low+uuidNewBMOffset == peer.Bitmap&low {
		return Verdict{PeerNewer, 51, false}
	}
	// Our current data is in the peer's history: the peer moved on and
	// kept no bitmap against us.
	if self == peer.History1&low || self == peer.History2&low {
		return Verdict{PeerNewer, 60, true}
	}

	if local.Bitmap&low == p {
		return Verdict{LocalNewer, 70, false}
	}
	if local.History1&low == p && local.History1&low+uuidNewBMOffset == local.Bitmap&low {
		return Verdict{LocalNewer, 71, false}
	}
	if local.History1&low == p || local.History2&low == p {
		return Verdict{LocalNewer, 80, true}
	}

	// Both wrote on from the same base: a split brain DRBD itself could
	// auto-resolve if configured to (we never configure it to).
	if local.Bitmap&low == peer.Bitmap&low && local.Bitmap&low != 0 {
		return Verdict{SplitBrain, 90, false}
	}
	// Common ancestry somewhere in the history: split brain too. Like the
	// kernel this also matches two empty (zero) history slots.
	for _, a := range []uint64{local.History1 & low, local.History2 & low} {
		for _, b := range []uint64{peer.History1 & low, peer.History2 & low} {
			if a == b {
				return Verdict{SplitBrain, 100, true}
			}
		}
	}
	return Verdict{Unrelated, 1000, true}
}
