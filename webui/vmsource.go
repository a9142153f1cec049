package webui

import (
	"context"
	"net"

	"github.com/dyad-ha/dyad/services/unit"
)

// VMSource manages the unit's virtual machines. Config.VMs may be nil: the
// server then has no VM API, pages or dashboard section.
//
// Errors: ErrNotFound for an unknown VM; ErrInvalid wrapped with the reason
// for a request it refuses (a *vm.ResourceError is also answered 400 with
// its problems); a *vm.NotAllowedError when the VM's state does not allow
// the command (answered 409 with the allowed list); ErrConflict wrapped
// with the reason for other conflicts with the unit's state.
type VMSource interface {
	VMs(ctx context.Context) ([]unit.VM, error)
	VM(ctx context.Context, id int) (unit.VM, error)
	// CreateVM records a VM and creates its new volumes; it returns at once
	// (State Busy until the volumes are ready).
	CreateVM(ctx context.Context, req unit.VMCreate) (unit.VM, error)
	// ConfigVM re-provisions a stopped VM.
	ConfigVM(ctx context.Context, id int, req unit.VMConfig) (unit.VM, error)
	// Command runs one of the commands of DESIGN.md §4 ("Start",
	// "Shutdown", "Power Off", "Dump", "Boot From CD", "Migrate", "Reset
	// Device"). Shutdown and Migrate return once started; the VM's State
	// and Migration tell how they end.
	Command(ctx context.Context, id int, cmd string, args unit.VMAction) (unit.VM, error)
	// RemoveVM removes a VM with its boot volume; its other volumes too
	// when deleteData.
	RemoveVM(ctx context.Context, id int, deleteData bool) error
	// DialConsole connects to a running VM's console: kind "serial" (a
	// byte stream to and from the guest's first serial port) or "vnc" (an
	// RFB stream).
	DialConsole(ctx context.Context, id int, kind string) (net.Conn, error)
	// SerialLog returns the newest bytes the VM's serial console printed
	// (at most 1 MiB), kept by the PM that runs it.
	SerialLog(ctx context.Context, id int) ([]byte, error)
}
