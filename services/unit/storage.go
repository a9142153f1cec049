package unit

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// DiskState is what a PM's disk is to the unit.
type DiskState string

// Disk states. A foreign disk holds data Dyad did not put there; it joins a
// storage group only on an explicit command that says it erases the disk.
const (
	DiskSystem  DiskState = "system"  // holds the PM's boot or data partition; never used for volumes
	DiskBlank   DiskState = "blank"   // no signature, zeros at both ends
	DiskForeign DiskState = "foreign" // holds a partition table, file system, or other data
	DiskMember  DiskState = "member"  // a physical volume of a storage group
	DiskFailed  DiskState = "failed"  // a member that is missing or returns I/O errors
)

// Disk is one whole disk of a PM.
type Disk struct {
	PM        int       `json:"pm"`
	Name      string    `json:"name"` // kernel name, e.g. "vdb"
	Serial    string    `json:"serial,omitempty"`
	Model     string    `json:"model,omitempty"`
	SizeBytes int64     `json:"size_bytes"`
	State     DiskState `json:"state"`
	// Group is the storage group of a member disk, 0 for none.
	Group int `json:"group,omitempty"`
	// Detail says why a disk is foreign or failed ("ext4 file system",
	// "GPT partition table", "I/O error").
	Detail string `json:"detail,omitempty"`
}

// StorageGroup pairs disks of both PMs; it is an LVM volume group on each.
// A volume never spans groups.
type StorageGroup struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
	// CapacityBytes and FreeBytes are the smaller of the two PMs' volume
	// groups: a volume needs its size on both.
	CapacityBytes int64  `json:"capacity_bytes"`
	FreeBytes     int64  `json:"free_bytes"`
	Volumes       int    `json:"volumes"`
	Disks         []Disk `json:"disks"`
}

// SyncState is a volume's mirror state.
type SyncState string

// Volume sync states.
const (
	SyncCreating   SyncState = "Creating"   // legs being prepared, before the first sync
	SyncUpToDate   SyncState = "UpToDate"   // both legs hold the same data
	SyncSyncing    SyncState = "Syncing"    // one leg copies the blocks it lacks from the other
	SyncDegraded   SyncState = "Degraded"   // one leg serves alone (peer absent or leg failed)
	SyncOutdated   SyncState = "Outdated"   // the only reachable leg is not known to be current: it is not used
	SyncSplitBrain SyncState = "SplitBrain" // both legs were written apart; the operator picks the survivor
	SyncDeleting   SyncState = "Deleting"
)

// Leg is one PM's half of a volume.
type Leg struct {
	PM int `json:"pm"`
	// Role is the DRBD role: "Primary", "Secondary" or "Unknown".
	Role string `json:"role"`
	// Disk is the DRBD disk state: UpToDate, Inconsistent, Outdated,
	// Consistent, Diskless, Attaching, Failed, DUnknown.
	Disk string `json:"disk"`
	// Connection is the DRBD connection state: Connected, StandAlone,
	// WFConnection, SyncSource, SyncTarget, ...
	Connection string `json:"connection"`
	Device     string `json:"device,omitempty"`  // /dev/drbdN
	Backing    string `json:"backing,omitempty"` // /dev/dyad_sg1/vol3
	// Disks are the kernel names of the disks the leg's logical volume lies on.
	Disks []string `json:"disks,omitempty"`
	// Generation is the DRBD current data generation UUID (hex).
	Generation string `json:"generation,omitempty"`
	// LastPrimary is when this leg was last Primary (the last time its PM
	// could have written it).
	LastPrimary time.Time `json:"last_primary,omitzero"`
	// Failed is true when the leg was detached after an I/O error of its disk.
	Failed bool   `json:"failed,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// SyncProgress is a running resync.
type SyncProgress struct {
	Percent float64 `json:"percent"`
	// RateBytes is bytes per second, ETASeconds the estimated time left.
	RateBytes      int64 `json:"rate_bytes"`
	ETASeconds     int64 `json:"eta_seconds"`
	OutOfSyncBytes int64 `json:"out_of_sync_bytes"`
	// Source is the PM that sends the blocks.
	Source int `json:"source"`
}

// Snapshot is a kept copy of a volume leg, such as the losing side of a
// split brain. It lives on one PM until the operator deletes it.
type Snapshot struct {
	Name      string    `json:"name"`
	PM        int       `json:"pm"`
	SizeBytes int64     `json:"size_bytes"`
	Created   time.Time `json:"created,omitzero"`
	Reason    string    `json:"reason,omitempty"`
}

// SplitSide is one side of a split brain, for the operator to choose from.
type SplitSide struct {
	PM          int       `json:"pm"`
	Generation  string    `json:"generation"`
	LastPrimary time.Time `json:"last_primary,omitzero"`
	// LastWriter is true for the side that was Primary most recently.
	LastWriter bool `json:"last_writer"`
}

// Volume is a VM disk mirrored on both PMs.
type Volume struct {
	ID        int           `json:"id"`
	Name      string        `json:"name"`
	Group     int           `json:"group"`
	SizeBytes int64         `json:"size_bytes"`
	Minor     int           `json:"minor"`
	Device    string        `json:"device"` // /dev/drbdN on the PM where it is Primary
	State     SyncState     `json:"state"`
	Sync      *SyncProgress `json:"sync,omitempty"`
	// Primary is the PM where the volume is Primary (writable), 0 for none.
	Primary    int         `json:"primary"`
	Legs       []Leg       `json:"legs"`
	SplitBrain []SplitSide `json:"split_brain,omitempty"`
	Snapshots  []Snapshot  `json:"snapshots,omitempty"`
	Created    time.Time   `json:"created"`
	// Detail explains a state other than UpToDate in words.
	Detail string `json:"detail,omitempty"`
}

// VolumeSpec is a request for a new volume. Group 0 means the first group
// with room.
type VolumeSpec struct {
	Name      string `json:"name"`
	SizeBytes int64  `json:"size_bytes"`
	Group     int    `json:"group,omitempty"`
}

// MaxVolumes is the most volumes (VM volumes and VCDs) a unit holds.
const MaxVolumes = 62

// FormatBytes prints n in binary units: "64 MiB", "1.5 GiB", "512 B".
func FormatBytes(n int64) string {
	const units = "KMGTPE"
	if n < 1024 && n > -1024 {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n)/1024, 0
	for (f >= 1024 || f <= -1024) && i < len(units)-1 {
		f /= 1024
		i++
	}
	s := strconv.FormatFloat(f, 'f', 1, 64)
	s = strings.TrimSuffix(s, ".0")
	return s + " " + units[i:i+1] + "iB"
}

// StateText is the volume's state with its resync progress, e.g.
// "Syncing 42% (ETA 12s)", as the console and dyadctl show it. The percent
// is rounded down so that a running resync never shows 100%.
func (v Volume) StateText() string {
	st := string(v.State)
	if st == "" {
		st = "unknown"
	}
	if v.State != SyncSyncing || v.Sync == nil {
		return st
	}
	p := math.Floor(v.Sync.Percent)
	if math.IsNaN(p) || p < 0 {
		p = 0
	}
	st += fmt.Sprintf(" %d%%", int(min(p, 99)))
	if v.Sync.ETASeconds > 0 {
		st += " (ETA " + FormatUptime(float64(v.Sync.ETASeconds)) + ")"
	}
	return st
}
