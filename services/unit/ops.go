package unit

import "time"

// PM commands of DESIGN.md §4, as the API names them in
// POST /api/v1/pms/{id}/actions/{command}.
const (
	PMWorkOn      = "work-on"
	PMFinalize    = "finalize"
	PMShutdown    = "shutdown"
	PMPowerOff    = "power-off"
	PMPowerOn     = "power-on"
	PMResetDevice = "reset-device"
)

// PMCommands are the PM commands in the order the console shows them.
func PMCommands() []string {
	return []string{PMWorkOn, PMFinalize, PMShutdown, PMPowerOff, PMPowerOn, PMResetDevice}
}

// Unit commands, POST /api/v1/unit/actions/{command}.
const (
	UnitShutdown      = "shutdown"
	UnitRollingReboot = "rolling-reboot"
)

// PMAction is the body of a PM command; every field is optional.
type PMAction struct {
	// Confirm: Work On may shut down the VMs that cannot move to the peer.
	// Without it such a Work On is refused (409) with the VMs named.
	Confirm bool `json:"confirm,omitempty"`
}

// UnitAction is the body of a unit command; every field is optional.
type UnitAction struct {
	// TimeoutSeconds bounds each VM's shutdown in a unit Shutdown (default
	// 120): past it the VM is powered off.
	TimeoutSeconds int `json:"timeout_seconds,omitempty"`
}

// BMC is a PM's baseboard management controller (IPMI over LAN), through
// which the unit powers the PM on and off. The password is write-only.
type BMC struct {
	Addr     string `json:"addr"`
	User     string `json:"user"`
	Password string `json:"password,omitempty"`
}

// Placement policies of a VM (HA load balancing).
const (
	// PlaceAuto: the unit chooses the VM's PM to spread vCPUs and memory.
	PlaceAuto = "auto"
	// PlaceManual: the VM is pinned to its PM.
	PlaceManual = "manual"
	// PlaceMixed: the operator's PM is preferred, the unit may choose
	// another when that PM cannot hold it.
	PlaceMixed = "mixed"
)

// Placement is where a VM belongs.
type Placement struct {
	Policy string `json:"policy"`
	// PM is the operator's PM for manual and mixed; 0 for auto.
	PM int `json:"pm,omitempty"`
}

// AuditRecord is one operation of an operator: who, what and the result.
type AuditRecord struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	User   string    `json:"user"`
	Remote string    `json:"remote,omitempty"`
	// Action is the method and path, e.g. "POST /api/v1/pms/1/actions/work-on".
	Action string `json:"action"`
	// Status is the HTTP status of the answer; Result says it in words
	// ("ok", or the error message).
	Status int    `json:"status"`
	Result string `json:"result"`
}
