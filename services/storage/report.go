package storage

import (
	"time"

	"github.com/dyad-ha/dyad/services/unit"
)

// Report is what one PM's kernel holds of the unit's storage, sent to the
// primary, which joins both PMs' reports into the API's view.
type Report struct {
	Node   int          `json:"node"`
	At     time.Time    `json:"at"`
	Disks  []unit.Disk  `json:"disks"`
	Groups []GroupState `json:"groups"`
	Legs   []LegState   `json:"legs"`
	// Problems are what this PM could not do in its last round, in words.
	Problems []string `json:"problems,omitempty"`
}

// GroupState is a storage group's volume group on one PM.
type GroupState struct {
	ID        int      `json:"id"`
	SizeBytes int64    `json:"size_bytes"`
	FreeBytes int64    `json:"free_bytes"`
	PVs       []string `json:"pvs"`
	// Missing is true when a physical volume of the group is gone.
	Missing bool `json:"missing,omitempty"`
}

// Generations are a leg's DRBD data generation identifiers.
type Generations struct {
	Current uint64    `json:"current"`
	Bitmap  uint64    `json:"bitmap"`
	History [2]uint64 `json:"history"`
	Read    bool      `json:"read"`
}

// LegState is one PM's leg of a volume.
type LegState struct {
	Volume int `json:"volume"`
	Minor  int `json:"minor"`
	// LV is true when the logical volume exists; SizeBytes is its size.
	LV        bool     `json:"lv"`
	SizeBytes int64    `json:"size_bytes,omitempty"`
	Disks     []string `json:"disks,omitempty"`
	// Configured is true when the DRBD minor is set up in the kernel.
	Configured bool               `json:"configured"`
	Role       string             `json:"role,omitempty"`
	PeerRole   string             `json:"peer_role,omitempty"`
	Disk       string             `json:"disk,omitempty"`
	PeerDisk   string             `json:"peer_disk,omitempty"`
	Connection string             `json:"connection,omitempty"`
	Gen        Generations        `json:"gen"`
	Sync       *unit.SyncProgress `json:"sync,omitempty"`
	// SentKiB and ReceivedKiB are the DRBD network counters since the minor
	// was set up; OutOfSyncKiB is what the bitmap marks as differing.
	SentKiB      int64 `json:"sent_kib"`
	ReceivedKiB  int64 `json:"received_kib"`
	OutOfSyncKiB int64 `json:"out_of_sync_kib"`
	// LastPrimary is when this PM last held the volume Primary.
	LastPrimary time.Time `json:"last_primary,omitzero"`
	// SplitBrain is set when DRBD reported a split brain on this leg and
	// no resolution has reconnected it since.
	SplitBrain bool `json:"split_brain,omitempty"`
	// Failed is set when the leg's disk failed and DRBD detached it.
	Failed bool `json:"failed,omitempty"`
	// Stale is set when the leg is not known to hold the newest data even
	// though DRBD calls it UpToDate (see Node's promotion rule).
	Stale bool `json:"stale,omitempty"`
	// Forced is set once this PM made its leg the source of the first sync.
	Forced    bool            `json:"forced,omitempty"`
	Snapshots []unit.Snapshot `json:"snapshots,omitempty"`
	Error     string          `json:"error,omitempty"`
}

// Leg returns the report's leg of volume id.
func (r *Report) Leg(id int) (LegState, bool) {
	if r == nil {
		return LegState{}, false
	}
	for _, l := range r.Legs {
		if l.Volume == id {
			return l, true
		}
	}
	return LegState{}, false
}
