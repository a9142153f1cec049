package probe

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
)

// Network is a shared network of the unit: the ports of both PMs that
// share one L2 domain, bridged on each PM as shnet<ID>.
type Network struct {
	ID   int
	Name string
	// Ports maps a node number to its port; a network the peer PM has no
	// port in has one entry.
	Ports map[int]string
	// Problem is empty for a healthy network and otherwise says what an
	// operator must fix.
	Problem string
}

// Networks combines the pairings of PM1 (p1) and PM2 (p2) into the unit's
// shared networks, sorted by ID. Two ports form one network only when both
// PMs agree (PM1 pairs biz1 with PM2's biz2 and PM2 pairs biz2 with PM1's
// biz1); every other port gets a network of its own, with a Problem.
//
// A network keeps the ID and name of the network of existing (the previous
// result, with operator renames) that has the same ports or, failing that,
// the same PM1 port or the same PM2 port, so IDs and names survive a PM
// being down or a cable being moved. New networks get IDs above every ID
// in existing, in the order of PM1's port names and then PM2's, and the
// name "network<ID>".
func Networks(p1, p2 []Pairing, existing []Network) []Network {
	byPort := func(a, b Pairing) int { return comparePorts(a.LocalPort, b.LocalPort) }
	pairings := map[int][]Pairing{
		1: slices.SortedFunc(slices.Values(p1), byPort),
		2: slices.SortedFunc(slices.Values(p2), byPort),
	}
	index := map[int]map[string]Pairing{1: {}, 2: {}}
	for node, ps := range pairings {
		for _, p := range ps {
			index[node][p.LocalPort] = p
		}
	}

	var nets []Network
	joined := make(map[string]bool) // PM2 ports already in a network with a PM1 port
	for _, node := range []int{1, 2} {
		peer := 3 - node
		for _, p := range pairings[node] {
			if node == 2 && joined[p.LocalPort] {
				continue
			}
			n := Network{Ports: map[int]string{node: p.LocalPort}}
			q, ok := index[peer][p.PeerPort]
			switch {
			case p.PeerPort == "":
				n.Problem = fmt.Sprintf("%s %s: %s", pmName(node), p.LocalPort, p.Problem)
			case !ok:
				n.Problem = fmt.Sprintf("inconsistent: %s %s hears %s %s, which %s does not report",
					pmName(node), p.LocalPort, pmName(peer), p.PeerPort, pmName(peer))
			case q.PeerPort == "":
				n.Problem = fmt.Sprintf("inconsistent: %s %s hears %s %s, but on %s %s: %s",
					pmName(node), p.LocalPort, pmName(peer), q.LocalPort, pmName(peer), q.LocalPort, q.Problem)
			case q.PeerPort != p.LocalPort:
				n.Problem = fmt.Sprintf("inconsistent: %s %s hears %s %s, but %s %s hears %s %s",
					pmName(node), p.LocalPort, pmName(peer), q.LocalPort, pmName(peer), q.LocalPort, pmName(node), q.PeerPort)
			default: // both agree; only reached for node 1
				n.Ports[peer] = q.LocalPort
				joined[q.LocalPort] = true
				if p.LocalSpeedMbps > 0 && q.LocalSpeedMbps > 0 && p.LocalSpeedMbps != q.LocalSpeedMbps {
					n.Problem = fmt.Sprintf("speed mismatch: %s %s at %d Mb/s, %s %s at %d Mb/s",
						pmName(node), p.LocalPort, p.LocalSpeedMbps, pmName(peer), q.LocalPort, q.LocalSpeedMbps)
				}
			}
			nets = append(nets, n)
		}
	}

	assignIDs(nets, existing)
	slices.SortFunc(nets, func(a, b Network) int { return cmp.Compare(a.ID, b.ID) })
	return nets
}

// assignIDs gives each of nets the ID and name of a matching network of
// existing, or a new ID. Matching runs in passes from the strongest match
// down so that a network with exactly the old ports keeps its ID even when
// an earlier network shares one of its ports.
func assignIDs(nets []Network, existing []Network) {
	used := make(map[int]bool) // IDs already taken
	matches := []func(n, e Network) bool{
		func(n, e Network) bool { return maps.Equal(n.Ports, e.Ports) },
		func(n, e Network) bool { return samePort(n, e, 1) },
		func(n, e Network) bool { return samePort(n, e, 2) },
	}
	for _, match := range matches {
		for i := range nets {
			if nets[i].ID != 0 {
				continue
			}
			for _, e := range existing {
				if !used[e.ID] && e.ID > 0 && match(nets[i], e) {
					used[e.ID] = true
					nets[i].ID, nets[i].Name = e.ID, e.Name
					break
				}
			}
		}
	}
	next := 1
	for _, e := range existing {
		next = max(next, e.ID+1)
	}
	for i := range nets {
		if nets[i].ID == 0 {
			nets[i].ID = next
			next++
		}
		if nets[i].Name == "" {
			nets[i].Name = "network" + strconv.Itoa(nets[i].ID)
		}
	}
}

func samePort(n, e Network, node int) bool {
	p, ok := n.Ports[node]
	return ok && e.Ports[node] == p
}
