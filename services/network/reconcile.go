package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/jsimonetti/rtnetlink/v2/driver"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

const (
	// managedAlias is the IFLA_IFALIAS of the links Reconcile creates; it
	// deletes no link without it.
	managedAlias = "dyad:managed"
	// routeProtocol marks the routes Reconcile adds (rtm_protocol; 0x44 is
	// assigned to no routing daemon in rtnetlink.h), so they are
	// recognisable in `ip route` and apart from an identical route someone
	// else added.
	routeProtocol = 0x44
)

// ErrBondingUnsupported is returned (wrapped) when the kernel cannot
// create bonds: the bonding module is neither loaded nor built in.
var ErrBondingUnsupported = errors.New("the kernel has no bonding support (module bonding)")

// Link kinds in LinkState.
const (
	KindPort   = "port"
	KindBond   = "bond"
	KindBridge = "bridge"
)

// Report lists what one Reconcile changed, for operators.
type Report struct {
	Changes []string `json:"changes"`
}

// reconcileState is what Reconcile created, kept in Options.StatePath.
type reconcileState struct {
	Links  []string    `json:"links,omitempty"` // bonds and bridges, by name
	Addrs  []AddrSpec  `json:"addrs,omitempty"`
	Routes []RouteSpec `json:"routes,omitempty"`
}

// Reconcile changes the kernel's links, addresses, routes and resolver
// configuration to d. It refuses an invalid d (see Desired.Validate) and a
// d that would need links it did not create, changing nothing then. It
// removes only what an earlier Reconcile created and d no longer holds:
// bonds and bridges (marked with alias "dyad:managed"), addresses and
// routes (recorded in the state file; routes also carry protocol 0x44).
// On an error part-way the report lists what was changed until then.
func (m *Manager) Reconcile(ctx context.Context, d Desired, ports []Port) (Report, error) {
	if err := d.Validate(ports); err != nil {
		return Report{}, err
	}
	if err := ctx.Err(); err != nil {
		return Report{}, err
	}
	m.reconcileMu.Lock()
	defer m.reconcileMu.Unlock()

	st, err := m.loadState()
	if err != nil {
		return Report{}, err
	}
	r := &reconciler{m: m, ctx: ctx, d: d.withDefaults(), st: st}
	if err := r.refresh(); err != nil {
		return Report{}, err
	}
	if err := r.checkOwnership(); err != nil {
		return Report{}, fmt.Errorf("network configuration not applied: %w", err)
	}
	err = r.run()
	if len(r.changes) > 0 {
		m.log.Info("network reconciled", "changes", r.changes, "err", err)
	}
	return Report{Changes: r.changes}, err
}

type reconciler struct {
	m       *Manager
	ctx     context.Context
	d       Desired
	st      reconcileState
	changes []string
	links   map[string]rtnetlink.LinkMessage
	names   map[uint32]string // index -> name
}

func (r *reconciler) changed(format string, args ...any) {
	r.changes = append(r.changes, fmt.Sprintf(format, args...))
}

// refresh reads the links again after changes to them.
func (r *reconciler) refresh() error {
	msgs, err := r.m.conn.Link.List()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	r.links = make(map[string]rtnetlink.LinkMessage, len(msgs))
	r.names = make(map[uint32]string, len(msgs))
	for _, l := range msgs {
		if l.Attributes != nil {
			r.links[l.Attributes.Name] = l
			r.names[l.Index] = l.Attributes.Name
		}
	}
	return nil
}

// owned reports whether Reconcile created link l: it carries the alias,
// or it is recorded in the state file and has no alias yet (Reconcile
// stopped between creating and marking it).
func (r *reconciler) owned(l rtnetlink.LinkMessage) bool {
	if l.Attributes == nil {
		return false
	}
	if a := l.Attributes.Alias; a != nil && *a != "" {
		return *a == managedAlias
	}
	return slices.Contains(r.st.Links, l.Attributes.Name)
}

func linkKind(l rtnetlink.LinkMessage) string {
	if l.Attributes == nil || l.Attributes.Info == nil {
		return ""
	}
	return l.Attributes.Info.Kind
}

func (r *reconciler) master(l rtnetlink.LinkMessage) string {
	if l.Attributes == nil || l.Attributes.Master == nil || *l.Attributes.Master == 0 {
		return ""
	}
	return r.names[*l.Attributes.Master]
}

// wantMaster maps each enslaved link of d to its bond or bridge.
func (r *reconciler) wantMaster() map[string]string {
	want := map[string]string{}
	for _, b := range r.d.Bonds {
		for _, m := range b.Members {
			want[m] = b.Name
		}
	}
	for _, b := range r.d.Bridges {
		for _, p := range b.Ports {
			want[p] = b.Name
		}
	}
	return want
}

// checkOwnership refuses, before anything changes, a configuration that
// would take over a bond or bridge, or a port of one, that Reconcile did
// not create.
func (r *reconciler) checkOwnership() error {
	var errs []error
	for _, name := range r.createdNames() {
		if l, ok := r.links[name]; ok && !r.owned(l) {
			errs = append(errs, fmt.Errorf("link %s exists and was not created by dyad; not taking it over", name))
		}
	}
	for port, want := range r.wantMaster() {
		l, ok := r.links[port]
		if !ok {
			continue
		}
		cur := r.master(l)
		if cur != "" && cur != want && !r.owned(r.links[cur]) {
			errs = append(errs, fmt.Errorf("%s is enslaved to %s, which dyad did not create; release it first", port, cur))
		}
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}

func (r *reconciler) createdNames() []string {
	var names []string
	for _, b := range r.d.Bonds {
		names = append(names, b.Name)
	}
	for _, b := range r.d.Bridges {
		names = append(names, b.Name)
	}
	return names
}

// run applies the changes in an order that keeps each step valid: bonds
// are created first, so a kernel without bonding fails before anything
// else changes; old routes and addresses go before the links they are on;
// addresses come before the routes through them.
func (r *reconciler) run() error {
	for _, b := range r.d.Bonds {
		if _, ok := r.links[b.Name]; !ok {
			if err := r.createBond(b); err != nil {
				return err
			}
		}
	}
	steps := []func() error{
		r.removeRoutes,
		r.removeAddrs,
		r.removeLinks,
		r.releasePorts,
		r.createBonds,
		r.createBridges,
		r.enslave,
		r.setMTUs,
		r.bringUp,
		r.addAddrs,
		r.addRoutes,
		r.resolver,
	}
	for _, step := range steps {
		if err := r.ctx.Err(); err != nil {
			return err
		}
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// removeLinks deletes the links Reconcile created that d no longer holds,
// or holds as another kind or bond mode (a bond's mode cannot change while
// it has members).
func (r *reconciler) removeLinks() error {
	want := map[string]string{} // name -> kind and mode
	for _, b := range r.d.Bonds {
		want[b.Name] = "bond " + b.Mode
	}
	for _, b := range r.d.Bridges {
		want[b.Name] = "bridge"
	}
	names := slices.Sorted(maps.Keys(r.links))
	removed := false
	for _, name := range names {
		l := r.links[name]
		if !r.owned(l) {
			continue
		}
		have, what := linkKind(l), linkKind(l)+" "+name
		if b, ok := bondInfo(l); ok {
			have += " " + b.Mode.String()
			what += " (" + b.Mode.String() + ")"
		}
		if want[name] == have {
			if a := l.Attributes.Alias; a == nil || *a != managedAlias {
				if err := r.setAlias(l.Index, managedAlias); err != nil {
					return fmt.Errorf("mark %s as created by dyad: %w", what, err)
				}
				r.changed("mark %s as created by dyad", what)
			}
			continue
		}
		if err := r.m.conn.Link.Delete(l.Index); err != nil {
			return fmt.Errorf("delete %s: %w", what, err)
		}
		r.changed("delete %s", what)
		removed = true
	}
	if !removed {
		return nil
	}
	if err := r.forgetLinks(); err != nil {
		return err
	}
	return r.refresh()
}

// forgetLinks drops from the state file the links that are gone.
func (r *reconciler) forgetLinks() error {
	if err := r.refresh(); err != nil {
		return err
	}
	keep := slices.DeleteFunc(slices.Clone(r.st.Links), func(name string) bool {
		_, ok := r.links[name]
		return !ok
	})
	if len(keep) == len(r.st.Links) {
		return nil
	}
	r.st.Links = keep
	return r.m.saveState(r.st)
}

// bondInfo returns the bond attributes of a bond link.
func bondInfo(l rtnetlink.LinkMessage) (*driver.Bond, bool) {
	if linkKind(l) != KindBond {
		return nil, false
	}
	b, ok := l.Attributes.Info.Data.(*driver.Bond)
	return b, ok
}

// releasePorts frees links enslaved to a bond or bridge Reconcile created
// that d does not enslave there.
func (r *reconciler) releasePorts() error {
	want := r.wantMaster()
	names := slices.Sorted(maps.Keys(r.links))
	for _, name := range names {
		l := r.links[name]
		cur := r.master(l)
		if cur == "" || cur == want[name] || !r.owned(r.links[cur]) {
			continue
		}
		if linkKind(l) == "tun" {
			// A VM's tap: the VM runner put it into its network's bridge.
			continue
		}
		if err := r.setMaster(l.Index, 0); err != nil {
			return fmt.Errorf("release %s from %s: %w", name, cur, err)
		}
		r.changed("release %s from %s", name, cur)
	}
	return r.refresh()
}

func (r *reconciler) setMaster(index, master uint32) error {
	return r.m.conn.Link.Set(&rtnetlink.LinkMessage{
		Index:      index,
		Attributes: &rtnetlink.LinkAttributes{Master: &master},
	})
}

func (r *reconciler) createBonds() error {
	for _, b := range r.d.Bonds {
		if _, ok := r.links[b.Name]; !ok {
			if err := r.createBond(b); err != nil {
				return err
			}
		}
	}
	return nil
}

// createBond creates bond b and enslaves its members.
func (r *reconciler) createBond(b BondSpec) error {
	mode := driver.BondModeActiveBackup
	if b.Mode == Bond8023AD {
		mode = driver.BondMode802_3AD
	}
	miimon := uint32(b.MiimonMS)
	err := r.createLink(b.Name, &rtnetlink.LinkInfo{
		Kind: "bond",
		Data: &driver.Bond{Mode: mode, Miimon: &miimon},
	})
	if errors.Is(err, unix.EOPNOTSUPP) {
		err = fmt.Errorf("%w: %w", ErrBondingUnsupported, err)
	}
	if err != nil {
		return fmt.Errorf("create bond %s: %w", b.Name, err)
	}
	for _, m := range b.Members {
		if err := r.enslaveMember(m, b.Name); err != nil {
			return fmt.Errorf("create bond %s: %w", b.Name, err)
		}
	}
	r.changed("create bond %s (%s, link monitoring every %d ms) with %s", b.Name, b.Mode, b.MiimonMS, strings.Join(b.Members, ", "))
	return nil
}

func (r *reconciler) createBridges() error {
	for _, b := range r.d.Bridges {
		if _, ok := r.links[b.Name]; ok {
			continue
		}
		if err := r.createLink(b.Name, &rtnetlink.LinkInfo{Kind: "bridge"}); err != nil {
			return fmt.Errorf("create bridge %s: %w", b.Name, err)
		}
		r.changed("create bridge %s", b.Name)
	}
	return nil
}

// createLink creates a link and marks it as created by Reconcile; its MTU
// is set later, with the others (setMTUs), as enslaving may change it. The
// kernel ignores an alias given at creation, so it is set right after; the
// state file records the link before it exists, so a crash in between
// does not leave a link Reconcile would not recognise as its own. A link
// that cannot be marked is deleted again.
func (r *reconciler) createLink(name string, info *rtnetlink.LinkInfo) error {
	if !slices.Contains(r.st.Links, name) {
		r.st.Links = append(r.st.Links, name)
		if err := r.m.saveState(r.st); err != nil {
			return err
		}
	}
	err := r.m.conn.Link.New(&rtnetlink.LinkMessage{
		Family:     unix.AF_UNSPEC,
		Attributes: &rtnetlink.LinkAttributes{Name: name, Info: info},
	})
	if err != nil {
		return errors.Join(err, r.forgetLinks())
	}
	if err := r.refresh(); err != nil {
		return err
	}
	l, ok := r.links[name]
	if !ok {
		return fmt.Errorf("link %s: %w after creating it", name, ErrLinkNotFound)
	}
	if err := r.setAlias(l.Index, managedAlias); err != nil {
		if delErr := r.m.conn.Link.Delete(l.Index); delErr != nil {
			err = errors.Join(err, fmt.Errorf("delete it again: %w", delErr))
		} else {
			err = errors.Join(err, r.forgetLinks())
		}
		return fmt.Errorf("mark %s as created by dyad: %w", name, err)
	}
	return r.refresh()
}

// linkAttrMessage is a link message with attributes that
// rtnetlink.LinkAttributes does not encode (it decodes IFLA_IFALIAS but
// cannot send it).
type linkAttrMessage struct {
	*rtnetlink.LinkMessage
	attrs func(*netlink.AttributeEncoder) error
}

func (a linkAttrMessage) MarshalBinary() ([]byte, error) {
	b, err := a.LinkMessage.MarshalBinary()
	if err != nil {
		return nil, err
	}
	ae := netlink.NewAttributeEncoder()
	if err := a.attrs(ae); err != nil {
		return nil, err
	}
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	return append(b, attrs...), nil
}

func (m *Manager) setLinkAttrs(index uint32, attrs func(*netlink.AttributeEncoder) error) error {
	_, err := m.conn.Execute(linkAttrMessage{&rtnetlink.LinkMessage{Index: index}, attrs},
		unix.RTM_NEWLINK, netlink.Request|netlink.Acknowledge)
	return err
}

func (r *reconciler) setAlias(index uint32, alias string) error {
	return r.m.setLinkAttrs(index, func(ae *netlink.AttributeEncoder) error {
		ae.Bytes(unix.IFLA_IFALIAS, []byte(alias))
		return nil
	})
}

// ipv4DevconfPromoteSecondaries is IPV4_DEVCONF_PROMOTE_SECONDARIES of
// linux/ip.h, which x/sys/unix lacks.
const ipv4DevconfPromoteSecondaries = 20

// promoteSecondaries sets net.ipv4.conf.<link>.promote_secondaries: without
// it, removing the first IPv4 address of a subnet from a link also removes
// the other addresses of that subnet, such as the management IP the agent
// holds next to the PM's own address.
func (m *Manager) promoteSecondaries(index uint32) error {
	return m.setLinkAttrs(index, func(ae *netlink.AttributeEncoder) error {
		ae.Nested(unix.IFLA_AF_SPEC, func(af *netlink.AttributeEncoder) error {
			af.Nested(unix.AF_INET, func(inet *netlink.AttributeEncoder) error {
				inet.Nested(unix.IFLA_INET_CONF, func(conf *netlink.AttributeEncoder) error {
					conf.Uint32(ipv4DevconfPromoteSecondaries, 1)
					return nil
				})
				return nil
			})
			return nil
		})
		return nil
	})
}

// enslave puts the members of existing bonds and the ports of bridges
// under their master.
func (r *reconciler) enslave() error {
	for _, b := range r.d.Bonds {
		bond := r.links[b.Name]
		if bd, ok := bondInfo(bond); ok && (bd.Miimon == nil || *bd.Miimon != uint32(b.MiimonMS)) {
			miimon := uint32(b.MiimonMS)
			err := r.m.conn.Link.Set(&rtnetlink.LinkMessage{
				Index: bond.Index,
				Attributes: &rtnetlink.LinkAttributes{Info: &rtnetlink.LinkInfo{
					Kind: "bond",
					// BondModeUnknown leaves the mode out: the kernel
					// refuses a mode, even the same one, while the bond
					// has members.
					Data: &driver.Bond{Mode: driver.BondModeUnknown, Miimon: &miimon},
				}},
			})
			if err != nil {
				return fmt.Errorf("set link monitoring of bond %s to %d ms: %w", b.Name, b.MiimonMS, err)
			}
			r.changed("set link monitoring of bond %s to every %d ms", b.Name, b.MiimonMS)
		}
		for _, m := range b.Members {
			if r.master(r.links[m]) == b.Name {
				continue
			}
			if err := r.enslaveMember(m, b.Name); err != nil {
				return err
			}
			r.changed("enslave %s to bond %s", m, b.Name)
		}
	}
	for _, b := range r.d.Bridges {
		for _, p := range b.Ports {
			l, ok := r.links[p]
			if !ok {
				return fmt.Errorf("enslave %s to bridge %s: %w", p, b.Name, ErrLinkNotFound)
			}
			if r.master(l) == b.Name {
				continue
			}
			if err := r.setMaster(l.Index, r.links[b.Name].Index); err != nil {
				return fmt.Errorf("enslave %s to bridge %s: %w", p, b.Name, err)
			}
			r.changed("enslave %s to bridge %s", p, b.Name)
		}
	}
	return r.refresh()
}

// enslaveMember makes port a member of bond: the kernel enslaves only
// ports that are down, so an up port is taken down and brought back up.
func (r *reconciler) enslaveMember(port, bond string) error {
	l, ok := r.links[port]
	if !ok {
		return fmt.Errorf("enslave %s to bond %s: port %w", port, bond, ErrLinkNotFound)
	}
	if l.Flags&unix.IFF_UP != 0 {
		if err := r.m.setFlag(l.Index, unix.IFF_UP, false); err != nil {
			return fmt.Errorf("enslave %s to bond %s: take it down: %w", port, bond, err)
		}
	}
	err := r.setMaster(l.Index, r.links[bond].Index)
	if err != nil {
		err = fmt.Errorf("enslave %s to bond %s: %w", port, bond, err)
	}
	// Up again even when enslaving failed: a port left down looks like a
	// cable fault.
	if upErr := r.m.setFlag(l.Index, unix.IFF_UP, true); upErr != nil {
		err = errors.Join(err, fmt.Errorf("bring %s up after enslaving: %w", port, upErr))
	}
	if err != nil {
		return err
	}
	return r.refresh()
}

func (r *reconciler) setMTUs() error {
	type mtuOf struct {
		name string
		mtu  int
	}
	// Ports before the bonds and bridges over them.
	var want []mtuOf
	for _, l := range r.d.Links {
		want = append(want, mtuOf{l.Name, l.MTU})
	}
	for _, b := range r.d.Bonds {
		want = append(want, mtuOf{b.Name, b.MTU})
	}
	for _, b := range r.d.Bridges {
		want = append(want, mtuOf{b.Name, b.MTU})
	}
	for _, w := range want {
		l, ok := r.links[w.name]
		if w.mtu == 0 || !ok || l.Attributes.MTU == uint32(w.mtu) {
			continue
		}
		err := r.m.conn.Link.Set(&rtnetlink.LinkMessage{
			Index:      l.Index,
			Attributes: &rtnetlink.LinkAttributes{MTU: uint32(w.mtu)},
		})
		if err != nil {
			return fmt.Errorf("set MTU of %s to %d: %w", w.name, w.mtu, err)
		}
		r.changed("set MTU of %s to %d (was %d)", w.name, w.mtu, l.Attributes.MTU)
	}
	return r.refresh()
}

// bringUp brings up every link d names.
func (r *reconciler) bringUp() error {
	var names []string
	for _, l := range r.d.Links {
		names = append(names, l.Name)
	}
	for _, b := range r.d.Bonds {
		names = append(names, b.Members...)
		names = append(names, b.Name)
	}
	for _, b := range r.d.Bridges {
		names = append(names, b.Ports...)
		names = append(names, b.Name)
	}
	for _, a := range r.d.Addrs {
		names = append(names, a.Link)
	}
	for _, rt := range r.d.Routes {
		if rt.Link != "" {
			names = append(names, rt.Link)
		}
	}
	done := map[string]bool{}
	for _, name := range names {
		if done[name] {
			continue
		}
		done[name] = true
		l, ok := r.links[name]
		if !ok {
			return fmt.Errorf("bring %s up: %w", name, ErrLinkNotFound)
		}
		if l.Flags&unix.IFF_UP != 0 {
			continue
		}
		if err := r.m.setFlag(l.Index, unix.IFF_UP, true); err != nil {
			return fmt.Errorf("bring %s up: %w", name, err)
		}
		r.changed("bring %s up", name)
	}
	return r.refresh()
}

// removeAddrs removes the addresses Reconcile added that d no longer
// holds.
func (r *reconciler) removeAddrs() error {
	var keep []AddrSpec
	for i, a := range r.st.Addrs {
		if slices.Contains(r.d.Addrs, a) {
			keep = append(keep, a)
			continue
		}
		if err := r.removeAddr(a); err != nil {
			r.st.Addrs = append(keep, r.st.Addrs[i:]...)
			return err
		}
	}
	if len(keep) == len(r.st.Addrs) {
		return nil
	}
	r.st.Addrs = keep
	return r.m.saveState(r.st)
}

func (r *reconciler) removeAddr(a AddrSpec) error {
	index, addrs, err := r.m.addresses(a.Link)
	if errors.Is(err, ErrLinkNotFound) {
		return nil // gone with its link
	}
	if err != nil {
		return fmt.Errorf("remove %s from %s: %w", a.Prefix, a.Link, err)
	}
	if !slices.ContainsFunc(addrs, func(x address) bool { return x.prefix == a.Prefix }) {
		return nil
	}
	if a.Prefix.Addr().Is4() {
		if err := r.m.promoteSecondaries(index); err != nil {
			return fmt.Errorf("remove %s from %s: keep the link's other addresses of the subnet: %w", a.Prefix, a.Link, err)
		}
	}
	err = r.m.conn.Address.Delete(addressMessage(index, a.Prefix))
	if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("remove %s from %s: %w", a.Prefix, a.Link, err)
	}
	r.changed("remove %s from %s", a.Prefix, a.Link)
	return nil
}

// addAddrs adds the addresses of d that are missing. Each is recorded in
// the state file before it is added, so a crash in between cannot leave
// an address nobody will remove; one already there is someone else's and
// is not recorded.
func (r *reconciler) addAddrs() error {
	for _, a := range r.d.Addrs {
		index, addrs, err := r.m.addresses(a.Link)
		if err != nil {
			return fmt.Errorf("add %s to %s: %w", a.Prefix, a.Link, err)
		}
		if slices.ContainsFunc(addrs, func(x address) bool { return x.prefix == a.Prefix }) {
			continue
		}
		if !slices.Contains(r.st.Addrs, a) {
			r.st.Addrs = append(r.st.Addrs, a)
			if err := r.m.saveState(r.st); err != nil {
				return err
			}
		}
		if err := r.m.conn.Address.New(addressMessage(index, a.Prefix)); err != nil {
			return fmt.Errorf("add %s to %s: %w", a.Prefix, a.Link, err)
		}
		r.changed("add %s to %s", a.Prefix, a.Link)
	}
	return nil
}

// ourRoutes lists the kernel's routes in the main table that carry
// routeProtocol.
func (r *reconciler) ourRoutes() ([]rtnetlink.RouteMessage, error) {
	all, err := r.m.conn.Route.List()
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	var out []rtnetlink.RouteMessage
	for _, rt := range all {
		table := uint32(rt.Table)
		if rt.Attributes.Table != 0 {
			table = rt.Attributes.Table
		}
		if rt.Protocol == routeProtocol && table == unix.RT_TABLE_MAIN {
			out = append(out, rt)
		}
	}
	return out, nil
}

// routeMatches reports whether kernel route k is spec.
func (r *reconciler) routeMatches(k rtnetlink.RouteMessage, spec RouteSpec) bool {
	dst := spec.Dst
	if k.Family != routeFamily(dst) || int(k.DstLength) != dst.Bits() {
		return false
	}
	if dst.Bits() > 0 {
		kdst, ok := netip.AddrFromSlice(k.Attributes.Dst)
		if !ok || kdst.Unmap() != dst.Addr() {
			return false
		}
	}
	kgw, _ := netip.AddrFromSlice(k.Attributes.Gateway)
	if kgw.Unmap() != spec.Gateway {
		return false
	}
	return spec.Link == "" || r.names[k.Attributes.OutIface] == spec.Link
}

func routeFamily(dst netip.Prefix) uint8 {
	if dst.Addr().Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// removeRoutes removes the routes Reconcile added (recorded in the state
// file and still carrying routeProtocol) that d no longer holds.
func (r *reconciler) removeRoutes() error {
	kernel, err := r.ourRoutes()
	if err != nil {
		return err
	}
	var keep []RouteSpec
	for i, spec := range r.st.Routes {
		if slices.Contains(r.d.Routes, spec) {
			keep = append(keep, spec)
			continue
		}
		for _, k := range kernel {
			if !r.routeMatches(k, spec) {
				continue
			}
			if err := r.m.conn.Route.Delete(&k); err != nil && !errors.Is(err, unix.ESRCH) {
				r.st.Routes = append(keep, r.st.Routes[i:]...)
				return fmt.Errorf("remove route %s: %w", spec, err)
			}
			r.changed("remove route %s", spec)
		}
	}
	if len(keep) == len(r.st.Routes) {
		return nil
	}
	r.st.Routes = keep
	return r.m.saveState(r.st)
}

// addRoutes adds the routes of d that are missing, recording each in the
// state file first.
func (r *reconciler) addRoutes() error {
	kernel, err := r.ourRoutes()
	if err != nil {
		return err
	}
	for _, spec := range r.d.Routes {
		if slices.ContainsFunc(kernel, func(k rtnetlink.RouteMessage) bool { return r.routeMatches(k, spec) }) {
			continue
		}
		var oif uint32
		if spec.Link != "" {
			l, ok := r.links[spec.Link]
			if !ok {
				return fmt.Errorf("add route %s: %w", spec, ErrLinkNotFound)
			}
			oif = l.Index
		}
		if !slices.Contains(r.st.Routes, spec) {
			r.st.Routes = append(r.st.Routes, spec)
			if err := r.m.saveState(r.st); err != nil {
				return err
			}
		}
		err := r.m.conn.Route.Add(routeMessage(spec, oif))
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add route %s: a route to %s exists that dyad did not add; remove it or drop this route from the configuration: %w", spec, spec.Dst, err)
		}
		if err != nil {
			return fmt.Errorf("add route %s: %w", spec, err)
		}
		r.changed("add route %s", spec)
	}
	return nil
}

func routeMessage(spec RouteSpec, oif uint32) *rtnetlink.RouteMessage {
	msg := &rtnetlink.RouteMessage{
		Family:     routeFamily(spec.Dst),
		DstLength:  uint8(spec.Dst.Bits()),
		Table:      unix.RT_TABLE_MAIN,
		Protocol:   routeProtocol,
		Scope:      unix.RT_SCOPE_UNIVERSE,
		Type:       unix.RTN_UNICAST,
		Attributes: rtnetlink.RouteAttributes{OutIface: oif},
	}
	if spec.Dst.Bits() > 0 {
		msg.Attributes.Dst = net.IP(spec.Dst.Addr().AsSlice())
	}
	if spec.Gateway.IsValid() {
		msg.Attributes.Gateway = net.IP(spec.Gateway.AsSlice())
	} else {
		msg.Scope = unix.RT_SCOPE_LINK
	}
	return msg
}

func (r *reconciler) resolver() error {
	changed, err := r.m.syncResolvConf(r.d.DNS, r.d.Search)
	if err != nil {
		return err
	}
	if changed {
		r.changed("write %s", r.m.resolvConf)
	}
	return nil
}

// loadState reads the state file; a missing file means Reconcile has
// created nothing yet.
func (m *Manager) loadState() (reconcileState, error) {
	var st reconcileState
	b, err := os.ReadFile(m.statePath)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("read network state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		// Without the file Reconcile only forgets what it may remove;
		// refusing to run would leave the PM without its network.
		m.log.Warn("network state file unreadable; addresses and routes recorded in it will not be removed",
			"path", m.statePath, "err", err)
		return reconcileState{}, nil
	}
	return st, nil
}

func (m *Manager) saveState(st reconcileState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode network state: %w", err)
	}
	if err := writeFileAtomic(m.statePath, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save network state: %w", err)
	}
	return nil
}

// LinkState is the state of a port, bond or bridge for the API.
type LinkState struct {
	Name      string `json:"name"`
	Kind      string `json:"kind"` // KindPort, KindBond or KindBridge
	Up        bool   `json:"up"`
	Carrier   bool   `json:"carrier"`
	SpeedMbps int    `json:"speed_mbps"` // 0 when unknown
	MTU       int    `json:"mtu"`
	Master    string `json:"master,omitempty"` // the bond or bridge it is enslaved to
	// Members are the links enslaved to a bond or bridge, by name.
	Members []string `json:"members,omitempty"`
	// ActiveMember is the member an active-backup bond sends through.
	ActiveMember string `json:"active_member,omitempty"`
}

// LinkStates reports the ports (as Ports finds them), bonds and bridges:
// ports first in Ports order, then bonds and bridges by name.
func (m *Manager) LinkStates(ctx context.Context) ([]LinkState, error) {
	ports, err := m.Ports(ctx)
	if err != nil {
		return nil, err
	}
	msgs, err := m.conn.Link.List()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	byName := map[string]rtnetlink.LinkMessage{}
	names := map[uint32]string{}
	members := map[uint32][]string{}
	for _, l := range msgs {
		if l.Attributes == nil {
			continue
		}
		byName[l.Attributes.Name] = l
		names[l.Index] = l.Attributes.Name
		if l.Attributes.Master != nil && *l.Attributes.Master != 0 {
			members[*l.Attributes.Master] = append(members[*l.Attributes.Master], l.Attributes.Name)
		}
	}
	state := func(l rtnetlink.LinkMessage, kind string) LinkState {
		s := LinkState{
			Name:      l.Attributes.Name,
			Kind:      kind,
			Up:        l.Flags&unix.IFF_UP != 0,
			Carrier:   l.Flags&unix.IFF_LOWER_UP != 0,
			SpeedMbps: m.speed(l.Attributes.Name),
			MTU:       int(l.Attributes.MTU),
			Members:   slices.Sorted(slices.Values(members[l.Index])),
		}
		if l.Attributes.Master != nil {
			s.Master = names[*l.Attributes.Master]
		}
		return s
	}
	var out []LinkState
	for _, p := range ports {
		if l, ok := byName[p.Name]; ok {
			out = append(out, state(l, KindPort))
		}
	}
	var masters []LinkState
	for _, l := range msgs {
		if l.Attributes == nil {
			continue
		}
		switch kind := linkKind(l); kind {
		case KindBond, KindBridge:
			s := state(l, kind)
			if kind == KindBond {
				s.ActiveMember = m.activeSlave(s.Name)
			}
			masters = append(masters, s)
		}
	}
	slices.SortFunc(masters, func(a, b LinkState) int { return strings.Compare(a.Name, b.Name) })
	return append(out, masters...), nil
}

// activeSlave reads the active member of a bond from sysfs; "" when the
// bond has none or its mode has no such notion.
func (m *Manager) activeSlave(bond string) string {
	b, err := os.ReadFile(filepath.Join(m.sysClassNet, bond, "bonding", "active_slave"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
