package unit

import "time"

// VM is a virtual machine as the API shows it: its provisioning, where it
// runs and its state with the commands that state allows (DESIGN.md §4).
type VM struct {
	ID   int    `json:"id"`
	UUID string `json:"uuid"`
	Name string `json:"name"`
	// State is one of the VM states of DESIGN.md §4 (vm.State values):
	// Busy, Stopped, Booting, Running, Alert, Stopping, Crashed, Critical,
	// Dumping.
	State string `json:"state"`
	// Activity says in words what the VM is doing, e.g. "running on PM 2",
	// "restarting after a crash (2 of 3 within 1h0m0s)", "migrating to PM 1".
	Activity string `json:"activity,omitempty"`
	// Allowed are the commands the state allows, as named in the console
	// ("Start", "Shutdown", "Power Off", ...).
	Allowed []string `json:"allowed"`
	// Node is the PM that runs the VM, or that will run it when it starts;
	// 0 when none is chosen.
	Node        int   `json:"node"`
	VCPUs       int   `json:"vcpus"`
	MemoryBytes int64 `json:"memory_bytes"`
	// Boot is the boot source: "disk" (the boot volume), "cd" (the VCD,
	// once) or "test-guest" (direct kernel boot of the image's tiny test
	// guest, for the lab and the tests).
	Boot    string     `json:"boot"`
	CD      string     `json:"cd,omitempty"`
	Volumes []VMVolume `json:"volumes"`
	NICs    []VMNIC    `json:"nics,omitempty"`
	// Crashes are the crashes within the MTBF window; Critical is set once
	// they reached the threshold, until Reset Device.
	Crashes  int  `json:"crashes"`
	Critical bool `json:"critical,omitempty"`
	// Placement is the HA load-balancing policy; Home the PM the VM
	// belongs on and returns to.
	Placement Placement `json:"placement"`
	Home      int       `json:"home,omitempty"`
	// Starts counts the operator's starts (Start, Boot From CD, Reset
	// Device); restarts after a crash do not count.
	Starts int `json:"starts"`
	// Started is when the QEMU process running the VM was started on its
	// PM (a live migration starts a new one).
	Started   time.Time    `json:"started,omitzero"`
	Migration *VMMigration `json:"migration,omitempty"`
	Warnings  []string     `json:"warnings,omitempty"`
}

// VMVolume is a volume attached to a VM.
type VMVolume struct {
	VolumeID  int    `json:"volume_id"`
	Name      string `json:"name"`
	SizeBytes int64  `json:"size_bytes"`
	Boot      bool   `json:"boot,omitempty"`
	// State is the volume's state (Volume.State).
	State string `json:"state,omitempty"`
}

// VMNIC is a VM's network interface on a shared network.
type VMNIC struct {
	Network string `json:"network"`
	MAC     string `json:"mac"`
}

// VMMigration is the last or current live migration of a VM.
type VMMigration struct {
	From int `json:"from"`
	To   int `json:"to"`
	// Status: "preparing", "migrating", "completed", "failed".
	Status     string    `json:"status"`
	Started    time.Time `json:"started,omitzero"`
	Finished   time.Time `json:"finished,omitzero"`
	TotalMs    int64     `json:"total_ms,omitempty"`
	DowntimeMs int64     `json:"downtime_ms,omitempty"`
	Error      string    `json:"error,omitempty"`
}

// VMCreate is the body of POST /api/v1/vms.
type VMCreate struct {
	Name      string `json:"name"`
	VCPUs     int    `json:"vcpus"`
	MemoryMiB int64  `json:"memory_mib"`
	// Is64Bit raises the memory minimum to 600 MiB.
	Is64Bit bool `json:"is_64bit,omitempty"`
	// Volumes: exactly one has Boot. Each is a new volume (Name, SizeMiB,
	// optional Group) or an existing unattached one (Existing > 0).
	Volumes []VMVolumeRequest `json:"volumes"`
	NICs    []VMNICRequest    `json:"nics,omitempty"`
	// Boot: "disk" (default), "cd" or "test-guest".
	Boot string `json:"boot,omitempty"`
	// CD is the VCD (an ISO path on the data partition) for Boot "cd".
	CD string `json:"cd,omitempty"`
	// Start starts the VM once its volumes are ready.
	Start bool `json:"start,omitempty"`
	// Placement is the HA load-balancing policy; nil is automatic.
	Placement *Placement `json:"placement,omitempty"`
}

// VMVolumeRequest names a volume for a VM: new or existing.
type VMVolumeRequest struct {
	Name     string `json:"name,omitempty"`
	SizeMiB  int64  `json:"size_mib,omitempty"`
	Group    int    `json:"group,omitempty"`
	Existing int    `json:"existing,omitempty"`
	Boot     bool   `json:"boot,omitempty"`
}

// VMNICRequest attaches a VM to a shared network; MAC "" derives the
// unit-unique address.
type VMNICRequest struct {
	Network string `json:"network"`
	MAC     string `json:"mac,omitempty"`
}

// VMConfig is the body of POST /api/v1/vms/{id}/config: re-provisioning of
// a stopped VM. Nil or empty fields keep what the VM has.
type VMConfig struct {
	VCPUs     *int   `json:"vcpus,omitempty"`
	MemoryMiB *int64 `json:"memory_mib,omitempty"`
	// AddVolumes attaches new or existing volumes (never a second boot
	// volume).
	AddVolumes []VMVolumeRequest `json:"add_volumes,omitempty"`
	// Detach detaches volumes (kept in the unit); Delete detaches and
	// deletes them. The boot volume can be neither.
	Detach []int `json:"detach,omitempty"`
	Delete []int `json:"delete,omitempty"`
	// NICs replaces the VM's network interfaces when not nil.
	NICs *[]VMNICRequest `json:"nics,omitempty"`
	// Placement changes the HA load-balancing policy when not nil.
	Placement *Placement `json:"placement,omitempty"`
}

// VMAction is the body of POST /api/v1/vms/{id}/actions/{action}; every
// field is optional.
type VMAction struct {
	// TimeoutSeconds bounds Shutdown (default 120): past it the VM is
	// reported as not shut down and keeps running.
	TimeoutSeconds int `json:"timeout_seconds,omitempty"`
	// To is the PM a Migrate goes to (0: the other PM).
	To int `json:"to,omitempty"`
	// CD is the VCD for Boot From CD.
	CD string `json:"cd,omitempty"`
}
