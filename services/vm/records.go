package vm

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/dyad-ha/dyad/services/store"
)

// BucketVMs holds one Record per VM, keyed by its id.
const BucketVMs = "vms"

// Boot sources.
const (
	BootDisk      = "disk"
	BootCD        = "cd"
	BootTestGuest = "test-guest"
)

// Record is a VM as the unit database keeps it: what the operator
// provisioned and asked for. Where it runs and what its QEMU does are
// reported by the PMs; Summarize joins the two.
type Record struct {
	ID          int         `json:"id"`
	UUID        string      `json:"uuid"`
	Name        string      `json:"name"`
	Created     time.Time   `json:"created"`
	VCPUs       int         `json:"vcpus"`
	MemoryBytes int64       `json:"memory_bytes"`
	Is64Bit     bool        `json:"is_64bit,omitempty"`
	Volumes     []VolumeRef `json:"volumes"`
	NICs        []NICRecord `json:"nics,omitempty"`
	Boot        string      `json:"boot"`
	CD          string      `json:"cd,omitempty"`

	// Node is the PM that runs the VM (or will when it starts).
	Node int `json:"node"`
	// Run is the operator's wish that the VM runs.
	Run bool `json:"run"`
	// StartSeq counts the operator's starts (Start, Boot From CD, Reset
	// Device). A PM whose guest shut itself down does not start it again
	// until StartSeq moves on.
	StartSeq int `json:"start_seq"`
	// StartCD boots the start StartSeq from the CD.
	StartCD bool `json:"start_cd,omitempty"`
	// ShutdownSeq counts Shutdown commands; ShutdownTimeout bounds the last.
	ShutdownSeq     int           `json:"shutdown_seq,omitempty"`
	ShutdownTimeout time.Duration `json:"shutdown_timeout,omitempty"`
	// DumpSeq counts Dump commands.
	DumpSeq int `json:"dump_seq,omitempty"`
	// Crashes are the crash times within the MTBF window.
	Crashes  []time.Time `json:"crashes,omitempty"`
	Critical bool        `json:"critical,omitempty"`
	// Migration is the current or last live migration.
	Migration *Migration `json:"migration,omitempty"`
	// Placement is the operator's HA load-balancing policy; Home is the PM
	// the VM belongs on, where it returns once that PM is back in service
	// and its volumes are in sync.
	Placement Placement `json:"placement,omitzero"`
	Home      int       `json:"home,omitempty"`
	// Resume: a unit Shutdown stopped the VM; it starts again once both
	// PMs are back.
	Resume bool `json:"resume,omitempty"`
}

// Placement is a VM's HA load-balancing policy (unit.PlaceAuto,
// PlaceManual, PlaceMixed) and the operator's PM for manual and mixed.
type Placement struct {
	Policy string `json:"policy,omitempty"`
	PM     int    `json:"pm,omitempty"`
}

// VolumeRef attaches a unit volume to a VM.
type VolumeRef struct {
	ID   int  `json:"id"`
	Boot bool `json:"boot,omitempty"`
}

// NICRecord is a VM's interface on a shared network; MAC is always set
// (derived or the operator's).
type NICRecord struct {
	Network string `json:"network"`
	MAC     string `json:"mac"`
}

// Migration states.
const (
	MigrationPreparing = "preparing"
	MigrationRunning   = "migrating"
	MigrationCompleted = "completed"
	MigrationFailed    = "failed"
)

// Migration is a live migration of a VM between the PMs.
type Migration struct {
	From       int       `json:"from"`
	To         int       `json:"to"`
	Status     string    `json:"status"`
	Started    time.Time `json:"started"`
	Finished   time.Time `json:"finished,omitzero"`
	TotalMs    int64     `json:"total_ms,omitempty"`
	DowntimeMs int64     `json:"downtime_ms,omitempty"`
	Error      string    `json:"error,omitempty"`
}

// Active reports whether the migration is under way: both PMs hold the
// VM's volumes writable and the target may run an incoming QEMU.
func (m *Migration) Active() bool {
	return m != nil && (m.Status == MigrationPreparing || m.Status == MigrationRunning)
}

// BootVolume is the id of the VM's boot volume, 0 if none.
func (r Record) BootVolume() int {
	for _, v := range r.Volumes {
		if v.Boot {
			return v.ID
		}
	}
	return 0
}

// Uses reports whether the VM has volume id.
func (r Record) Uses(volume int) bool {
	return slices.ContainsFunc(r.Volumes, func(v VolumeRef) bool { return v.ID == volume })
}

// Load reads every VM record, in id order.
func Load(r store.Reader) ([]Record, error) {
	var out []Record
	err := r.ForEach(BucketVMs, func(k string, v []byte) error {
		var rec Record
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("VM record %s: %w", k, err)
		}
		out = append(out, rec)
		return nil
	})
	slices.SortFunc(out, func(a, b Record) int { return a.ID - b.ID })
	return out, err
}

// Put writes rec.
func Put(w store.Writer, rec Record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return w.Put(BucketVMs, strconv.Itoa(rec.ID), b)
}

// Delete removes the record of VM id.
func Delete(w store.Writer, id int) error {
	return w.Delete(BucketVMs, strconv.Itoa(id))
}

var cdName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,126}\.iso$`)

// CheckCD checks the name of a VCD: an ISO image in the PMs' VCD folder,
// named without a path.
func CheckCD(name string) error {
	if !cdName.MatchString(name) {
		return fmt.Errorf("CD image %q: name an .iso file of the VCD folder (letters, digits, '.', '_', '-'; no path)", name)
	}
	return nil
}
