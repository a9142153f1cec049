package harness

import (
	"fmt"
	"strings"
)

// Link names accepted by SetLink; they are the QEMU netdev ids. Which of
// them a PM has depends on its Options (see Ports).
const (
	LinkPriv0  = "priv0"
	LinkIbiz0  = "ibiz0"  // the single ibiz0 NIC (Options.Ibiz0Bond off)
	LinkIbiz0A = "ibiz0a" // first member NIC of ibiz0 (Options.Ibiz0Bond)
	LinkIbiz0B = "ibiz0b" // second member NIC of ibiz0 (Options.Ibiz0Bond)
	LinkSync0  = "sync0"  // Options.SyncLink
)

// Bridges of the unit's namespace besides the business segments.
const (
	BridgeIbiz = "ibiz"
	// BridgeLoopback is not a bridge: priv0 and sync0 are UDP sockets on
	// the namespace's loopback, where Capture sees them encapsulated.
	BridgeLoopback = "lo"
)

// maxBusinessLinks keeps the business MACs within the 52:54:00:d7:0N:1K
// scheme (one decimal digit for K).
const maxBusinessLinks = 9

// sync0BasePort + N is the UDP port of PM N's sync0, as priv0BasePort is
// for priv0.
const sync0BasePort = 20100

// LinkBiz is the link name (QEMU netdev id) of business link k, 1-based,
// which is also the name of its segment's bridge in the namespace.
func LinkBiz(k int) string { return fmt.Sprintf("biz%d", k) }

// Port is one NIC of a PM.
type Port struct {
	Link   string // QEMU netdev id: the name SetLink takes
	MAC    string
	Bridge string // bridge of the namespace the NIC is plugged into; "" for priv0 and sync0
}

// nic is a Port with what QEMU and the namespace need to wire it.
type nic struct {
	Port
	tap string // tap in the namespace; "" for a point-to-point UDP link
	// Point-to-point links only: UDP ports on the namespace's loopback.
	localPort, peerPort int
}

// netdev is the value of QEMU's -netdev option for the NIC.
func (c nic) netdev() string {
	if c.tap == "" {
		return fmt.Sprintf("socket,id=%s,udp=127.0.0.1:%d,localaddr=127.0.0.1:%d", c.Link, c.peerPort, c.localPort)
	}
	return fmt.Sprintf("tap,id=%s,ifname=%s,script=no,downscript=no", c.Link, c.tap)
}

// mac is the MAC of PM n's NIC with the given last byte (as two hex digits).
func mac(n int, last string) string { return fmt.Sprintf("52:54:00:d7:%02d:%s", n, last) }

// layout returns the NICs of PM n in PCI order: priv0, sync0, ibiz0 (or
// ibiz0a and ibiz0b), biz1..bizK. Without options it is today's pair of
// priv0 and ibiz0 with their tap named tapN.
func (o *Options) layout(n int) []nic {
	peer := 3 - n // point to point between PM1 and PM2
	nics := []nic{{
		Port:      Port{Link: LinkPriv0, MAC: mac(n, "01")},
		localPort: priv0BasePort + n, peerPort: priv0BasePort + peer,
	}}
	if o.SyncLink {
		nics = append(nics, nic{
			Port:      Port{Link: LinkSync0, MAC: mac(n, "05")},
			localPort: sync0BasePort + n, peerPort: sync0BasePort + peer,
		})
	}
	if o.Ibiz0Bond {
		nics = append(nics,
			nic{Port: Port{Link: LinkIbiz0A, MAC: mac(n, "02"), Bridge: BridgeIbiz}, tap: fmt.Sprintf("tap%d-%s", n, LinkIbiz0A)},
			nic{Port: Port{Link: LinkIbiz0B, MAC: mac(n, "03"), Bridge: BridgeIbiz}, tap: fmt.Sprintf("tap%d-%s", n, LinkIbiz0B)})
	} else {
		nics = append(nics, nic{Port: Port{Link: LinkIbiz0, MAC: mac(n, "02"), Bridge: BridgeIbiz}, tap: fmt.Sprintf("tap%d", n)})
	}
	for k := 1; k <= o.BusinessLinks; k++ {
		bridge := LinkBiz(k)
		if o.CrossBusiness && n == 2 && k <= 2 {
			bridge = LinkBiz(3 - k)
		}
		nics = append(nics, nic{
			Port: Port{Link: LinkBiz(k), MAC: mac(n, fmt.Sprintf("1%d", k)), Bridge: bridge},
			tap:  fmt.Sprintf("tap%d-%s", n, LinkBiz(k)),
		})
	}
	return nics
}

// portCmdline is what the kernel command line of PM n says about its ports:
// which NICs form the ibiz0 bond and which is sync0. The default layout
// needs nothing (priv0 first, ibiz0 second).
func (o *Options) portCmdline(n int) []string {
	var args []string
	if o.Ibiz0Bond {
		args = append(args, "dyad.port.ibiz0="+mac(n, "02")+","+mac(n, "03"))
	}
	if o.SyncLink {
		args = append(args, "dyad.port.sync0="+mac(n, "05"))
	}
	return args
}

// businessBridges returns the business segments' bridges, biz1..bizK.
func (o *Options) businessBridges() []string {
	var b []string
	for k := 1; k <= o.BusinessLinks; k++ {
		b = append(b, LinkBiz(k))
	}
	return b
}

// checkLayout refuses options that describe no possible lab.
func (o *Options) checkLayout() error {
	if o.BusinessLinks < 0 || o.BusinessLinks > maxBusinessLinks {
		return fmt.Errorf("harness: %d business links requested, want 0 to %d", o.BusinessLinks, maxBusinessLinks)
	}
	if o.CrossBusiness && (o.N != 2 || o.BusinessLinks < 2) {
		return fmt.Errorf("harness: CrossBusiness swaps PM2's biz1 and biz2: it needs 2 PMs and BusinessLinks >= 2 (have %d PMs, %d links)", o.N, o.BusinessLinks)
	}
	return nil
}

// linkNames lists the links of nics for an error message.
func linkNames(nics []nic) string {
	names := make([]string, len(nics))
	for i, c := range nics {
		names[i] = c.Link
	}
	return strings.Join(names, ", ")
}
