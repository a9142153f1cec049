package vm

import (
	"fmt"
	"slices"
	"strings"
)

// State is a VM's state. The names are those of the Avance manual
// (DESIGN.md §4) so operators and scripts keep their vocabulary.
type State string

// VM states of DESIGN.md §4.
const (
	Busy     State = "Busy"     // installing: volumes being created or imported
	Stopped  State = "Stopped"  // no QEMU process
	Booting  State = "Booting"  // QEMU started, the guest has not come up yet
	Running  State = "Running"  // running with both PMs and every mirror leg present
	Alert    State = "Alert"    // running, but not fully redundant (a PM or a mirror leg is missing)
	Stopping State = "Stopping" // a shutdown was asked for and the guest has not powered off yet
	Crashed  State = "Crashed"  // crashed; being restarted by the MTBF policy
	Critical State = "Critical" // crashed past the MTBF threshold; waits for Reset Device
	Dumping  State = "Dumping"  // guest memory being written to the data partition
)

// Command is an operator command on a VM, named as in the console.
type Command string

// VM commands of DESIGN.md §4.
const (
	Start       Command = "Start"
	Config      Command = "Config"
	Export      Command = "Export"
	BootFromCD  Command = "Boot From CD"
	Remove      Command = "Remove"
	Snapshot    Command = "Snapshot"
	Console     Command = "Console"
	PowerOff    Command = "Power Off"
	Dump        Command = "Dump"
	Shutdown    Command = "Shutdown"
	Migrate     Command = "Migrate"
	ResetDevice Command = "Reset Device"
)

// States lists every VM state in the order of DESIGN.md §4.
func States() []State {
	return []State{Busy, Stopped, Booting, Running, Alert, Stopping, Crashed, Critical, Dumping}
}

// Commands lists every VM command in the order the console shows them.
func Commands() []Command {
	return []Command{Start, Config, Export, BootFromCD, Remove, Snapshot,
		Console, PowerOff, Dump, Shutdown, Migrate, ResetDevice}
}

// allowed is the table of DESIGN.md §4. It is built by a function rather
// than held in a package variable so that no caller can alter the rules.
func allowed(s State) []Command {
	switch s {
	case Busy, Crashed:
		// Busy: the volumes are not complete. Crashed: the MTBF policy is
		// restarting the VM; an operator command would race with it.
		return nil
	case Stopped:
		return []Command{Start, Config, Export, BootFromCD, Remove, Snapshot}
	case Booting:
		return []Command{Console, PowerOff, Dump}
	case Running:
		return []Command{Console, Shutdown, PowerOff, Dump, Migrate}
	case Alert:
		// No Migrate: a VM in Alert lacks the peer PM or a mirror leg, so
		// there is nowhere complete to migrate it to.
		return []Command{Console, Shutdown, PowerOff, Dump}
	case Stopping:
		return []Command{PowerOff, Remove}
	case Critical:
		return []Command{ResetDevice}
	case Dumping:
		return []Command{PowerOff}
	}
	return nil
}

// Allowed returns the commands allowed in state s, in the order of the
// table in DESIGN.md §4; none for an unknown state. The slice is the
// caller's to keep or change.
func Allowed(s State) []Command {
	return allowed(s)
}

// NotAllowedError refuses a command in a state. The API answers it with
// 409 Conflict and Allowed, so a client can offer what is possible instead.
type NotAllowedError struct {
	State   State
	Command Command
	Allowed []Command
}

func (e *NotAllowedError) Error() string {
	if len(e.Allowed) == 0 {
		return fmt.Sprintf("%s is not allowed while the VM is %s: no command is allowed in this state", e.Command, e.State)
	}
	names := make([]string, len(e.Allowed))
	for i, c := range e.Allowed {
		names[i] = string(c)
	}
	return fmt.Sprintf("%s is not allowed while the VM is %s; allowed: %s", e.Command, e.State, strings.Join(names, ", "))
}

// Check returns nil if command c is allowed in state s, else a
// *NotAllowedError carrying the allowed commands. An unknown state or
// command is refused with a plain error: it is a client's mistake, not a
// conflict with the VM's state.
func Check(s State, c Command) error {
	if !slices.Contains(States(), s) {
		return fmt.Errorf("unknown VM state %q", s)
	}
	if !slices.Contains(Commands(), c) {
		return fmt.Errorf("unknown VM command %q", c)
	}
	a := allowed(s)
	if slices.Contains(a, c) {
		return nil
	}
	return &NotAllowedError{State: s, Command: c, Allowed: a}
}
