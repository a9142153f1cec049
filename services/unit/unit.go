// Package unit holds the unit's data model as the API shows it: the unit, its
// PMs, heartbeat paths and alerts. The names of states are those of the Avance
// manual (shared/DESIGN.md §4) so operators and scripts keep their vocabulary.
package unit

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// PMState is the state of a physical machine.
type PMState string

// PM states of DESIGN.md §4.
const (
	PMRunning        PMState = "running"
	PMBooting        PMState = "booting"
	PMEvacuating     PMState = "evacuating"
	PMImaging        PMState = "imaging"
	PMBroken         PMState = "broken"
	PMOff            PMState = "off"
	PMPoweredOff     PMState = "powered off"
	PMMaintenance    PMState = "running (in Maintenance)"
	PMOffMaintenance PMState = "off (in Maintenance)"
)

// Role is a PM's role in the unit.
type Role string

// Roles. A PM that has not decided yet (booting, peer not heard) is RoleNone.
const (
	RolePrimary   Role = "primary"
	RoleSecondary Role = "secondary"
	RoleNone      Role = "none"
)

// Heartbeat path names. Sync links are named sync0, sync1, ...
const (
	PathPriv0 = "priv0"
	PathIbiz0 = "ibiz0"
)

// Path is the state of one heartbeat path to the peer as seen by one PM.
type Path struct {
	Name string `json:"name"`
	Up   bool   `json:"up"`
	// LastSeen is when the last valid heartbeat arrived on this path.
	LastSeen time.Time `json:"last_seen,omitzero"`
}

// PM is one physical machine as the API shows it.
type PM struct {
	ID       int     `json:"id"` // 1 or 2
	Name     string  `json:"name"`
	State    PMState `json:"state"`
	Activity string  `json:"activity,omitempty"`
	Role     Role    `json:"role"`
	// Paths are the heartbeat paths to the peer as this PM sees them.
	Paths         []Path    `json:"paths"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	BootID        string    `json:"boot_id,omitempty"`
	ImageVersion  string    `json:"image_version"`
	Addresses     []string  `json:"addresses,omitempty"`
	LastSeen      time.Time `json:"last_seen,omitzero"`
	// DatabaseSeq is the last change of the unit database this PM holds;
	// equal on both PMs when the secondary is in step with the primary.
	DatabaseSeq uint64 `json:"database_seq"`
	// Links are the PM's network links (ports, bonds, bridges) as its kernel
	// sees them.
	Links []Link `json:"links,omitempty"`
	// Hardware is the inventory of hwcompat; only GET /api/v1/pms/{id} fills it.
	Hardware any `json:"hardware,omitempty"`
	// Maintenance: an operator's Work On holds the PM out of service until
	// Finalize; no VM runs on it.
	Maintenance bool `json:"maintenance,omitempty"`
	// Failures are the PM's failures within the last hour; at the third
	// it is powered off and kept out of service until Reset Device.
	Failures int `json:"failures,omitempty"`
	// Allowed are the PM commands its state allows (PMCommands names).
	Allowed []string `json:"allowed,omitempty"`
	// BMC is the PM's BMC without its password; nil when none.
	BMC *BMC `json:"bmc,omitempty"`
}

// StateText is the PM's state with its Maintenance, as consoles show it:
// the agent names Maintenance in the states of a PM that runs or is off,
// not in those of one that evacuates its VMs.
func (pm PM) StateText() string {
	st := string(pm.State)
	if pm.Maintenance && !strings.Contains(st, "Maintenance") {
		st += " (in Maintenance)"
	}
	return st
}

// Link is a network link of a PM.
type Link struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"` // "port", "bond", "bridge"
	Up      bool   `json:"up"`
	Carrier bool   `json:"carrier"`
	// SpeedMbps is 0 when unknown (down, or a virtual link).
	SpeedMbps int    `json:"speed_mbps"`
	MTU       int    `json:"mtu"`
	Master    string `json:"master,omitempty"`
	// Members are the ports of a bond or bridge; ActiveMember is the bond's
	// active port in active-backup mode.
	Members      []string `json:"members,omitempty"`
	ActiveMember string   `json:"active_member,omitempty"`
}

// Network is a shared network: a business port on each PM in one L2 domain.
// VMs attach to shared networks.
type Network struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
	// Ports are the network's port on each PM; one entry when the peer PM
	// has none.
	Ports []NetworkPort `json:"ports"`
	// Problem is empty for a healthy network, else what an operator must
	// fix (no peer port, a speed mismatch, ...).
	Problem string `json:"problem,omitempty"`
}

// NetworkPort is a PM's port in a shared network, with its live state.
type NetworkPort struct {
	PM        int    `json:"pm"`
	Port      string `json:"port"`
	Up        bool   `json:"up"`
	Carrier   bool   `json:"carrier"`
	SpeedMbps int    `json:"speed_mbps"`
}

// Unit is the whole appliance.
type Unit struct {
	Name         string `json:"name"`
	ManagementIP string `json:"management_ip"`
	Primary      int    `json:"primary"` // PM id of the primary
	Epoch        uint64 `json:"epoch"`
	ImageVersion string `json:"image_version"`
	// ReplicationPath is the heartbeat path that replication and migration
	// traffic uses now: a sync link, else priv0, else ibiz0 ("" when the
	// peer is not heard).
	ReplicationPath string    `json:"replication_path"`
	PMs             []PM      `json:"pms"`
	Alerts          []Alert   `json:"alerts"`
	Time            time.Time `json:"time"`
	// Quorum is the split-brain protection as the primary sees it.
	Quorum Quorum `json:"quorum"`
	// Operation is a unit command in progress, in words ("rolling reboot:
	// rebooting pm2 (1 of 2)"); empty when none.
	Operation string `json:"operation,omitempty"`
}

// Quorum is what protects the unit from a split brain: the quorum servers
// and the primary's right to run VMs when it cannot hear its peer.
type Quorum struct {
	// Servers are the quorum servers, preferred first; empty without.
	Servers []string `json:"servers"`
	// Verdict is "run", "wait" (starts no protected VM) or "lose".
	Verdict string `json:"verdict"`
	Reason  string `json:"reason"`
	// Holder is the PM holding the quorum lease (0: none or unknown).
	Holder int `json:"holder,omitempty"`
	// LeaseSeconds is how long this PM's lease still runs.
	LeaseSeconds float64 `json:"lease_seconds,omitempty"`
	// Forced: an operator used Force Quorum.
	Forced bool `json:"forced,omitempty"`
	// PeerCutOff: the peer is not heard on any link, but the quorum server
	// hears it: a partition, not a dead PM.
	PeerCutOff bool   `json:"peer_cut_off,omitempty"`
	Error      string `json:"error,omitempty"`
}

// VerdictText is the verdict for people, marking one an operator forced: a
// forced "run" is no proof that the peer is down.
func (q Quorum) VerdictText() string {
	v := q.Verdict
	if v == "" {
		v = "unknown"
	}
	if q.Forced {
		v += " (forced)"
	}
	return v
}

// HolderText is the PM holding the quorum lease and, for the answering
// PM's lease, how long it still runs.
func (q Quorum) HolderText() string {
	if q.Holder == 0 {
		return "none"
	}
	h := fmt.Sprintf("PM %d", q.Holder)
	if q.LeaseSeconds > 0 {
		h += " (" + FormatUptime(q.LeaseSeconds) + " left)"
	}
	return h
}

// Severity of an alert.
type Severity string

// Alert severities.
const (
	SevInfo     Severity = "info"
	SevWarning  Severity = "warning"
	SevCritical Severity = "critical"
)

// Alert is a condition an operator must see. It is active while its condition
// holds; its ID is stable for the same condition so clients can track it.
type Alert struct {
	ID       string    `json:"id"`
	Severity Severity  `json:"severity"`
	Source   string    `json:"source"` // "pm1", "unit", ...
	Message  string    `json:"message"`
	Since    time.Time `json:"since"`
}

// FormatUptime renders seconds as the two largest units ("3d 4h", "5m 12s"),
// as the console and dyadctl show it; "-" for a value that is not a duration.
func FormatUptime(seconds float64) string {
	if math.IsNaN(seconds) || seconds < 0 || seconds > math.MaxInt64/2 {
		return "-"
	}
	s := int64(seconds)
	d, h, m := s/86400, s/3600%24, s/60%60
	s %= 60
	switch {
	case d > 0:
		return fmt.Sprintf("%dd %dh", d, h)
	case h > 0:
		return fmt.Sprintf("%dh %dm", h, m)
	case m > 0:
		return fmt.Sprintf("%dm %ds", m, s)
	default:
		return fmt.Sprintf("%ds", s)
	}
}

// PrimaryName names the primary PM for people: "pm1 (PM 1)", or "none".
func (u Unit) PrimaryName() string {
	if u.Primary == 0 {
		return "none"
	}
	for _, pm := range u.PMs {
		if pm.ID == u.Primary && pm.Name != "" {
			return fmt.Sprintf("%s (PM %d)", pm.Name, pm.ID)
		}
	}
	return fmt.Sprintf("PM %d", u.Primary)
}

// Formed reports why pms are not a fully formed unit: two PMs running,
// exactly one primary, and every heartbeat path (priv0 and ibiz0 at least)
// up as each PM sees it; nil when they are.
func Formed(pms []PM) error {
	if len(pms) != 2 {
		return fmt.Errorf("%d PMs", len(pms))
	}
	primaries := 0
	for _, pm := range pms {
		if pm.State != PMRunning {
			return fmt.Errorf("%s is %s", pm.Name, pm.State)
		}
		if pm.Role == RolePrimary {
			primaries++
		}
		seen := map[string]bool{}
		for _, p := range pm.Paths {
			if !p.Up {
				return fmt.Errorf("%s sees heartbeat path %s down", pm.Name, p.Name)
			}
			seen[p.Name] = true
		}
		for _, name := range []string{PathPriv0, PathIbiz0} {
			if !seen[name] {
				return fmt.Errorf("%s reports no heartbeat path %s", pm.Name, name)
			}
		}
	}
	if primaries != 1 {
		return fmt.Errorf("%d primaries", primaries)
	}
	return nil
}
