package vm

import (
	"bytes"
	"fmt"
	"net"
	"slices"
	"strings"
)

// Sizes used by the resource rules.
const (
	MiB = int64(1) << 20
	GiB = int64(1) << 30
)

// Resource limits of DESIGN.md §4.
const (
	MaxVCPUs              = 8       // per VM
	ReservedVCPUs         = 2       // per PM, for the system
	DefaultReservedMemory = 1 * GiB // per PM, for the system
	MinMemory             = 256 * MiB
	MinMemory64           = 600 * MiB // for 64-bit guests
	MaxVolumes            = 62        // per unit, VM volumes and VCDs together
)

// Volume is a disk of a VM as its specification names it.
type Volume struct {
	Name      string `json:"name"`
	SizeBytes int64  `json:"size_bytes"`
	// Boot marks the volume the VM boots from; a VM has exactly one.
	Boot bool `json:"boot,omitempty"`
}

// NIC attaches a VM to a shared network.
type NIC struct {
	Network string `json:"network"`
	// MAC is the operator's override; nil means the address derived by
	// MAC from the unit key and the VM's id.
	MAC net.HardwareAddr `json:"mac,omitempty"`
}

// Spec is what an operator provisions: the VM as created or reconfigured.
type Spec struct {
	Name        string `json:"name"`
	VCPUs       int    `json:"vcpus"`
	MemoryBytes int64  `json:"memory_bytes"`
	// Is64Bit raises the memory minimum: 64-bit guests do not install in
	// less than MinMemory64.
	Is64Bit bool     `json:"is_64bit"`
	Volumes []Volume `json:"volumes"`
	NICs    []NIC    `json:"nics,omitempty"`
}

// Host is what the resource rules need to know of a PM.
type Host struct {
	MemoryBytes int64 `json:"memory_bytes"`
	CPUs        int   `json:"cpus"`
}

// Unit is the rest of the unit a Spec must fit into.
type Unit struct {
	// PMs are the unit's PMs (one while the second is not joined yet).
	// Every VM must be able to run on either PM, so the smaller one sets
	// the limits.
	PMs []Host
	// VMs are the unit's other VMs: all of them, running or not, and
	// without the one being validated when it is reconfigured. Memory is
	// reserved when a VM is provisioned, not when it starts, so that every
	// VM can start, fail over and come back at any time.
	VMs []Spec
	// VCDs is the number of virtual CDs stored on the unit; they count
	// towards MaxVolumes.
	VCDs int
	// Networks are the names of the unit's shared networks.
	Networks []string
	// ReservedMemory is what each PM keeps for the system; 0 means
	// DefaultReservedMemory.
	ReservedMemory int64
}

// Problem is one broken rule, in words for the operator.
type Problem struct {
	// Field is the part of the specification at fault: "name", "vcpus",
	// "memory", "volumes", "nics".
	Field   string `json:"field"`
	Message string `json:"message"`
}

// ResourceError lists every rule a specification breaks, so the operator
// can fix them all at once rather than one refusal at a time.
type ResourceError struct {
	Problems []Problem
}

func (e *ResourceError) Error() string {
	msgs := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		msgs[i] = p.Message
	}
	return strings.Join(msgs, "; ")
}

// Validate checks s against the resource rules of DESIGN.md §4 within the
// unit u. It returns the warnings that do not refuse the VM (vCPU
// over-provisioning) and, when a rule is broken, a *ResourceError.
func Validate(s Spec, u Unit) (warnings []string, err error) {
	var probs []Problem
	add := func(field, format string, args ...any) {
		probs = append(probs, Problem{Field: field, Message: fmt.Sprintf(format, args...)})
	}

	if err := CheckName(s.Name); err != nil {
		add("name", "%v", err)
	}
	for _, o := range u.VMs {
		if o.Name == s.Name {
			add("name", "a VM named %q already exists", s.Name)
		}
	}

	if len(u.PMs) == 0 {
		add("memory", "the unit has no PM to take the VM's measure from")
		return nil, &ResourceError{Problems: probs}
	}
	minMem, minCPUs := u.PMs[0].MemoryBytes, u.PMs[0].CPUs
	for _, h := range u.PMs[1:] {
		minMem = min(minMem, h.MemoryBytes)
		minCPUs = min(minCPUs, h.CPUs)
	}
	reserve := u.ReservedMemory
	if reserve <= 0 {
		reserve = DefaultReservedMemory
	}
	usable := minMem - reserve

	// vCPUs.
	switch {
	case s.VCPUs < 1 || s.VCPUs > MaxVCPUs:
		add("vcpus", "%d vCPUs: a VM has 1 to %d vCPUs", s.VCPUs, MaxVCPUs)
	default:
		avail := minCPUs - ReservedVCPUs
		total := s.VCPUs
		for _, o := range u.VMs {
			total += o.VCPUs
		}
		if total > avail {
			warnings = append(warnings, fmt.Sprintf(
				"vCPUs over-provisioned: the unit's VMs would have %d vCPUs, but a PM has %d CPUs of which %d are reserved for the system, leaving %d; VMs will share CPUs and run slower",
				total, minCPUs, ReservedVCPUs, max(avail, 0)))
		}
	}

	// Memory.
	floor, kind := MinMemory, "a VM"
	if s.Is64Bit {
		floor, kind = MinMemory64, "a 64-bit VM"
	}
	switch {
	case s.MemoryBytes%MiB != 0:
		add("memory", "memory %d bytes: must be a whole number of MiB", s.MemoryBytes)
	case s.MemoryBytes < floor:
		add("memory", "memory %s: %s needs at least %s", mib(s.MemoryBytes), kind, mib(floor))
	case s.MemoryBytes > usable:
		add("memory", "memory %s: a VM may have at most %s (the smaller PM's %s less %s reserved for the system)",
			mib(s.MemoryBytes), mib(max(usable, 0)), mib(minMem), mib(reserve))
	default:
		used := int64(0)
		for _, o := range u.VMs {
			used += o.MemoryBytes
		}
		if used+s.MemoryBytes > usable {
			add("memory", "memory %s: memory is never over-provisioned, and the other VMs already have %s of the %s available (the smaller PM's %s less %s reserved for the system), leaving %s",
				mib(s.MemoryBytes), mib(used), mib(max(usable, 0)), mib(minMem), mib(reserve), mib(max(usable-used, 0)))
		}
	}

	// Volumes.
	boots := 0
	seen := map[string]bool{}
	for _, v := range s.Volumes {
		if v.Boot {
			boots++
		}
		if err := CheckName(v.Name); err != nil {
			add("volumes", "volume: %v", err)
		} else if seen[v.Name] {
			add("volumes", "volume %q is listed twice", v.Name)
		}
		seen[v.Name] = true
		if v.SizeBytes <= 0 {
			add("volumes", "volume %q: size %d bytes: must be positive", v.Name, v.SizeBytes)
		}
	}
	for _, o := range u.VMs {
		for _, v := range o.Volumes {
			if seen[v.Name] {
				add("volumes", "volume %q already belongs to VM %q", v.Name, o.Name)
			}
		}
	}
	if boots != 1 {
		add("volumes", "%d boot volumes: a VM has exactly one", boots)
	}
	count := len(s.Volumes) + u.VCDs
	for _, o := range u.VMs {
		count += len(o.Volumes)
	}
	if count > MaxVolumes {
		add("volumes", "%d volumes: a unit holds at most %d volumes, VM volumes and VCDs together (%d VCDs and %d volumes of other VMs are there already)",
			count, MaxVolumes, u.VCDs, count-len(s.Volumes)-u.VCDs)
	}

	// Networks.
	var macs []net.HardwareAddr
	for _, o := range u.VMs {
		for _, n := range o.NICs {
			if n.MAC != nil {
				macs = append(macs, n.MAC)
			}
		}
	}
	for i, n := range s.NICs {
		if !slices.Contains(u.Networks, n.Network) {
			add("nics", "network %d: %q is not a shared network of the unit", i+1, n.Network)
		}
		if n.MAC == nil {
			continue
		}
		if err := CheckMAC(n.MAC); err != nil {
			add("nics", "network %d: %v", i+1, err)
			continue
		}
		if slices.ContainsFunc(macs, func(m net.HardwareAddr) bool { return bytes.Equal(m, n.MAC) }) {
			add("nics", "network %d: MAC %s is already used in the unit", i+1, n.MAC)
		}
		macs = append(macs, n.MAC)
	}

	if len(probs) > 0 {
		return warnings, &ResourceError{Problems: probs}
	}
	return warnings, nil
}

// CheckVolumeChange refuses a reconfiguration that drops the boot volume
// of a VM while keeping the VM: the boot volume goes only with the VM
// (Remove), never on its own. Moving the boot flag to another volume while
// keeping the old one is allowed.
func CheckVolumeChange(old, next Spec) error {
	for _, v := range old.Volumes {
		if !v.Boot {
			continue
		}
		if !slices.ContainsFunc(next.Volumes, func(n Volume) bool { return n.Name == v.Name }) {
			return fmt.Errorf("volume %q is the boot volume of VM %q: it cannot be detached or deleted on its own; remove the VM to delete it", v.Name, old.Name)
		}
	}
	return nil
}

// CheckName accepts names of VMs, volumes and networks: 1 to 64 letters,
// digits, '.', '_' and '-', starting with a letter or digit. They become
// parts of file names, device options and QEMU arguments, where a comma,
// a slash or a space would change the meaning.
func CheckName(name string) error {
	if name == "" {
		return fmt.Errorf("a name is required")
	}
	if len(name) > 64 {
		return fmt.Errorf("name %q is %d characters long: at most 64", name, len(name))
	}
	for i, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			i > 0 && (r == '.' || r == '_' || r == '-')
		if !ok {
			return fmt.Errorf("name %q: use letters, digits, '.', '_' and '-', starting with a letter or digit", name)
		}
	}
	return nil
}

// mib renders a byte count for an operator: MiB, or GiB when whole.
func mib(b int64) string {
	if b != 0 && b%GiB == 0 {
		return fmt.Sprintf("%d GiB", b/GiB)
	}
	if b%MiB == 0 {
		return fmt.Sprintf("%d MiB", b/MiB)
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/float64(MiB))
}
