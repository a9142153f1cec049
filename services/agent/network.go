package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/dyad-ha/dyad/services/network"
	"github.com/dyad-ha/dyad/services/pmconfig"
)

// Netlink is the real Network of a PM, on the kernel's netlink interface.
type Netlink struct {
	M   *network.Manager
	Log *slog.Logger
}

// Setup names the ports by role, brings them up and adds the PM's own
// addresses: the fixed private address on priv0 and the configured one on
// ibiz0.
func (n Netlink) Setup(ctx context.Context, cfg pmconfig.Config) error {
	ports, err := n.M.Ports(ctx)
	if err != nil {
		return err
	}
	roles, err := network.AssignRoles(ports, cfg.Ports)
	if err != nil {
		return err
	}
	for role, p := range roles {
		if err := n.M.Rename(ctx, p.Name, role); err != nil {
			return fmt.Errorf("name port %s (%s) %s: %w", p.Name, p.MAC, role, err)
		}
		if err := n.M.SetUp(ctx, role); err != nil {
			return err
		}
		n.Log.Info("port", "role", role, "was", p.Name, "mac", p.MAC, "driver", p.Driver, "bus", p.BusAddr)
	}
	if err := n.M.EnsureAddr(ctx, "priv0", pmconfig.Priv0Addr(cfg.Node)); err != nil {
		return err
	}
	if cfg.Ibiz0.IsValid() {
		if err := n.M.EnsureAddr(ctx, "ibiz0", cfg.Ibiz0); err != nil {
			return err
		}
	}
	if cfg.Gateway.IsValid() {
		if err := n.M.EnsureDefaultRoute(ctx, cfg.Gateway); err != nil {
			return err
		}
	}
	return nil
}

// HoldMgmt adds the management address to ibiz0 and announces it with
// gratuitous ARP so switches and hosts move to this PM at once.
func (n Netlink) HoldMgmt(ctx context.Context, p netip.Prefix) error {
	if err := n.M.EnsureAddr(ctx, "ibiz0", p); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return n.M.AnnounceIPv4(ctx, "ibiz0", p.Addr(), 3)
}

// ReleaseMgmt removes the management address from ibiz0.
func (n Netlink) ReleaseMgmt(ctx context.Context, p netip.Prefix) error {
	return n.M.RemoveAddr(ctx, "ibiz0", p)
}
