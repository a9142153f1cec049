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
package harness
