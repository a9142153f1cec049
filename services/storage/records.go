// Package storage mirrors VM disks between the two PMs: storage groups (an
// LVM volume group on each PM), volumes (a logical volume on each PM joined by
// a DRBD 8.4 resource, protocol C) and the reconciler that brings each PM's
// kernel to what the unit database wants.
//
// The unit database holds the desired set (records); each PM reports what
// its kernel has (Report); the primary joins both reports into the API's
// view (Summarize). Nothing here decides which PM is primary: the caller
// says which volumes this PM should hold writable.
package storage

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/dyad-ha/dyad/services/store"
	"github.com/dyad-ha/dyad/services/unit"
)

// Buckets of the unit database.
const (
	BucketGroups  = "storage_groups"
	BucketVolumes = "volumes"
)

// DiskRef names a disk of a PM in a storage group. The serial identifies it
// across reboots (kernel names follow probe order); the name is the fallback
// for disks without one.
type DiskRef struct {
	Name   string `json:"name"`
	Serial string `json:"serial,omitempty"`
	// Erase is the operator's consent to erase a foreign disk when it joins.
	Erase bool `json:"erase,omitempty"`
}

// GroupRecord is a storage group as the unit database keeps it.
type GroupRecord struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
	// Disks maps a node to its disks in the group.
	Disks   map[int][]DiskRef `json:"disks"`
	Created time.Time         `json:"created"`
}

// VG is the LVM volume group of the group, the same name on both PMs.
func (g GroupRecord) VG() string { return VGName(g.ID) }

// VGName is the volume group of storage group id.
func VGName(id int) string { return "dyad_sg" + strconv.Itoa(id) }

// Resolve is the operator's choice of the side of a split brain to keep.
type Resolve struct {
	Survivor int       `json:"survivor"`
	At       time.Time `json:"at"`
}

// SnapshotName is the snapshot that keeps the losing side of the split brain
// resolved at r.At.
func (r Resolve) SnapshotName(vol int) string {
	return fmt.Sprintf("%s_sb%d", LVName(vol), r.At.Unix())
}

// VolumeRecord is a volume as the unit database keeps it.
type VolumeRecord struct {
	ID        int       `json:"id"`
	Name      string    `json:"name"`
	Group     int       `json:"group"`
	Minor     int       `json:"minor"`
	SizeBytes int64     `json:"size_bytes"`
	Created   time.Time `json:"created"`
	// Initialized is set once a leg was made the sync source of the first
	// full sync. Before that the legs hold whatever their disks held, and
	// one of them may be forced to Primary; never after.
	Initialized bool `json:"initialized,omitempty"`
	// Deleted marks a volume whose legs are being removed; the record goes
	// when no PM reports a leg.
	Deleted bool     `json:"deleted,omitempty"`
	Resolve *Resolve `json:"resolve,omitempty"`
	// DropSnapshots are snapshots the operator deleted; each PM removes
	// them and the primary forgets the names when no PM reports them.
	DropSnapshots []string `json:"drop_snapshots,omitempty"`
}

// LVName is the logical volume of volume id.
func LVName(id int) string { return "vol" + strconv.Itoa(id) }

// ResourceName is the DRBD resource of volume id.
func ResourceName(id int) string { return "r" + strconv.Itoa(id) }

// Port is the TCP port of the DRBD resource on minor.
func Port(minor int) int { return 7800 + minor }

// Device is the DRBD device of minor.
func Device(minor int) string { return "/dev/drbd" + strconv.Itoa(minor) }

// Records is the desired storage of the unit.
type Records struct {
	Groups  []GroupRecord
	Volumes []VolumeRecord
}

// Group returns the group with id.
func (rs Records) Group(id int) (GroupRecord, bool) {
	i := slices.IndexFunc(rs.Groups, func(g GroupRecord) bool { return g.ID == id })
	if i < 0 {
		return GroupRecord{}, false
	}
	return rs.Groups[i], true
}

// Volume returns the volume with id.
func (rs Records) Volume(id int) (VolumeRecord, bool) {
	i := slices.IndexFunc(rs.Volumes, func(v VolumeRecord) bool { return v.ID == id })
	if i < 0 {
		return VolumeRecord{}, false
	}
	return rs.Volumes[i], true
}

// Load reads the storage records of the unit database, sorted by id.
func Load(r store.Reader) (Records, error) {
	var rs Records
	err := r.ForEach(BucketGroups, func(k string, v []byte) error {
		var g GroupRecord
		if err := json.Unmarshal(v, &g); err != nil {
			return fmt.Errorf("storage group %s: %w", k, err)
		}
		rs.Groups = append(rs.Groups, g)
		return nil
	})
	if err != nil {
		return rs, err
	}
	err = r.ForEach(BucketVolumes, func(k string, v []byte) error {
		var vol VolumeRecord
		if err := json.Unmarshal(v, &vol); err != nil {
			return fmt.Errorf("volume %s: %w", k, err)
		}
		rs.Volumes = append(rs.Volumes, vol)
		return nil
	})
	slices.SortFunc(rs.Groups, func(a, b GroupRecord) int { return a.ID - b.ID })
	slices.SortFunc(rs.Volumes, func(a, b VolumeRecord) int { return a.ID - b.ID })
	return rs, err
}

// PutGroup writes g.
func PutGroup(w store.Writer, g GroupRecord) error {
	b, err := json.Marshal(g)
	if err != nil {
		return err
	}
	return w.Put(BucketGroups, strconv.Itoa(g.ID), b)
}

// PutVolume writes v.
func PutVolume(w store.Writer, v VolumeRecord) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return w.Put(BucketVolumes, strconv.Itoa(v.ID), b)
}

// DeleteVolume removes the record of volume id.
func DeleteVolume(w store.Writer, id int) error {
	return w.Delete(BucketVolumes, strconv.Itoa(id))
}

var volumeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Extent is the allocation unit: LVM's default extent size, so a volume's
// size is what both PMs can allocate exactly.
const Extent = 4 << 20

// MinVolumeBytes is the smallest volume.
const MinVolumeBytes = Extent

// NewVolume validates spec against the unit's records and the groups' free
// space, and returns the record to store. Errors name the problem for the
// operator; a refusal changes nothing.
func NewVolume(rs Records, spec unit.VolumeSpec, groups []unit.StorageGroup, now time.Time) (VolumeRecord, error) {
	if !volumeName.MatchString(spec.Name) {
		return VolumeRecord{}, fmt.Errorf("volume name %q: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", spec.Name)
	}
	if spec.SizeBytes < MinVolumeBytes {
		return VolumeRecord{}, fmt.Errorf("volume size %d bytes: the smallest volume is %d bytes (4 MiB)", spec.SizeBytes, int64(MinVolumeBytes))
	}
	if spec.SizeBytes > 1<<50 {
		return VolumeRecord{}, fmt.Errorf("volume size %d bytes is beyond any disk", spec.SizeBytes)
	}
	size := roundUp(spec.SizeBytes, Extent)
	live := 0
	minors := map[int]bool{}
	maxID := 0
	for _, v := range rs.Volumes {
		maxID = max(maxID, v.ID)
		minors[v.Minor] = true
		if !v.Deleted {
			live++
		}
		if v.Name == spec.Name && !v.Deleted {
			return VolumeRecord{}, fmt.Errorf("a volume named %q exists already (id %d)", spec.Name, v.ID)
		}
	}
	if len(rs.Volumes) >= unit.MaxVolumes {
		if live < unit.MaxVolumes {
			return VolumeRecord{}, fmt.Errorf("the unit holds %d volumes, %d of them still being deleted; the most is %d", len(rs.Volumes), len(rs.Volumes)-live, unit.MaxVolumes)
		}
		return VolumeRecord{}, fmt.Errorf("the unit holds %d volumes, the most it can", unit.MaxVolumes)
	}
	minor := 0
	for minors[minor] {
		minor++
	}
	var g *unit.StorageGroup
	for i := range groups {
		if spec.Group == 0 && groups[i].FreeBytes >= lvSize(size) || groups[i].ID == spec.Group {
			g = &groups[i]
			break
		}
	}
	switch {
	case g == nil && spec.Group != 0:
		return VolumeRecord{}, fmt.Errorf("no storage group %d", spec.Group)
	case g == nil && len(groups) == 0:
		return VolumeRecord{}, fmt.Errorf("the unit has no storage group yet: activate disks on both PMs first")
	case g == nil:
		return VolumeRecord{}, fmt.Errorf("no storage group has %s free on both PMs", unit.FormatBytes(lvSize(size)))
	case g.FreeBytes < lvSize(size):
		return VolumeRecord{}, fmt.Errorf("storage group %s has %s free on both PMs; the volume needs %s (with its mirror metadata)",
			g.Name, unit.FormatBytes(g.FreeBytes), unit.FormatBytes(lvSize(size)))
	}
	return VolumeRecord{ID: maxID + 1, Name: spec.Name, Group: g.ID, Minor: minor, SizeBytes: size, Created: now.UTC()}, nil
}

// GrowVolume validates growing v to size bytes.
func GrowVolume(v VolumeRecord, size int64, groups []unit.StorageGroup) (VolumeRecord, error) {
	if v.Deleted {
		return v, fmt.Errorf("volume %s is being deleted", v.Name)
	}
	if size > 1<<50 {
		return v, fmt.Errorf("volume size %d bytes is beyond any disk", size)
	}
	size = roundUp(size, Extent)
	if size <= v.SizeBytes {
		return v, fmt.Errorf("volume %s is %s; a volume only grows (asked for %s)", v.Name, unit.FormatBytes(v.SizeBytes), unit.FormatBytes(size))
	}
	i := slices.IndexFunc(groups, func(g unit.StorageGroup) bool { return g.ID == v.Group })
	if i < 0 {
		return v, fmt.Errorf("storage group %d of volume %s is not available", v.Group, v.Name)
	}
	if need := lvSize(size) - lvSize(v.SizeBytes); groups[i].FreeBytes < need {
		return v, fmt.Errorf("storage group %s has %s free on both PMs; growing needs %s", groups[i].Name,
			unit.FormatBytes(groups[i].FreeBytes), unit.FormatBytes(need))
	}
	v.SizeBytes = size
	return v, nil
}

// lvSize is the logical volume that holds a volume of size bytes and its
// internal DRBD metadata (a bitmap bit per 4 KiB, the activity log and the
// superblock), in whole extents.
func lvSize(size int64) int64 {
	bitmap := roundUp(size/4096/8, 4096)
	return roundUp(size+bitmap+(1<<20), Extent)
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }
