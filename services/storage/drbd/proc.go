package drbd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ConnState is a DRBD 8.4 connection state as /proc/drbd prints it after
// "cs:". Unconfigured is /proc/drbd's word for a minor that exists but has
// neither disk nor network (StandAlone, Diskless, Secondary).
type ConnState string

// Connection states, in the kernel's order (drbd_strings.c).
const (
	StandAlone     ConnState = "StandAlone"
	Disconnecting  ConnState = "Disconnecting"
	Unconnected    ConnState = "Unconnected"
	Timeout        ConnState = "Timeout"
	BrokenPipe     ConnState = "BrokenPipe"
	NetworkFailure ConnState = "NetworkFailure"
	ProtocolError  ConnState = "ProtocolError"
	TearDown       ConnState = "TearDown"
	WFConnection   ConnState = "WFConnection"
	WFReportParams ConnState = "WFReportParams"
	Connected      ConnState = "Connected"
	StartingSyncS  ConnState = "StartingSyncS"
	StartingSyncT  ConnState = "StartingSyncT"
	WFBitMapS      ConnState = "WFBitMapS"
	WFBitMapT      ConnState = "WFBitMapT"
	WFSyncUUID     ConnState = "WFSyncUUID"
	SyncSource     ConnState = "SyncSource"
	SyncTarget     ConnState = "SyncTarget"
	VerifyS        ConnState = "VerifyS"
	VerifyT        ConnState = "VerifyT"
	PausedSyncS    ConnState = "PausedSyncS"
	PausedSyncT    ConnState = "PausedSyncT"
	Ahead          ConnState = "Ahead"
	Behind         ConnState = "Behind"
	Unconfigured   ConnState = "Unconfigured"
)

// connRank orders the states like enum drbd_conns: every state from
// Connected on means the peers talk to each other.
var connRank = map[ConnState]int{
	StandAlone: 0, Disconnecting: 1, Unconnected: 2, Timeout: 3, BrokenPipe: 4,
	NetworkFailure: 5, ProtocolError: 6, TearDown: 7, WFConnection: 8,
	WFReportParams: 9, Connected: 10, StartingSyncS: 11, StartingSyncT: 12,
	WFBitMapS: 13, WFBitMapT: 14, WFSyncUUID: 15, SyncSource: 16,
	SyncTarget: 17, VerifyS: 18, VerifyT: 19, PausedSyncS: 20,
	PausedSyncT: 21, Ahead: 22, Behind: 23,
}

// Known reports whether s is a state DRBD 8.4 prints. The parser keeps
// unknown words rather than failing, so a newer kernel does not blind us.
func (s ConnState) Known() bool {
	_, ok := connRank[s]
	return ok || s == Unconfigured
}

// IsConnected reports whether the peers are connected (Connected or any
// resync, verify or Ahead/Behind state).
func (s ConnState) IsConnected() bool {
	r, ok := connRank[s]
	return ok && r >= connRank[Connected]
}

// IsResync reports whether a resync is starting, running or paused.
func (s ConnState) IsResync() bool {
	switch s {
	case StartingSyncS, StartingSyncT, WFBitMapS, WFBitMapT, WFSyncUUID,
		SyncSource, SyncTarget, PausedSyncS, PausedSyncT:
		return true
	}
	return false
}

// Roles and disk states as DRBD 8.4 prints them.
const (
	RolePrimary   = "Primary"
	RoleSecondary = "Secondary"
	RoleUnknown   = "Unknown"

	DiskDiskless     = "Diskless"
	DiskAttaching    = "Attaching"
	DiskFailed       = "Failed"
	DiskNegotiating  = "Negotiating"
	DiskInconsistent = "Inconsistent"
	DiskOutdated     = "Outdated"
	DiskDUnknown     = "DUnknown"
	DiskConsistent   = "Consistent"
	DiskUpToDate     = "UpToDate"
)

// Proc is the parsed content of /proc/drbd.
type Proc struct {
	Version  string // "8.4.11"
	API      int    // genetlink API version, 1 for 8.4
	ProtoMin int    // lowest protocol version spoken, 86
	ProtoMax int    // highest, 101 for 8.4.11
	// BuildTag is the second line: "srcversion: ..." for a module,
	// "built-in" otherwise, "GIT-hash: ..." for out-of-tree builds.
	BuildTag string
	Devices  []Device // in the order printed, which is ascending minor
}

// Device returns the entry of one minor.
func (p Proc) Device(minor int) (Device, bool) {
	for _, d := range p.Devices {
		if d.Minor == minor {
			return d, true
		}
	}
	return Device{}, false
}

// IOFlags are the six flag characters after the protocol.
type IOFlags struct {
	Raw         string // as printed, e.g. "r-----"
	Suspended   bool   // 's': application I/O frozen
	AfterISP    bool   // 'a': resync paused by a resync-after dependency
	PeerISP     bool   // 'p': resync paused by the peer
	UserISP     bool   // 'u': resync paused by pause-sync
	Congestion  byte   // '-' or the reason letter of the old congestion hook
	ALSuspended bool   // 's': activity-log updates suspended
}

// Device is one minor of /proc/drbd. Counters marked KiB are kibibytes;
// the others are plain counts.
type Device struct {
	Minor    int
	CS       ConnState
	Role     string // local role: Primary, Secondary, Unknown
	PeerRole string
	Disk     string // local disk state
	PeerDisk string
	// Protocol is "A", "B" or "C"; empty when there is no network
	// configuration (StandAlone after a disconnect).
	Protocol string
	Flags    IOFlags

	NS  uint64 // KiB sent over the network
	NR  uint64 // KiB received over the network
	DW  uint64 // KiB written to the local disk
	DR  uint64 // KiB read from the local disk
	AL  uint64 // activity-log metadata updates
	BM  uint64 // bitmap metadata updates
	LO  int64  // requests open to the local disk
	PE  int64  // requests sent to the peer, not yet answered
	UA  int64  // requests from the peer, not yet answered
	AP  int64  // application requests not yet completed
	EP  int64  // epochs in flight (barrier acks pending)
	WO  string // write ordering: "f" flush, "d" drain, "n" none
	OOS uint64 // KiB known out of sync

	// Sync is set while a resync or online verify runs (not while paused).
	Sync *Sync
}

// SentBytes and the following helpers turn the KiB counters into bytes.
func (d Device) SentBytes() int64       { return kib(d.NS) }
func (d Device) ReceivedBytes() int64   { return kib(d.NR) }
func (d Device) WrittenBytes() int64    { return kib(d.DW) }
func (d Device) ReadBytes() int64       { return kib(d.DR) }
func (d Device) OutOfSyncBytes() int64  { return kib(d.OOS) }
func (d Device) IsUnconfigured() bool   { return d.CS == Unconfigured }
func (d Device) IsPrimary() bool        { return d.Role == RolePrimary }
func (d Device) PeerIsPrimary() bool    { return d.PeerRole == RolePrimary }
func (d Device) IsUpToDate() bool       { return d.Disk == DiskUpToDate }
func (d Device) PeerIsUpToDate() bool   { return d.PeerDisk == DiskUpToDate }
func (d Device) ConnectedToPeer() bool  { return d.CS.IsConnected() }
func (d Device) ResyncInProgress() bool { return d.CS.IsResync() }

// Sync is the progress block printed under a SyncSource, SyncTarget,
// VerifyS or VerifyT minor.
type Sync struct {
	Verify  bool    // "verified:" (online verify) rather than "sync'ed:"
	Percent float64 // done, 0..100, as printed (one decimal)
	// LeftKiB and TotalKiB are what remains and the size of this resync.
	// Above 4 GiB the kernel prints MiB; they are converted to KiB then.
	LeftKiB  uint64
	TotalKiB uint64
	Finish   time.Duration // estimated time left
	// SpeedKiB is the rate over the last ~18 s, AvgSpeedKiB the mean since
	// the resync started, RecentSpeedKiB the ~3 s rate (only printed with
	// the module parameter proc_details >= 1, else 0). KiB per second.
	SpeedKiB       uint64
	RecentSpeedKiB uint64
	AvgSpeedKiB    uint64
	// WantKiB is the rate the resync controller aims at; the kernel prints
	// it only on SyncTarget and VerifyS. 0 when absent.
	WantKiB uint64
	Stalled bool // no progress for a while
}

// LeftBytes and the following helpers turn the KiB fields into bytes.
func (s Sync) LeftBytes() int64     { return kib(s.LeftKiB) }
func (s Sync) TotalBytes() int64    { return kib(s.TotalKiB) }
func (s Sync) SpeedBytes() int64    { return kib(s.SpeedKiB) }
func (s Sync) AvgSpeedBytes() int64 { return kib(s.AvgSpeedKiB) }
func (s Sync) WantBytes() int64     { return kib(s.WantKiB) }

// kib converts saturating: a corrupt counter must not wrap negative.
func kib(v uint64) int64 {
	const max = uint64(1<<63-1) / 1024
	if v > max {
		return 1<<63 - 1
	}
	return int64(v) * 1024
}

// ErrNoVersion is returned for input without the "version:" line, which
// every /proc/drbd starts with.
var ErrNoVersion = errors.New("drbd: no version line in /proc/drbd")

// ParseProc parses /proc/drbd as DRBD 8.4's drbd_seq_show writes it.
// Lines it does not know (activity-log statistics printed with
// proc_details, the sector position line) are skipped; a device line it
// cannot read is an error, because a half-read state is worse than none.
func ParseProc(data []byte) (Proc, error) {
	var p Proc
	var cur *Device
	sawVersion := false
	afterVersion := false
	seen := map[int]bool{}

	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if trimmed == "" {
			afterVersion = false
			continue
		}
		if !sawVersion {
			if !strings.HasPrefix(trimmed, "version:") {
				return Proc{}, fmt.Errorf("drbd: /proc/drbd line %d: %w", n, ErrNoVersion)
			}
			if err := parseVersion(trimmed, &p); err != nil {
				return Proc{}, fmt.Errorf("drbd: /proc/drbd line %d: %w", n, err)
			}
			sawVersion, afterVersion = true, true
			continue
		}
		if minor, rest, ok := deviceHeader(trimmed); ok {
			afterVersion = false
			if seen[minor] {
				return Proc{}, fmt.Errorf("drbd: /proc/drbd line %d: minor %d listed twice", n, minor)
			}
			seen[minor] = true
			d, err := parseHeader(minor, rest)
			if err != nil {
				return Proc{}, fmt.Errorf("drbd: /proc/drbd line %d: %w", n, err)
			}
			p.Devices = append(p.Devices, d)
			cur = &p.Devices[len(p.Devices)-1]
			continue
		}
		if afterVersion && cur == nil && p.BuildTag == "" {
			p.BuildTag = trimmed
			afterVersion = false
			continue
		}
		if cur == nil || cur.CS == Unconfigured {
			continue
		}
		var err error
		switch {
		case strings.HasPrefix(trimmed, "ns:"):
			err = parseCounters(trimmed, cur)
		case strings.Contains(trimmed, "sync'ed:") || strings.Contains(trimmed, "verified:"):
			err = parseProgress(trimmed, cur)
		case strings.HasPrefix(trimmed, "finish:"):
			err = parseFinish(trimmed, cur)
		}
		if err != nil {
			return Proc{}, fmt.Errorf("drbd: /proc/drbd line %d (minor %d): %w", n, cur.Minor, err)
		}
	}
	if err := sc.Err(); err != nil {
		return Proc{}, fmt.Errorf("drbd: reading /proc/drbd: %w", err)
	}
	if !sawVersion {
		return Proc{}, ErrNoVersion
	}
	return p, nil
}

// parseVersion reads "version: 8.4.11 (api:1/proto:86-101)".
func parseVersion(s string, p *Proc) error {
	f := strings.Fields(strings.TrimPrefix(s, "version:"))
	if len(f) == 0 {
		return errors.New("empty version line")
	}
	p.Version = f[0]
	if len(f) < 2 {
		return nil
	}
	inner, ok := strings.CutPrefix(f[1], "(api:")
	if !ok {
		return nil // an unknown suffix is not worth failing over
	}
	inner = strings.TrimSuffix(inner, ")")
	api, proto, ok := strings.Cut(inner, "/proto:")
	if !ok {
		return fmt.Errorf("bad version line %q", s)
	}
	lo, hi, ok := strings.Cut(proto, "-")
	var err1, err2, err3 error
	p.API, err1 = strconv.Atoi(api)
	p.ProtoMin, err2 = strconv.Atoi(lo)
	p.ProtoMax, err3 = strconv.Atoi(hi)
	if !ok || err1 != nil || err2 != nil || err3 != nil {
		return fmt.Errorf("bad version line %q", s)
	}
	return nil
}

// deviceHeader recognises "N: cs:..." and returns N and the rest.
func deviceHeader(s string) (int, string, bool) {
	num, rest, ok := strings.Cut(s, ":")
	if !ok || num == "" || len(num) > 7 || !allDigits(num) {
		return 0, "", false
	}
	rest = strings.TrimSpace(rest)
	if !strings.HasPrefix(rest, "cs:") {
		return 0, "", false
	}
	minor, err := strconv.Atoi(num)
	if err != nil {
		return 0, "", false
	}
	return minor, rest, true
}

// parseHeader reads "cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate C r-----".
// The protocol is a space when there is no net config, which collapses
// into the field separator; a one-letter field is the protocol, the
// longer one the flags.
func parseHeader(minor int, s string) (Device, error) {
	d := Device{Minor: minor}
	f := strings.Fields(s)
	d.CS = ConnState(strings.TrimPrefix(f[0], "cs:"))
	if d.CS == "" {
		return Device{}, errors.New("empty connection state")
	}
	if d.CS == Unconfigured {
		return d, nil
	}
	var haveRO, haveDS bool
	for _, tok := range f[1:] {
		switch {
		case strings.HasPrefix(tok, "ro:"):
			l, r, ok := strings.Cut(tok[3:], "/")
			if !ok || l == "" || r == "" {
				return Device{}, fmt.Errorf("bad roles %q", tok)
			}
			d.Role, d.PeerRole, haveRO = l, r, true
		case strings.HasPrefix(tok, "ds:"):
			l, r, ok := strings.Cut(tok[3:], "/")
			if !ok || l == "" || r == "" {
				return Device{}, fmt.Errorf("bad disk states %q", tok)
			}
			d.Disk, d.PeerDisk, haveDS = l, r, true
		case len(tok) == 1 && tok[0] >= 'A' && tok[0] <= 'C':
			d.Protocol = tok
		case len(tok) >= 4 && (tok[0] == 'r' || tok[0] == 's'):
			d.Flags = parseFlags(tok)
		default:
			return Device{}, fmt.Errorf("unexpected field %q", tok)
		}
	}
	if !haveRO || !haveDS {
		return Device{}, fmt.Errorf("device line without ro: or ds: %q", s)
	}
	return d, nil
}

func parseFlags(s string) IOFlags {
	at := func(i int) byte {
		if i < len(s) {
			return s[i]
		}
		return '-'
	}
	return IOFlags{
		Raw:         s,
		Suspended:   at(0) == 's',
		AfterISP:    at(1) == 'a',
		PeerISP:     at(2) == 'p',
		UserISP:     at(3) == 'u',
		Congestion:  at(4),
		ALSuspended: at(5) == 's',
	}
}

// parseCounters reads "ns:0 nr:0 dw:0 dr:0 al:0 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:0".
// Unknown keys are ignored (older kernels had fewer, newer ones may add).
func parseCounters(s string, d *Device) error {
	for _, tok := range strings.Fields(s) {
		k, v, ok := strings.Cut(tok, ":")
		if !ok {
			return fmt.Errorf("bad counter %q", tok)
		}
		var u *uint64
		var i *int64
		switch k {
		case "ns":
			u = &d.NS
		case "nr":
			u = &d.NR
		case "dw":
			u = &d.DW
		case "dr":
			u = &d.DR
		case "al":
			u = &d.AL
		case "bm":
			u = &d.BM
		case "oos":
			u = &d.OOS
		case "lo":
			i = &d.LO
		case "pe":
			i = &d.PE
		case "ua":
			i = &d.UA
		case "ap":
			i = &d.AP
		case "ep":
			i = &d.EP
		case "wo":
			d.WO = v
			continue
		default:
			continue
		}
		var err error
		if u != nil {
			*u, err = strconv.ParseUint(v, 10, 64)
		} else {
			*i, err = strconv.ParseInt(v, 10, 64)
		}
		if err != nil {
			return fmt.Errorf("bad counter %q", tok)
		}
	}
	return nil
}

// parseProgress reads "[==>......] sync'ed: 23.4% (49880/65536)K" (or
// "verified:", or "...)M" above 4 GiB). Kernels before the seq_puts
// rewrite forgot the line break after the M form, so "finish:" may follow
// on the same line.
func parseProgress(s string, d *Device) error {
	sy := ensureSync(d)
	var rest string
	if i := strings.Index(s, "sync'ed:"); i >= 0 {
		rest = s[i+len("sync'ed:"):]
	} else {
		i = strings.Index(s, "verified:")
		rest = s[i+len("verified:"):]
		sy.Verify = true
	}
	if i := strings.Index(rest, "finish:"); i >= 0 {
		if err := parseFinish(rest[i:], d); err != nil {
			return err
		}
		rest = rest[:i]
	}
	f := strings.Fields(rest)
	if len(f) < 2 {
		return fmt.Errorf("bad progress %q", s)
	}
	pct, ok := strings.CutSuffix(f[0], "%")
	if !ok {
		return fmt.Errorf("bad percentage %q", f[0])
	}
	v, err := strconv.ParseFloat(pct, 64)
	if err != nil || v < 0 || v > 100 {
		return fmt.Errorf("bad percentage %q", f[0])
	}
	sy.Percent = v

	// "(left/total)K" or "(left/total)M"
	amount := f[1]
	n := len(amount)
	if n < 6 || amount[0] != '(' || amount[n-2] != ')' {
		return fmt.Errorf("bad amount %q", amount)
	}
	unit := amount[n-1]
	l, t, ok := strings.Cut(amount[1:n-2], "/")
	if !ok {
		return fmt.Errorf("bad amount %q", amount)
	}
	left, err1 := strconv.ParseUint(l, 10, 64)
	total, err2 := strconv.ParseUint(t, 10, 64)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("bad amount %q", amount)
	}
	switch unit {
	case 'K':
	case 'M':
		const max = ^uint64(0) >> 10
		if left > max || total > max {
			return fmt.Errorf("amount out of range %q", amount)
		}
		left, total = left<<10, total<<10
	default:
		return fmt.Errorf("bad amount unit %q", amount)
	}
	sy.LeftKiB, sy.TotalKiB = left, total
	return nil
}

// parseFinish reads "finish: 0:00:12 speed: 4,096 (4,096) want: 10,240 K/sec",
// with "(3s -- long)" averages when proc_details >= 1 and "(stalled)" at
// the end when nothing moved for a while.
func parseFinish(s string, d *Device) error {
	sy := ensureSync(d)
	f := strings.Fields(s)
	if len(f) < 2 || f[0] != "finish:" {
		return fmt.Errorf("bad finish line %q", s)
	}
	eta, err := parseHMS(f[1])
	if err != nil {
		return err
	}
	sy.Finish = eta
	f = f[2:]
	for len(f) > 0 {
		switch f[0] {
		case "speed:":
			// speed: A ( B -- C ) | speed: A ( C )
			if len(f) < 2 {
				return fmt.Errorf("bad speed in %q", s)
			}
			if sy.SpeedKiB, err = parseGrouped(f[1]); err != nil {
				return err
			}
			f = f[2:]
			if len(f) == 0 || !strings.HasPrefix(f[0], "(") {
				return fmt.Errorf("bad speed average in %q", s)
			}
			var paren []string
			closed := false
			for len(f) > 0 && !closed {
				paren = append(paren, f[0])
				closed = strings.HasSuffix(f[0], ")")
				f = f[1:]
			}
			if !closed {
				return fmt.Errorf("bad speed average in %q", s)
			}
			inner := strings.TrimSuffix(strings.TrimPrefix(strings.Join(paren, " "), "("), ")")
			recent, avg, two := strings.Cut(inner, " -- ")
			if !two {
				avg, recent = recent, ""
			}
			if recent != "" {
				if sy.RecentSpeedKiB, err = parseGrouped(strings.TrimSpace(recent)); err != nil {
					return err
				}
			}
			if sy.AvgSpeedKiB, err = parseGrouped(strings.TrimSpace(avg)); err != nil {
				return err
			}
		case "want:":
			if len(f) < 2 {
				return fmt.Errorf("bad want in %q", s)
			}
			if sy.WantKiB, err = parseGrouped(f[1]); err != nil {
				return err
			}
			f = f[2:]
		case "K/sec":
			f = f[1:]
		case "(stalled)":
			sy.Stalled = true
			f = f[1:]
		default:
			return fmt.Errorf("unexpected %q in %q", f[0], s)
		}
	}
	return nil
}

func ensureSync(d *Device) *Sync {
	if d.Sync == nil {
		d.Sync = &Sync{}
	}
	return d.Sync
}

// parseHMS reads the kernel's "%lu:%02lu:%02lu" (hours unbounded).
func parseHMS(s string) (time.Duration, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return 0, fmt.Errorf("bad finish time %q", s)
	}
	var v [3]uint64
	for i, p := range parts {
		if p == "" || len(p) > 12 || !allDigits(p) {
			return 0, fmt.Errorf("bad finish time %q", s)
		}
		v[i], _ = strconv.ParseUint(p, 10, 64)
	}
	if v[1] > 59 || v[2] > 59 || v[0] > 1<<31 {
		return 0, fmt.Errorf("bad finish time %q", s)
	}
	return time.Duration(v[0])*time.Hour + time.Duration(v[1])*time.Minute + time.Duration(v[2])*time.Second, nil
}

// parseGrouped reads the kernel's thousands grouping: "7", "4,096",
// "1,234,567". Groups after the first must have exactly three digits.
func parseGrouped(s string) (uint64, error) {
	groups := strings.Split(s, ",")
	for i, g := range groups {
		if g == "" || !allDigits(g) || (i > 0 && len(g) != 3) || (i == 0 && len(g) > 12) {
			return 0, fmt.Errorf("bad rate %q", s)
		}
	}
	v, err := strconv.ParseUint(strings.ReplaceAll(s, ",", ""), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad rate %q", s)
	}
	return v, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
