package network

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Role names. The first port (onboard, lowest bus address) is the private
// PM-to-PM link, the second carries management; sync links are only what the
// configuration names; every other port is a business port, numbered from 1.
const (
	RolePriv = "priv0"
	RoleIBiz = "ibiz0"
)

var syncRole = regexp.MustCompile(`^sync[0-9]$`)

// PortPlan is the role of every Ethernet port of a PM.
type PortPlan struct {
	Priv0 Port
	// Sync are the sync links, sync0 first.
	Sync []Port
	// Ibiz0 is the management port, or the members of the ibiz0 bond.
	Ibiz0 []Port
	// Business are the other ports, biz1 first.
	Business []Port
}

// Bonded reports whether ibiz0 is a bond.
func (p PortPlan) Bonded() bool { return len(p.Ibiz0) > 1 }

// Names maps each port's current name to the name of its role: priv0,
// syncN, ibiz0 (or ibiz0pK for the members of the ibiz0 bond), bizN.
func (p PortPlan) Names() map[string]string {
	m := map[string]string{p.Priv0.Name: RolePriv}
	for i, s := range p.Sync {
		m[s.Name] = "sync" + strconv.Itoa(i)
	}
	for i, s := range p.Ibiz0 {
		if p.Bonded() {
			m[s.Name] = RoleIBiz + "p" + strconv.Itoa(i)
		} else {
			m[s.Name] = RoleIBiz
		}
	}
	for i, s := range p.Business {
		m[s.Name] = "biz" + strconv.Itoa(i+1)
	}
	return m
}

// Plan gives each port its role. ports must be in discovery order (as Ports
// returns them). overrides maps a role (priv0, ibiz0, syncN) to the ports,
// by name or MAC address, that take it; priv0 and ibiz0 default to the first
// free ports in order. A port already named for its role (the agent renamed
// it before a restart) is found by that name.
func Plan(ports []Port, overrides map[string][]string) (PortPlan, error) {
	seen := make(map[string]bool, len(ports))
	for _, p := range ports {
		if seen[p.Name] {
			return PortPlan{}, fmt.Errorf("port %s listed twice", p.Name)
		}
		seen[p.Name] = true
	}
	taken := map[string]string{} // port name -> role
	take := func(role string, p Port) error {
		if other, dup := taken[p.Name]; dup {
			return fmt.Errorf("port %s is given two roles: %s and %s", p.Name, other, role)
		}
		taken[p.Name] = role
		return nil
	}
	resolve := func(role string, wants []string) ([]Port, error) {
		var out []Port
		for i, want := range wants {
			p, ok := findPort(ports, want)
			if !ok && role == RoleIBiz && len(wants) > 1 {
				p, ok = findPort(ports, RoleIBiz+"p"+strconv.Itoa(i))
			}
			if !ok && len(wants) == 1 {
				p, ok = findPort(ports, role)
			}
			if !ok {
				return nil, fmt.Errorf("port for %s: no port named %s or with that MAC address (ports: %s)", role, want, portList(ports))
			}
			if err := take(role, p); err != nil {
				return nil, err
			}
			out = append(out, p)
		}
		return out, nil
	}

	var plan PortPlan
	roles := slices.Sorted(func(yield func(string) bool) {
		for r := range overrides {
			if !yield(r) {
				return
			}
		}
	})
	syncs := map[int]Port{}
	for _, role := range roles {
		wants := overrides[role]
		if len(wants) == 0 {
			continue
		}
		switch {
		case role == RolePriv, syncRole.MatchString(role):
			if len(wants) != 1 {
				return PortPlan{}, fmt.Errorf("%s takes one port, not %d", role, len(wants))
			}
		case role == RoleIBiz:
		default:
			return PortPlan{}, fmt.Errorf("unknown port role %q (roles: priv0, ibiz0, sync0..sync9)", role)
		}
		ps, err := resolve(role, wants)
		if err != nil {
			return PortPlan{}, err
		}
		switch {
		case role == RolePriv:
			plan.Priv0 = ps[0]
		case role == RoleIBiz:
			plan.Ibiz0 = ps
		default:
			n, _ := strconv.Atoi(strings.TrimPrefix(role, "sync"))
			syncs[n] = ps[0]
		}
	}
	for n := range len(syncs) {
		p, ok := syncs[n]
		if !ok {
			return PortPlan{}, fmt.Errorf("sync links must be numbered from sync0 without gaps (sync%d is missing)", n)
		}
		plan.Sync = append(plan.Sync, p)
	}

	// Defaults: the first free ports in discovery order, or the ports that
	// already carry the role's name.
	free := func(role string) (Port, bool) {
		if p, ok := findPort(ports, role); ok && taken[p.Name] == "" {
			return p, true
		}
		for _, p := range ports {
			if taken[p.Name] == "" && !strings.HasPrefix(p.Name, RolePriv) && !strings.HasPrefix(p.Name, RoleIBiz) {
				return p, true
			}
		}
		return Port{}, false
	}
	if plan.Priv0.Name == "" {
		p, ok := free(RolePriv)
		if !ok {
			return PortPlan{}, fmt.Errorf("found %d Ethernet port(s) (%s); a PM needs at least 2: %s (to the other PM) and %s (management)",
				len(ports), portList(ports), RolePriv, RoleIBiz)
		}
		take(RolePriv, p)
		plan.Priv0 = p
	}
	if len(plan.Ibiz0) == 0 {
		p, ok := free(RoleIBiz)
		if !ok {
			return PortPlan{}, fmt.Errorf("found %d Ethernet port(s) (%s); a PM needs at least 2: %s (to the other PM) and %s (management)",
				len(ports), portList(ports), RolePriv, RoleIBiz)
		}
		take(RoleIBiz, p)
		plan.Ibiz0 = []Port{p}
	}
	for _, p := range ports {
		if taken[p.Name] == "" {
			plan.Business = append(plan.Business, p)
		}
	}
	return plan, nil
}

// findPort finds the port named want, or with MAC address want in any
// notation net.ParseMAC accepts.
func findPort(ports []Port, want string) (Port, bool) {
	for _, p := range ports {
		if p.Name == want {
			return p, true
		}
	}
	mac, err := net.ParseMAC(want)
	if err != nil {
		return Port{}, false
	}
	for _, p := range ports {
		if slices.Equal(p.MAC, mac) {
			return p, true
		}
	}
	return Port{}, false
}

func portList(ports []Port) string {
	if len(ports) == 0 {
		return "none"
	}
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = p.Name + " " + p.MAC.String()
	}
	return strings.Join(s, ", ")
}
