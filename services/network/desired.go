package network

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
)

// Bond modes the reconciler configures.
const (
	BondActiveBackup = "active-backup"
	Bond8023AD       = "802.3ad"
)

const (
	defaultMiimonMS = 100
	minMTU          = 68   // the IPv4 minimum; the kernel refuses less
	maxMTU          = 9000 // the usual jumbo frame limit of NICs and switches
	// maxNameservers is resolv.conf's MAXNS: the resolver ignores the rest.
	maxNameservers = 3
)

// Desired is the network configuration of a PM as the unit database holds
// it. Every link it names is brought up.
type Desired struct {
	Links   []LinkSpec   `json:"links,omitempty"`
	Bonds   []BondSpec   `json:"bonds,omitempty"`
	Bridges []BridgeSpec `json:"bridges,omitempty"`
	Addrs   []AddrSpec   `json:"addrs,omitempty"`
	Routes  []RouteSpec  `json:"routes,omitempty"`
	DNS     []netip.Addr `json:"dns,omitempty"`
	Search  []string     `json:"search,omitempty"`
}

// LinkSpec is a physical port to bring up.
type LinkSpec struct {
	Name string `json:"name"`
	MTU  int    `json:"mtu,omitempty"` // 0 leaves the MTU as it is
}

// BondSpec is a bond of physical ports.
type BondSpec struct {
	Name    string   `json:"name"`
	Members []string `json:"members"`
	// Mode is BondActiveBackup (the default when empty) or Bond8023AD.
	Mode     string `json:"mode,omitempty"`
	MiimonMS int    `json:"miimon_ms,omitempty"` // link monitoring interval; 0 means 100
	MTU      int    `json:"mtu,omitempty"`
}

// BridgeSpec is a bridge (of a shared network) with the ports or bonds
// enslaved to it.
type BridgeSpec struct {
	Name  string   `json:"name"`
	Ports []string `json:"ports"`
	MTU   int      `json:"mtu,omitempty"`
}

// AddrSpec is an interface address such as 10.99.0.1/24 on a link.
type AddrSpec struct {
	Link   string       `json:"link"`
	Prefix netip.Prefix `json:"prefix"`
}

// RouteSpec is a route in the main table. Dst 0.0.0.0/0 (or ::/0) is the
// default route. Without Gateway the destination is on Link.
type RouteSpec struct {
	Dst     netip.Prefix `json:"dst"`
	Gateway netip.Addr   `json:"gateway,omitzero"`
	Link    string       `json:"link,omitempty"`
}

func (r RouteSpec) String() string {
	s := r.Dst.String()
	if r.Dst.Bits() == 0 {
		s = "default"
	}
	if r.Gateway.IsValid() {
		s += " via " + r.Gateway.String()
	}
	if r.Link != "" {
		s += " dev " + r.Link
	}
	return s
}

// createdName is stricter than the kernel (validLinkName) for the links
// the reconciler creates, so their names are safe in sysfs paths, logs
// and shell commands an operator types.
var createdName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// searchLabel is one label of a DNS search domain.
var searchLabel = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$`)

// withDefaults returns a copy of d with the defaults filled in and
// addresses unmapped; d is left alone (its slices are the caller's).
func (d Desired) withDefaults() Desired {
	d.Bonds = slices.Clone(d.Bonds)
	for i := range d.Bonds {
		d.Bonds[i].Mode = bondMode(d.Bonds[i].Mode)
		if d.Bonds[i].MiimonMS == 0 {
			d.Bonds[i].MiimonMS = defaultMiimonMS
		}
	}
	d.Addrs = slices.Clone(d.Addrs)
	for i, a := range d.Addrs {
		d.Addrs[i].Prefix = netip.PrefixFrom(a.Prefix.Addr().Unmap(), a.Prefix.Bits())
	}
	d.Routes = slices.Clone(d.Routes)
	for i, r := range d.Routes {
		d.Routes[i].Gateway = r.Gateway.Unmap()
	}
	return d
}

func bondMode(mode string) string {
	if mode == "" {
		return BondActiveBackup
	}
	return mode
}

// Validate checks d against the PM's ports and returns every problem
// found, joined, or nil.
func (d Desired) Validate(ports []Port) error {
	v := validation{ports: map[string]bool{}, defined: map[string]string{}, owner: map[string]string{}}
	for _, p := range ports {
		v.ports[p.Name] = true
		v.portNames = append(v.portNames, p.Name)
	}
	slices.Sort(v.portNames)
	d = d.withDefaults()

	for _, b := range d.Bonds {
		v.define("bond", b.Name)
	}
	for _, b := range d.Bridges {
		v.define("bridge", b.Name)
	}
	for _, b := range d.Bonds {
		what := "bond " + b.Name
		if b.Mode != BondActiveBackup && b.Mode != Bond8023AD {
			v.fail("%s: mode %q, want %s or %s", what, b.Mode, BondActiveBackup, Bond8023AD)
		}
		if b.MiimonMS < 0 {
			v.fail("%s: link monitoring interval %d ms is negative", what, b.MiimonMS)
		}
		v.mtu(what, b.MTU)
		if len(b.Members) < 2 {
			v.fail("%s has %d member(s), want at least 2 (a bond of one port protects nothing)", what, len(b.Members))
		}
		for _, m := range b.Members {
			if v.known(what+": member", m, false) {
				v.use(m, what)
			}
		}
	}
	for _, b := range d.Bridges {
		what := "bridge " + b.Name
		v.mtu(what, b.MTU)
		for _, p := range b.Ports {
			if v.defined[p] == "bridge" {
				v.fail("%s: port %s is a bridge; a bridge cannot be enslaved to another", what, p)
				continue
			}
			if v.known(what+": port", p, true) {
				v.use(p, what)
			}
		}
	}
	listed := map[string]bool{}
	for _, l := range d.Links {
		what := "link " + l.Name
		if !v.known("link", l.Name, false) {
			continue
		}
		if listed[l.Name] {
			v.fail("%s is listed twice", what)
		}
		listed[l.Name] = true
		v.mtu(what, l.MTU)
		if owner := v.owner[l.Name]; l.MTU != 0 && strings.HasPrefix(owner, "bond ") {
			v.fail("%s: its MTU is set by %s, of which it is a member", what, owner)
		}
	}

	// ip -> link holding it, to find an address given twice
	holder := map[netip.Addr]string{}
	var subnets []AddrSpec
	for _, a := range d.Addrs {
		p, err := validPrefix(a.Prefix)
		if err != nil {
			v.fail("address on %s: %v", a.Link, err)
			continue
		}
		if v.known(fmt.Sprintf("address %s:", p), a.Link, true) {
			v.notEnslaved(fmt.Sprintf("address %s", p), a.Link)
		}
		if prev, dup := holder[p.Addr()]; dup {
			v.fail("duplicate address %s: given on %s and on %s", p.Addr(), prev, a.Link)
			continue
		}
		holder[p.Addr()] = a.Link
		subnets = append(subnets, AddrSpec{Link: a.Link, Prefix: p})
	}

	routes := map[netip.Prefix]bool{}
	for _, r := range d.Routes {
		v.route(r, subnets, routes)
	}

	seenDNS := map[netip.Addr]bool{}
	for _, s := range d.DNS {
		s = s.Unmap()
		switch {
		case !s.IsValid() || s.IsUnspecified() || s.IsMulticast():
			v.fail("name server %q is not a unicast address", s)
		case s.Zone() != "":
			v.fail("name server %s: a zone is not allowed", s)
		case seenDNS[s]:
			v.fail("name server %s is listed twice", s)
		}
		seenDNS[s] = true
	}
	if len(d.DNS) > maxNameservers {
		v.fail("%d name servers, at most %d allowed (the resolver ignores the rest)", len(d.DNS), maxNameservers)
	}
	seenSearch := map[string]bool{}
	for _, s := range d.Search {
		if err := validSearchDomain(s); err != nil {
			v.fail("search domain %q: %v", s, err)
		} else if seenSearch[strings.ToLower(s)] {
			v.fail("search domain %s is listed twice", s)
		}
		seenSearch[strings.ToLower(s)] = true
	}

	if len(v.errs) == 0 {
		return nil
	}
	return fmt.Errorf("invalid network configuration: %w", errors.Join(v.errs...))
}

// validation collects the problems of one Desired.
type validation struct {
	ports     map[string]bool
	portNames []string
	defined   map[string]string // bond or bridge name -> "bond"/"bridge"
	owner     map[string]string // enslaved link -> "bond X"/"bridge Y"
	errs      []error
}

func (v *validation) fail(format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf(format, args...))
}

func (v *validation) define(kind, name string) {
	what := kind + " " + name
	if err := validLinkName(name); err != nil {
		v.fail("%s: %v", what, err)
		return
	}
	if !createdName.MatchString(name) {
		v.fail("%s: name %q may only hold letters, digits, '.', '_' and '-', starting with a letter or digit", what, name)
	}
	if v.ports[name] {
		v.fail("%s: a port already has that name", what)
	}
	if prev, dup := v.defined[name]; dup {
		v.fail("%s: the name is also given to a %s", what, prev)
		return
	}
	v.defined[name] = kind
}

// known reports whether name is a port (or, with orDefined, a bond or
// bridge of this configuration), recording a problem when it is not.
func (v *validation) known(what, name string, orDefined bool) bool {
	if err := validLinkName(name); err != nil {
		v.fail("%s %v", what, err)
		return false
	}
	if v.ports[name] {
		return true
	}
	if kind, ok := v.defined[name]; ok {
		if orDefined {
			return true
		}
		v.fail("%s %s is a %s, not a port", what, name, kind)
		return false
	}
	v.fail("%s %s: unknown port (ports: %s)", what, name, strings.Join(orNone(v.portNames), ", "))
	return false
}

func orNone(names []string) []string {
	if len(names) == 0 {
		return []string{"none"}
	}
	return names
}

func (v *validation) use(name, by string) {
	if prev, dup := v.owner[name]; dup {
		v.fail("%s is used twice: by %s and by %s", name, prev, by)
		return
	}
	v.owner[name] = by
}

func (v *validation) notEnslaved(what, link string) {
	if owner, ok := v.owner[link]; ok {
		v.fail("%s on %s, which is enslaved to %s: put it on %s instead",
			what, link, owner, strings.SplitN(owner, " ", 2)[1])
	}
}

func (v *validation) mtu(what string, mtu int) {
	if mtu != 0 && (mtu < minMTU || mtu > maxMTU) {
		v.fail("%s: MTU %d out of range %d..%d", what, mtu, minMTU, maxMTU)
	}
}

func (v *validation) route(r RouteSpec, subnets []AddrSpec, seen map[netip.Prefix]bool) {
	dst := r.Dst
	if !dst.IsValid() {
		v.fail("route %s: invalid destination", r)
		return
	}
	what := "route " + r.String()
	if dst.Addr().Is4In6() {
		v.fail("%s: write the IPv4 destination as IPv4", what)
		return
	}
	if dst != dst.Masked() {
		v.fail("%s: destination %s is not a network address (want %s)", what, dst, dst.Masked())
	}
	if seen[dst.Masked()] {
		v.fail("%s: a route to %s is given twice", what, dst.Masked())
	}
	seen[dst.Masked()] = true
	if r.Link != "" && v.known(what+": link", r.Link, true) {
		v.notEnslaved(what, r.Link)
	}
	gw := r.Gateway
	if !gw.IsValid() {
		if r.Link == "" {
			v.fail("%s: needs a gateway or a link", what)
		}
		return
	}
	if gw.IsUnspecified() || gw.IsMulticast() || gw.Zone() != "" {
		v.fail("%s: gateway %s is not a unicast address", what, gw)
		return
	}
	if gw.Is4() != dst.Addr().Is4() {
		v.fail("%s: gateway and destination are of different address families", what)
		return
	}
	for _, s := range subnets {
		if (r.Link == "" || s.Link == r.Link) && s.Prefix.Masked().Contains(gw) {
			if s.Prefix.Addr() == gw {
				v.fail("%s: the gateway is this PM's own address on %s", what, s.Link)
			}
			return
		}
	}
	where := "any subnet of the configured addresses"
	if r.Link != "" {
		where = "a subnet configured on " + r.Link
	}
	v.fail("%s: gateway %s is not on %s", what, gw, where)
}

func validSearchDomain(s string) error {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return errors.New("want a domain name of 1 to 253 characters")
	}
	for l := range strings.SplitSeq(s, ".") {
		if !searchLabel.MatchString(l) {
			return fmt.Errorf("label %q: want 1 to 63 letters, digits, '-' or '_', not starting or ending with '-'", l)
		}
	}
	return nil
}
