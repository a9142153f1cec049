package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dyad-ha/dyad/services/network/probe"
	"github.com/dyad-ha/dyad/services/store"
	"github.com/dyad-ha/dyad/services/unit"
	"github.com/dyad-ha/dyad/services/unitca"
	"github.com/dyad-ha/dyad/webui"
)

const (
	// probeInterval is how often a PM probes each business port.
	probeInterval = time.Second
	// probeFresh is how long a heard probe counts for pairing.
	probeFresh = 5 * time.Second
)

// probeBusiness sends probes on every business port and listens for the
// peer's until ctx ends; the pairing it derives goes into the self report.
func (a *Agent) probeBusiness(ctx context.Context) {
	key := unitca.ProbeKey(a.cfg.UnitKey)
	names := a.plan.Names()
	conns := map[string]*probe.Conn{}
	for _, p := range a.plan.Business {
		name := names[p.Name]
		c, err := probe.Listen(name)
		if err != nil {
			a.log.Warn("shared network probes", "port", name, "err", err)
			continue
		}
		conns[name] = c
		go c.Receive(ctx, key, func(pr probe.Probe, _ net.HardwareAddr) {
			if pr.Unit != a.cfg.Unit || pr.Node != a.cfg.Peer() {
				return
			}
			a.mu.Lock()
			heard := a.heard[name]
			// Keep the newest probe of each peer port.
			heard = slices.DeleteFunc(heard, func(old probe.Probe) bool { return old.Port == pr.Port })
			a.heard[name] = append(heard, pr)
			a.mu.Unlock()
		})
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var seq uint64
	every(ctx, probeInterval, func() {
		seq++
		speeds := a.linkSpeeds()
		for name, c := range conns {
			pr := probe.Probe{Unit: a.cfg.Unit, Node: a.cfg.Node, BootID: a.opt.BootID, Seq: seq}
			pr.SpeedMbps = speeds[name]
			if err := c.Send(ctx, key, pr); err != nil {
				a.log.Debug("probe send", "err", err)
			}
		}
	})
}

// linkSpeeds maps each link to its speed as last read.
func (a *Agent) linkSpeeds() map[string]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := map[string]int{}
	for _, l := range a.links {
		m[l.Name] = l.SpeedMbps
	}
	return m
}

// pairings is this PM's view of which peer port shares an L2 domain with
// each of its business ports.
func (a *Agent) pairings(now time.Time) []probe.Pairing {
	speeds := a.linkSpeeds()
	names := a.plan.Names()
	var local []probe.PortInfo
	for _, p := range a.plan.Business {
		local = append(local, probe.PortInfo{Name: names[p.Name], SpeedMbps: speeds[names[p.Name]]})
	}
	a.mu.Lock()
	heard := make(map[string][]probe.Probe, len(a.heard))
	for k, v := range a.heard {
		heard[k] = slices.Clone(v)
	}
	a.mu.Unlock()
	return probe.Pair(a.cfg.Node, local, heard, now, probeFresh)
}

// reconcileNetworks joins both PMs' pairings into the shared networks of the
// unit database. It runs on the primary while the peer reports; without the
// peer the networks stay as they are, so names and ids survive its absence.
func (a *Agent) reconcileNetworks(ctx context.Context, rep store.Replicator, peer []probe.Pairing) error {
	existing, err := a.sharedNetworks()
	if err != nil {
		return err
	}
	own := a.pairings(time.Now())
	p1, p2 := own, peer
	if a.cfg.Node == 2 {
		p1, p2 = peer, own
	}
	var ex []probe.Network
	for _, n := range existing {
		ex = append(ex, probe.Network{ID: n.ID, Name: n.Name, Ports: n.Ports, Problem: n.Problem})
	}
	var want []sharedNetwork
	for _, n := range probe.Networks(p1, p2, ex) {
		want = append(want, sharedNetwork{ID: n.ID, Name: n.Name, Ports: n.Ports, Problem: n.Problem})
	}
	if sameNetworks(existing, want) {
		return nil
	}
	return a.db.Update(ctx, rep, func(w store.Writer) error {
		keep := map[string]bool{}
		for _, n := range want {
			b, err := json.Marshal(n)
			if err != nil {
				return err
			}
			k := strconv.Itoa(n.ID)
			keep[k] = true
			if err := w.Put(bucketNetworks, k, b); err != nil {
				return err
			}
		}
		for _, n := range existing {
			if k := strconv.Itoa(n.ID); !keep[k] {
				if err := w.Delete(bucketNetworks, k); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func sameNetworks(a, b []sharedNetwork) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// Networks implements webui.Source: the shared networks with the live state
// of their ports on each PM.
func (a *Agent) Networks(ctx context.Context) ([]unit.Network, error) {
	nets, err := a.sharedNetworks()
	if err != nil {
		return nil, err
	}
	links := map[int]map[string]unit.Link{a.cfg.Node: {}, a.cfg.Peer(): {}}
	a.mu.Lock()
	for _, l := range a.links {
		links[a.cfg.Node][l.Name] = l
	}
	for _, l := range a.peerReport.Links {
		links[a.cfg.Peer()][l.Name] = l
	}
	a.mu.Unlock()
	out := make([]unit.Network, 0, len(nets))
	for _, n := range nets {
		un := unit.Network{ID: n.ID, Name: n.Name, Problem: n.Problem}
		for _, pm := range []int{1, 2} {
			port, ok := n.Ports[pm]
			if !ok {
				continue
			}
			l := links[pm][port]
			un.Ports = append(un.Ports, unit.NetworkPort{PM: pm, Port: port, Up: l.Up, Carrier: l.Carrier, SpeedMbps: l.SpeedMbps})
		}
		out = append(out, un)
	}
	return out, nil
}

// RenameNetwork implements webui.Source.
func (a *Agent) RenameNetwork(ctx context.Context, id int, name string) (unit.Network, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 64 || strings.ContainsFunc(name, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return unit.Network{}, fmt.Errorf("%w: a network name is 1 to 64 printable characters", webui.ErrInvalid)
	}
	nets, err := a.sharedNetworks()
	if err != nil {
		return unit.Network{}, err
	}
	i := slices.IndexFunc(nets, func(n sharedNetwork) bool { return n.ID == id })
	if i < 0 {
		return unit.Network{}, fmt.Errorf("network %d: %w", id, webui.ErrNotFound)
	}
	n := nets[i]
	n.Name = name
	b, err := json.Marshal(n)
	if err != nil {
		return unit.Network{}, err
	}
	if err := a.commit(ctx, func(w store.Writer) error {
		return w.Put(bucketNetworks, strconv.Itoa(id), b)
	}); err != nil {
		return unit.Network{}, err
	}
	return a.network(ctx, id)
}

// FixNetwork implements webui.Source: the operator has fixed the cabling of
// a shared network with a problem and asks to pair it again now. Stale
// probes are dropped and pairing is re-run until the network is clean or a
// full probe period passes; the answer is the network, or ErrConflict with
// the problem that remains.
func (a *Agent) FixNetwork(ctx context.Context, id int) (unit.Network, error) {
	find := func() (sharedNetwork, error) {
		nets, err := a.sharedNetworks()
		if err != nil {
			return sharedNetwork{}, err
		}
		for _, n := range nets {
			if n.ID == id {
				return n, nil
			}
		}
		return sharedNetwork{}, fmt.Errorf("network %d: %w", id, webui.ErrNotFound)
	}
	n, err := find()
	if err != nil {
		return unit.Network{}, err
	}
	if n.Problem == "" {
		return a.network(ctx, id)
	}
	a.mu.Lock()
	clear(a.heard)
	a.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, probeFresh+3*probeInterval)
	defer cancel()
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return unit.Network{}, fmt.Errorf("%w: network %s still has a problem: %s; check its cabling", webui.ErrConflict, n.Name, n.Problem)
		case <-t.C:
		}
		a.reconcile(ctx)
		if n, err = find(); err != nil {
			// Re-pairing may give the ports a new network.
			return unit.Network{}, fmt.Errorf("%w: network %d was replaced while pairing again; list the networks", webui.ErrConflict, id)
		}
		if n.Problem == "" {
			return a.network(ctx, id)
		}
	}
}

// network is one shared network as the API shows it.
func (a *Agent) network(ctx context.Context, id int) (unit.Network, error) {
	all, err := a.Networks(ctx)
	if err != nil {
		return unit.Network{}, err
	}
	for _, un := range all {
		if un.ID == id {
			return un, nil
		}
	}
	return unit.Network{}, fmt.Errorf("network %d: %w", id, webui.ErrNotFound)
}
