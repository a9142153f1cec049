package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/dyad-ha/dyad/services/network"
	"github.com/dyad-ha/dyad/services/pmconfig"
	"github.com/dyad-ha/dyad/services/store"
	"github.com/dyad-ha/dyad/services/unit"
)

var syncPath = regexp.MustCompile(`^sync([0-9])$`)

// heartbeatPaths are the paths between the PMs in order of preference for
// replication and migration: the configured sync links, priv0, then ibiz0.
func heartbeatPaths(cfg pmconfig.Config) []string {
	var syncs []string
	for role := range cfg.Ports {
		if syncPath.MatchString(role) {
			syncs = append(syncs, role)
		}
	}
	slices.Sort(syncs)
	return append(syncs, unit.PathPriv0, unit.PathIbiz0)
}

// syncAddr is the fixed private address of node n on sync link k: like
// priv0's, in IPv4 link-local space, one /24 per link.
func syncAddr(k, n int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{169, 254, byte(43 + k), byte(n)}), 24)
}

// peerAddr is the peer's address on a heartbeat path; on ibiz0 it is the
// address its heartbeats announce.
func peerAddr(path string, peer int, ibiz0 string) (netip.Addr, bool) {
	switch {
	case path == unit.PathPriv0:
		return pmconfig.Priv0Addr(peer).Addr(), true
	case path == unit.PathIbiz0:
		ip, err := netip.ParseAddr(ibiz0)
		return ip, err == nil
	default:
		m := syncPath.FindStringSubmatch(path)
		if m == nil {
			return netip.Addr{}, false
		}
		k, _ := strconv.Atoi(m[1])
		return syncAddr(k, peer).Addr(), true
	}
}

// sharedNetwork is a shared network as the unit database keeps it.
type sharedNetwork struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
	// Ports maps a node to its port in the network.
	Ports map[int]string `json:"ports"`
	// Problem is empty for a healthy network, else what an operator must fix.
	Problem string `json:"problem,omitempty"`
}

// bridgeName is the bridge of shared network id, the same on both PMs.
func bridgeName(id int) string { return "shnet" + strconv.Itoa(id) }

// desiredNetwork is the kernel network a PM wants: its ports up by role,
// ibiz0 bonded when it has several ports, the bridges of the shared networks
// it has a port in, and its own addresses and default route. The management
// addresses are not in it: they follow the primary role.
func desiredNetwork(cfg pmconfig.Config, plan network.PortPlan, nets []sharedNetwork) network.Desired {
	var d network.Desired
	names := plan.Names()
	port := func(p network.Port) string { return names[p.Name] }

	d.Links = append(d.Links, network.LinkSpec{Name: port(plan.Priv0)})
	d.Addrs = append(d.Addrs, network.AddrSpec{Link: port(plan.Priv0), Prefix: pmconfig.Priv0Addr(cfg.Node)})
	for k, p := range plan.Sync {
		d.Links = append(d.Links, network.LinkSpec{Name: port(p)})
		d.Addrs = append(d.Addrs, network.AddrSpec{Link: port(p), Prefix: syncAddr(k, cfg.Node)})
	}
	if plan.Bonded() {
		b := network.BondSpec{Name: network.RoleIBiz, Mode: cfg.BondMode, MiimonMS: 100}
		for _, p := range plan.Ibiz0 {
			b.Members = append(b.Members, port(p))
		}
		d.Bonds = append(d.Bonds, b)
	} else {
		d.Links = append(d.Links, network.LinkSpec{Name: network.RoleIBiz})
	}
	if cfg.Ibiz0.IsValid() {
		d.Addrs = append(d.Addrs, network.AddrSpec{Link: network.RoleIBiz, Prefix: cfg.Ibiz0})
	}
	if cfg.Gateway.IsValid() {
		d.Routes = append(d.Routes, network.RouteSpec{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: cfg.Gateway, Link: network.RoleIBiz})
	}
	inBridge := map[string]string{}
	for _, n := range nets {
		if p, ok := n.Ports[cfg.Node]; ok && strings.HasPrefix(p, "biz") {
			inBridge[p] = bridgeName(n.ID)
		}
	}
	for _, p := range plan.Business {
		name := port(p)
		if br, ok := inBridge[name]; ok {
			d.Bridges = append(d.Bridges, network.BridgeSpec{Name: br, Ports: []string{name}})
			continue
		}
		d.Links = append(d.Links, network.LinkSpec{Name: name})
	}
	slices.SortFunc(d.Bridges, func(a, b network.BridgeSpec) int { return strings.Compare(a.Name, b.Name) })
	return d
}

// reconcileNetwork brings the kernel network to what the unit database
// wants and refreshes the view of the PM's links.
func (a *Agent) reconcileNetwork(ctx context.Context) {
	nets, err := a.sharedNetworks()
	if err != nil {
		a.log.Warn("shared networks", "err", err)
	}
	if err := a.opt.Net.Apply(ctx, desiredNetwork(a.cfg, a.plan, nets)); err != nil {
		a.log.Warn("network", "err", err)
	}
	links, err := a.opt.Net.Links(ctx)
	if err != nil {
		a.log.Warn("network links", "err", err)
		return
	}
	a.mu.Lock()
	a.links = links
	a.mu.Unlock()
}

const bucketNetworks = "networks"

// sharedNetworks reads the shared networks of the unit database, by id.
func (a *Agent) sharedNetworks() ([]sharedNetwork, error) {
	var out []sharedNetwork
	err := a.db.View(func(r store.Reader) error {
		return r.ForEach(bucketNetworks, func(k string, v []byte) error {
			var n sharedNetwork
			if err := json.Unmarshal(v, &n); err != nil {
				return fmt.Errorf("shared network %s: %w", k, err)
			}
			out = append(out, n)
			return nil
		})
	})
	slices.SortFunc(out, func(a, b sharedNetwork) int { return a.ID - b.ID })
	return out, err
}
