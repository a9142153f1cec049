package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/dyad-ha/dyad/services/network"
	"github.com/dyad-ha/dyad/services/network/dhcp"
	"github.com/dyad-ha/dyad/services/pmconfig"
	"github.com/dyad-ha/dyad/services/unit"
)

// Netlink is the real Network of a PM, on the kernel's netlink interface.
type Netlink struct {
	M   *network.Manager
	Log *slog.Logger
}

// Setup names the ports by role. Renaming goes through temporary names so
// that no rename ever finds its target name taken by another port.
func (n Netlink) Setup(ctx context.Context, cfg pmconfig.Config) (network.PortPlan, error) {
	ports, err := n.M.Ports(ctx)
	if err != nil {
		return network.PortPlan{}, err
	}
	plan, err := network.Plan(ports, cfg.Ports)
	if err != nil {
		return network.PortPlan{}, err
	}
	names := plan.Names()
	for i, p := range ports {
		if to, ok := names[p.Name]; ok && to != p.Name {
			tmp := fmt.Sprintf("dyadtmp%d", i)
			if err := n.M.Rename(ctx, p.Name, tmp); err != nil {
				return network.PortPlan{}, fmt.Errorf("rename port %s (%s): %w", p.Name, p.MAC, err)
			}
			names[tmp] = to
		}
	}
	for i, p := range ports {
		tmp := fmt.Sprintf("dyadtmp%d", i)
		to, ok := names[tmp]
		if !ok {
			continue
		}
		if err := n.M.Rename(ctx, tmp, to); err != nil {
			return network.PortPlan{}, fmt.Errorf("name port %s (%s) %s: %w", p.Name, p.MAC, to, err)
		}
		n.Log.Info("port", "role", to, "was", p.Name, "mac", p.MAC, "driver", p.Driver, "bus", p.BusAddr)
	}
	return plan, nil
}

// Apply reconciles the kernel network with d.
func (n Netlink) Apply(ctx context.Context, d network.Desired) error {
	ports, err := n.M.Ports(ctx)
	if err != nil {
		return err
	}
	rep, err := n.M.Reconcile(ctx, d, ports)
	for _, c := range rep.Changes {
		n.Log.Info("network change", "change", c)
	}
	return err
}

// Links reads the PM's links.
func (n Netlink) Links(ctx context.Context) ([]unit.Link, error) {
	ls, err := n.M.LinkStates(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]unit.Link, 0, len(ls))
	for _, l := range ls {
		out = append(out, unit.Link{
			Name: l.Name, Kind: l.Kind, Up: l.Up, Carrier: l.Carrier, SpeedMbps: l.SpeedMbps,
			MTU: l.MTU, Master: l.Master, Members: l.Members, ActiveMember: l.ActiveMember,
		})
	}
	return out, nil
}

// HoldMgmt adds the management addresses to ibiz0 and announces them,
// gratuitous ARP for IPv4 and an unsolicited neighbour advertisement for
// IPv6, so that switches and hosts move to this PM at once.
func (n Netlink) HoldMgmt(ctx context.Context, ps ...netip.Prefix) error {
	var errs []error
	for _, p := range ps {
		if err := n.M.EnsureAddr(ctx, network.RoleIBiz, p); err != nil {
			errs = append(errs, err)
			continue
		}
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if p.Addr().Is4() {
			errs = append(errs, n.M.AnnounceIPv4(actx, network.RoleIBiz, p.Addr(), 3))
		} else {
			errs = append(errs, n.M.AnnounceIPv6(actx, network.RoleIBiz, p.Addr(), 3))
		}
		cancel()
	}
	return errors.Join(errs...)
}

// ReleaseMgmt removes the management addresses from ibiz0.
func (n Netlink) ReleaseMgmt(ctx context.Context, ps ...netip.Prefix) error {
	var errs []error
	for _, p := range ps {
		errs = append(errs, n.M.RemoveAddr(ctx, network.RoleIBiz, p))
	}
	return errors.Join(errs...)
}

// DHCP is the real LeaseSource: the DHCP client of package dhcp, in the
// agent's network namespace.
type DHCP struct{}

func (DHCP) Acquire(ctx context.Context, ifname string, clientID []byte, hostname string) (dhcp.Lease, error) {
	return dhcp.Acquire(ctx, ifname, clientID, hostname)
}

func (DHCP) Renew(ctx context.Context, ifname string, l dhcp.Lease, clientID []byte) (dhcp.Lease, error) {
	return dhcp.Renew(ctx, ifname, l, clientID)
}
