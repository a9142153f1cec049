package storage

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dyad-ha/dyad/services/unit"
)

// View is the unit's storage as the API shows it.
type View struct {
	Groups  []unit.StorageGroup
	Volumes []unit.Volume
	Disks   []unit.Disk
	Alerts  []unit.Alert
}

// Summarize joins the records with the PMs' reports (nil for a PM that did
// not report) into the API's view. It is pure: the state of every volume
// follows from the records and what the two kernels say.
func Summarize(rs Records, reports map[int]*Report, now time.Time) View {
	var v View
	for _, n := range []int{1, 2} {
		if r := reports[n]; r != nil {
			v.Disks = append(v.Disks, r.Disks...)
		}
	}
	for _, g := range rs.Groups {
		sg := unit.StorageGroup{ID: g.ID, Name: g.Name, Disks: []unit.Disk{}}
		first := true
		for _, n := range []int{1, 2} {
			r := reports[n]
			if r == nil {
				continue
			}
			for _, gs := range r.Groups {
				if gs.ID != g.ID {
					continue
				}
				if first || gs.SizeBytes < sg.CapacityBytes {
					sg.CapacityBytes = gs.SizeBytes
				}
				if first || gs.FreeBytes < sg.FreeBytes {
					sg.FreeBytes = gs.FreeBytes
				}
				first = false
			}
		}
		for _, d := range v.Disks {
			if d.Group == g.ID {
				sg.Disks = append(sg.Disks, d)
			}
		}
		for _, vol := range rs.Volumes {
			if vol.Group == g.ID && !vol.Deleted {
				sg.Volumes++
			}
		}
		v.Groups = append(v.Groups, sg)
	}
	for _, rec := range rs.Volumes {
		vol := summarizeVolume(rec, reports)
		v.Volumes = append(v.Volumes, vol)
		if a, ok := volumeAlert(vol, now); ok {
			v.Alerts = append(v.Alerts, a)
		}
		for _, l := range vol.Legs {
			if l.Failed {
				v.Alerts = append(v.Alerts, unit.Alert{
					ID: fmt.Sprintf("volume/%d/leg/%d", vol.ID, l.PM), Severity: unit.SevCritical, Source: fmt.Sprintf("pm%d", l.PM),
					Message: fmt.Sprintf("Volume %s: the disk of its leg on PM %d failed and was detached; the volume runs from the other PM. Replace the disk.", vol.Name, l.PM),
					Since:   now,
				})
			}
		}
	}
	for _, n := range []int{1, 2} {
		if r := reports[n]; r != nil {
			for _, p := range r.Problems {
				v.Alerts = append(v.Alerts, unit.Alert{
					ID: fmt.Sprintf("storage/pm%d/%s", n, alertKey(p)), Severity: unit.SevWarning, Source: fmt.Sprintf("pm%d", n),
					Message: "Storage on PM " + strconv.Itoa(n) + ": " + p, Since: now,
				})
			}
		}
	}
	return v
}

// alertKey makes a stable alert ID from a problem's text.
func alertKey(s string) string {
	s, _, _ = strings.Cut(s, ":")
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		if r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return '-'
	}, s)
}

func isSyncing(cs string) bool {
	switch cs {
	case "SyncSource", "SyncTarget", "PausedSyncS", "PausedSyncT", "StartingSyncS", "StartingSyncT",
		"WFBitMapS", "WFBitMapT", "WFSyncUUID":
		return true
	}
	return false
}

func summarizeVolume(rec VolumeRecord, reports map[int]*Report) unit.Volume {
	vol := unit.Volume{ID: rec.ID, Name: rec.Name, Group: rec.Group, SizeBytes: rec.SizeBytes,
		Minor: rec.Minor, Device: Device(rec.Minor), Created: rec.Created, Legs: []unit.Leg{}}
	var legs [3]*LegState
	for _, n := range []int{1, 2} {
		l, ok := reports[n].Leg(rec.ID)
		if !ok {
			continue
		}
		legs[n] = &l
		ul := unit.Leg{PM: n, Role: orUnknown(l.Role), Disk: orUnknown(l.Disk), Connection: orUnknown(l.Connection),
			Device: Device(rec.Minor), Backing: "/dev/" + VGName(rec.Group) + "/" + LVName(rec.ID),
			Disks: l.Disks, LastPrimary: l.LastPrimary, Failed: l.Failed, Detail: l.Error}
		if !l.LV {
			ul.Backing = ""
		}
		if l.Gen.Read {
			ul.Generation = fmt.Sprintf("%016X", l.Gen.Current)
		}
		if l.Role == "Primary" {
			vol.Primary = n
		}
		vol.Legs = append(vol.Legs, ul)
		for _, s := range l.Snapshots {
			if !slices.Contains(rec.DropSnapshots, s.Name) {
				vol.Snapshots = append(vol.Snapshots, s)
			}
		}
	}
	vol.State, vol.Detail = volumeState(rec, legs)
	if vol.State == unit.SyncSyncing {
		for _, n := range []int{1, 2} {
			if l := legs[n]; l != nil && l.Sync != nil {
				s := *l.Sync
				if strings.HasSuffix(l.Connection, "S") || l.Connection == "SyncSource" {
					s.Source = n
				} else {
					s.Source = 3 - n
				}
				vol.Sync = &s
				break
			}
		}
	}
	if vol.State == unit.SyncSplitBrain {
		vol.SplitBrain = splitSides(legs)
	}
	return vol
}

func orUnknown(s string) string {
	if s == "" {
		return "Unknown"
	}
	return s
}

// volumeState is the mirror state of a volume from its legs (nil for a PM
// that did not report the leg).
func volumeState(rec VolumeRecord, legs [3]*LegState) (unit.SyncState, string) {
	if rec.Deleted {
		return unit.SyncDeleting, "the legs are being removed on both PMs"
	}
	l1, l2 := legs[1], legs[2]
	for _, n := range []int{1, 2} {
		if l := legs[n]; l != nil && l.SplitBrain {
			if rec.Resolve != nil {
				return unit.SyncSplitBrain, fmt.Sprintf("resolving: keeping PM %d's side, the other is kept as snapshot %s", rec.Resolve.Survivor, rec.Resolve.SnapshotName(rec.ID))
			}
			return unit.SyncSplitBrain, "both PMs wrote to the volume while they were apart; choose the side to keep"
		}
	}
	for _, n := range []int{1, 2} {
		if l := legs[n]; l != nil && isSyncing(l.Connection) {
			return unit.SyncSyncing, fmt.Sprintf("PM %d copies the blocks that differ", map[bool]int{true: n, false: 3 - n}[strings.HasSuffix(l.Connection, "S") || l.Connection == "SyncSource"])
		}
	}
	if l1 != nil && l2 != nil && l1.Connection == "Connected" && l2.Connection == "Connected" &&
		l1.Disk == "UpToDate" && l2.Disk == "UpToDate" {
		return unit.SyncUpToDate, ""
	}
	if !rec.Initialized {
		return unit.SyncCreating, "preparing the legs for the first sync"
	}
	var good, stale []string
	for _, n := range []int{1, 2} {
		l := legs[n]
		switch {
		case l == nil:
		case l.Failed:
		case l.Disk == "UpToDate" && !l.Stale:
			good = append(good, strconv.Itoa(n))
		case l.Stale || l.Disk == "Outdated" || l.Disk == "Consistent" || l.Disk == "Inconsistent":
			stale = append(stale, strconv.Itoa(n))
		}
	}
	if len(good) == 0 && len(stale) > 0 {
		return unit.SyncOutdated, fmt.Sprintf("the leg on PM %s is not known to hold the newest data and is not used; the volume waits for the other PM", strings.Join(stale, " and "))
	}
	if len(good) == 0 {
		return unit.SyncDegraded, "no leg holds current data"
	}
	for _, n := range []int{1, 2} {
		if l := legs[n]; l != nil && l.Failed {
			return unit.SyncDegraded, fmt.Sprintf("the leg on PM %d failed; the volume runs from PM %d", n, 3-n)
		}
	}
	return unit.SyncDegraded, fmt.Sprintf("only the leg on PM %s is current; the other PM is absent or not connected", good[0])
}

func splitSides(legs [3]*LegState) []unit.SplitSide {
	var sides []unit.SplitSide
	latest := 0
	for _, n := range []int{1, 2} {
		l := legs[n]
		if l == nil {
			continue
		}
		s := unit.SplitSide{PM: n, LastPrimary: l.LastPrimary}
		if l.Gen.Read {
			s.Generation = fmt.Sprintf("%016X", l.Gen.Current)
		}
		sides = append(sides, s)
		if latest == 0 || l.LastPrimary.After(legs[latest].LastPrimary) {
			latest = n
		}
	}
	for i := range sides {
		sides[i].LastWriter = sides[i].PM == latest && !legs[latest].LastPrimary.IsZero()
	}
	return sides
}

func volumeAlert(vol unit.Volume, now time.Time) (unit.Alert, bool) {
	a := unit.Alert{ID: fmt.Sprintf("volume/%d", vol.ID), Source: "storage", Since: now}
	switch vol.State {
	case unit.SyncSplitBrain:
		a.Severity = unit.SevCritical
		a.Message = fmt.Sprintf("Volume %s: split brain, both PMs wrote to it while apart. Nothing was discarded. Choose the side to keep: dyadctl volume resolve %d --survivor PM (the other side is kept as a snapshot)", vol.Name, vol.ID)
	case unit.SyncOutdated:
		a.Severity = unit.SevCritical
		a.Message = fmt.Sprintf("Volume %s is unavailable: %s", vol.Name, vol.Detail)
	case unit.SyncDegraded:
		a.Severity = unit.SevWarning
		a.Message = fmt.Sprintf("Volume %s is not redundant: %s", vol.Name, vol.Detail)
	case unit.SyncSyncing:
		a.Severity = unit.SevWarning
		a.Message = fmt.Sprintf("Volume %s is resynchronizing", vol.Name)
		if vol.Sync != nil {
			a.Message += fmt.Sprintf(": %.1f%%, %s left at %s/s", vol.Sync.Percent, time.Duration(vol.Sync.ETASeconds)*time.Second, unit.FormatBytes(vol.Sync.RateBytes))
		}
	default:
		return a, false
	}
	return a, true
}
