// Package drbd drives DRBD 8.4 (the in-tree kernel module of Linux 6.1,
// version 8.4.11) with the 8.4 tools of drbd-utils: drbdadm-84,
// drbdsetup-84 and drbdmeta.
//
// It holds four independent pieces:
//
//   - ParseProc reads /proc/drbd: per minor the connection state, roles,
//     disk states, I/O counters and, while a resync runs, its progress.
//   - ParseGI reads the generation identifiers printed by get-gi/show-gi,
//     and Compare tells which leg holds newer data the way the kernel's
//     sync handshake would, without a connection: the operator's view of a
//     split brain.
//   - Render writes a complete standalone drbd.conf for drbdadm-84 -c FILE,
//     one resource per volume with two "floating" sections so that drbdadm
//     picks the section whose address is local and host names never matter.
//   - Admin runs drbdadm-84/drbdsetup-84 through a Runner seam so that the
//     exact argv is testable without a kernel module.
//
// Nothing here keeps state between calls; the agent owns the decisions.
package drbd
