package probe

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// PortInfo describes one business port of this PM.
type PortInfo struct {
	Name      string
	SpeedMbps int // 0: unknown
}

// Pairing says which port of the peer PM one local port shares its L2
// domain with.
type Pairing struct {
	LocalPort string
	// PeerPort is empty when no peer port, or more than one, is heard.
	PeerPort       string
	LocalSpeedMbps int
	PeerSpeedMbps  int
	// Problem is empty for a clean one-to-one pairing at equal (or
	// unknown) speeds, and otherwise says what an operator must fix.
	Problem string
}

const problemNoPeer = "no peer port in the same L2 domain"

// Pair pairs this PM's business ports, local, with the peer's from the
// probes heard on each local port (heard maps a local port name to the
// probes received on it). Probes from this PM itself (Node == self), from
// ports not in local, and received longer than fresh before now are
// ignored. The result has one Pairing per local port, in port order
// (biz2 before biz10).
//
// A port pairs only one-to-one: when one local port hears several peer
// ports, or one peer port is heard on several local ports, those ports
// share an L2 domain and which of them carries a shared network is
// ambiguous, so none of them is paired.
func Pair(self int, local []PortInfo, heard map[string][]Probe, now time.Time, fresh time.Duration) []Pairing {
	local = slices.SortedFunc(slices.Values(local), func(a, b PortInfo) int { return comparePorts(a.Name, b.Name) })
	// latest[l][q] is the newest fresh probe of peer port q heard on local port l.
	latest := make(map[string]map[string]Probe, len(local))
	heardOn := make(map[string][]string) // peer port -> local ports hearing it
	for _, l := range local {
		m := make(map[string]Probe)
		for _, p := range heard[l.Name] {
			if p.Node == self || now.Sub(p.Received) > fresh {
				continue
			}
			if old, ok := m[p.Port]; !ok || newer(p, old) {
				m[p.Port] = p
			}
		}
		latest[l.Name] = m
		for q := range m {
			heardOn[q] = append(heardOn[q], l.Name)
		}
	}

	out := make([]Pairing, 0, len(local))
	for _, l := range local {
		pr := Pairing{LocalPort: l.Name, LocalSpeedMbps: l.SpeedMbps}
		peers := slices.SortedFunc(maps.Keys(latest[l.Name]), comparePorts)
		switch {
		case len(peers) == 0:
			pr.Problem = problemNoPeer
		case len(peers) > 1:
			pm := pmName(latest[l.Name][peers[0]].Node)
			pr.Problem = fmt.Sprintf("ambiguous: %s ports %s %s heard on %s (they share an L2 domain)",
				pm, joinAnd(peers), bothOrAll(peers), l.Name)
		case len(heardOn[peers[0]]) > 1:
			q := peers[0]
			on := slices.SortedFunc(slices.Values(heardOn[q]), comparePorts)
			pr.Problem = fmt.Sprintf("ambiguous: %s port %s heard on %s here (they share an L2 domain)",
				pmName(latest[l.Name][q].Node), q, joinAnd(on))
		default:
			p := latest[l.Name][peers[0]]
			pr.PeerPort, pr.PeerSpeedMbps = p.Port, p.SpeedMbps
			if l.SpeedMbps > 0 && p.SpeedMbps > 0 && l.SpeedMbps != p.SpeedMbps {
				pr.Problem = fmt.Sprintf("speed mismatch: %d Mb/s here, %d Mb/s on %s", l.SpeedMbps, p.SpeedMbps, pmName(p.Node))
			}
		}
		out = append(out, pr)
	}
	return out
}

// newer orders two probes of the same port: by arrival, then by sequence
// number for probes stamped with the same time.
func newer(p, old Probe) bool {
	if c := p.Received.Compare(old.Received); c != 0 {
		return c > 0
	}
	return p.Seq > old.Seq
}

func pmName(node int) string { return "pm" + strconv.Itoa(node) }

// joinAnd lists names as "a", "a and b", "a, b and c".
func joinAnd(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

func bothOrAll(names []string) string {
	if len(names) == 2 {
		return "both"
	}
	return "all"
}

// comparePorts orders port names by their text and then by the number
// they end in, so biz2 sorts before biz10.
func comparePorts(a, b string) int {
	pa, na := splitNumber(a)
	pb, nb := splitNumber(b)
	if c := cmp.Compare(pa, pb); c != 0 {
		return c
	}
	// Same prefix: compare the digits as numbers of any length.
	ta, tb := strings.TrimLeft(na, "0"), strings.TrimLeft(nb, "0")
	if c := cmp.Compare(len(ta), len(tb)); c != 0 {
		return c
	}
	if c := cmp.Compare(ta, tb); c != 0 {
		return c
	}
	return cmp.Compare(a, b)
}

func splitNumber(s string) (prefix, digits string) {
	i := len(s)
	for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
		i--
	}
	return s[:i], s[i:]
}
