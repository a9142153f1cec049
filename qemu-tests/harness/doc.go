// Package harness boots the PMs of a Dyad unit in QEMU from the built
// artifacts (out/dyad-kernel, out/dyad-initramfs.cpio.gz) inside a network
// namespace of their own, and gives tests the levers of the lab: power,
// link cuts, the test channel into each PM and dialing the unit's addresses
// from the test process.
//
// Layout of one unit (see the "Lab / harness network" contract):
//
//	namespace dyad-XXXXXXXX
//	  lo          priv0 of every PM: QEMU UDP socket netdevs, PM1 <-> PM2
//	  ibiz        bridge 10.99.0.254/24 (the operator host), tapN per PM = ibiz0
//	  PM N        ibiz0 10.99.0.N/24; the unit's management IP is 10.99.0.10
//
// Options add NICs, in this PCI order after priv0: sync0 (another UDP link
// on lo), ibiz0 as two NICs ibiz0a and ibiz0b on the ibiz bridge, and
// business links biz1..bizK, each on a bridge of the same name (PM2's biz1
// and biz2 swapped with CrossBusiness). Unit.Capture records the frames of
// a bridge.
//
// Each PM has a system disk (vda in the guest, drive id disk0) and, by
// default, two blank data disks for storage groups (vdb and vdc, drive ids
// data0 and data1; Options.DataDisks). PM.FailDisk pulls one from under the
// running guest; PM.WritePattern, PM.Sum and PM.DirectWrite write, check
// and time data on the PM's disks and volumes over the test channel.
package harness
