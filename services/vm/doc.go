// Package vm holds what the agent needs to know about a virtual machine
// before any process runs: the states and commands of DESIGN.md §4, the
// resource rules a VM's specification must obey, the MTBF policy that turns
// a crash into a restart or into Critical, the QEMU command line of one VM
// and the VM's MAC address. Everything here is pure: nothing starts a
// process or touches the host, so the rules are tested exhaustively in
// tier 1 and the reconciler that drives QEMU only composes them.
package vm
