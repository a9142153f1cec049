package network

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
)

// Role names. The first port (onboard, lowest bus address) is the private
// PM-to-PM link, the second carries management; the others are business
// networks numbered from 1.
const (
	RolePriv = "priv0"
	RoleIBiz = "ibiz0"
)

// Roles returns the role names for n ports in assignment order:
// priv0, ibiz0, biz1 ... biz(n-2).
func Roles(n int) []string {
	roles := []string{RolePriv, RoleIBiz}
	for i := 1; i <= n-2; i++ {
		roles = append(roles, "biz"+strconv.Itoa(i))
	}
	return roles[:min(n, len(roles))]
}

// AssignRoles gives each port a role name. ports must be in discovery
// order (as Ports returns them). overrides maps a role to the port name or
// MAC address that must take it; the other roles go to the remaining ports
// in order.
func AssignRoles(ports []Port, overrides map[string]string) (map[string]Port, error) {
	if len(ports) < 2 {
		return nil, fmt.Errorf("found %d Ethernet port(s) (%s); a PM needs at least 2: %s (to the other PM) and %s (management)",
			len(ports), portList(ports), RolePriv, RoleIBiz)
	}
	seen := make(map[string]bool, len(ports))
	for _, p := range ports {
		if seen[p.Name] {
			return nil, fmt.Errorf("port %s listed twice", p.Name)
		}
		seen[p.Name] = true
	}
	roles := Roles(len(ports))

	assigned := make(map[string]Port, len(ports))
	taken := make(map[string]string, len(ports)) // port name -> role
	overridden := make([]string, 0, len(overrides))
	for role := range overrides {
		overridden = append(overridden, role)
	}
	slices.Sort(overridden)
	for _, role := range overridden {
		want := overrides[role]
		if !slices.Contains(roles, role) {
			return nil, fmt.Errorf("port override %s=%s: no role %q with %d ports (roles: %s)",
				role, want, role, len(ports), strings.Join(roles, ", "))
		}
		p, ok := findPort(ports, want)
		if !ok {
			return nil, fmt.Errorf("port override %s=%s: no port with that name or MAC address (ports: %s)",
				role, want, portList(ports))
		}
		if other, dup := taken[p.Name]; dup {
			return nil, fmt.Errorf("port overrides give port %s two roles: %s and %s", p.Name, other, role)
		}
		taken[p.Name] = role
		assigned[role] = p
	}

	next := 0
	for _, role := range roles {
		if _, ok := assigned[role]; ok {
			continue
		}
		for taken[ports[next].Name] != "" {
			next++
		}
		taken[ports[next].Name] = role
		assigned[role] = ports[next]
	}
	return assigned, nil
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
