package agent

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"net/netip"
	"time"

	"github.com/dyad-ha/dyad/services/network"
	"github.com/dyad-ha/dyad/services/network/dhcp"
)

// LeaseSource leases the unit's management address from the site's DHCP
// server (package dhcp on a real PM).
type LeaseSource interface {
	Acquire(ctx context.Context, ifname string, clientID []byte, hostname string) (dhcp.Lease, error)
	Renew(ctx context.Context, ifname string, l dhcp.Lease, clientID []byte) (dhcp.Lease, error)
}

// Bounds of the DHCP exchanges of the primary. An attempt is bounded so
// that a silent server delays neither a step-down nor the next attempt.
const (
	leaseAttempt   = 10 * time.Second
	leaseRetryMin  = time.Second
	leaseRetryMax  = time.Minute
	leaseRenewMin  = time.Second
	dhcpIAID       = 1
	duidTypeUUID   = 4    // RFC 6355
	clientIDType   = 0xff // RFC 4361 §6.1: IAID and DUID follow
	clientIDPrefix = "dyad dhcp client id v1"
)

// dhcpClientID is the unit's DHCP client identifier (option 61). It is
// derived from the unit secret so that both PMs send the same one and the
// server gives the new primary the address the old one held; it reveals
// nothing of the secret. The form is RFC 4361's: type 255, an IAID, then a
// DUID-UUID (RFC 6355) whose 16 bytes are HMAC-SHA256(secret, purpose).
func dhcpClientID(secret []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(clientIDPrefix))
	id := []byte{clientIDType}
	id = binary.BigEndian.AppendUint32(id, dhcpIAID)
	id = binary.BigEndian.AppendUint16(id, duidTypeUUID)
	return append(id, m.Sum(nil)[:16]...)
}

// mgmt4 is the IPv4 management address: the configured one, or with DHCP
// the leased one this PM holds (invalid while it holds none). a.mu is held.
func (a *Agent) mgmt4() netip.Prefix {
	if a.cfg.MgmtDHCP {
		return a.leased
	}
	return a.cfg.Mgmt
}

// mgmtAddrs are the management addresses the primary holds.
func (a *Agent) mgmtAddrs() []netip.Prefix {
	a.mu.Lock()
	p4 := a.mgmt4()
	a.mu.Unlock()
	var ps []netip.Prefix
	if p4.IsValid() {
		ps = append(ps, p4)
	}
	if a.cfg.Mgmt6.IsValid() {
		ps = append(ps, a.cfg.Mgmt6)
	}
	return ps
}

// holdMgmt takes the management addresses and the console on promotion.
// With DHCP it makes one bounded attempt at a lease here and leaves
// retries and renewals to a goroutine that stepDown stops.
func (a *Agent) holdMgmt(ctx context.Context) {
	if !a.cfg.MgmtDHCP {
		if err := a.opt.Net.HoldMgmt(ctx, a.mgmtAddrs()...); err != nil {
			a.log.Error("management address", "addr", a.cfg.Mgmt, "err", err)
		}
		a.openConsole()
		return
	}
	if a.cfg.Mgmt6.IsValid() {
		if err := a.opt.Net.HoldMgmt(ctx, a.cfg.Mgmt6); err != nil {
			a.log.Error("management address", "addr", a.cfg.Mgmt6, "err", err)
		}
	}
	kctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	a.mu.Lock()
	a.leaseStop, a.leaseDone = cancel, done
	a.mu.Unlock()
	l, err := a.acquireLease(kctx)
	held := err == nil
	if held {
		a.takeLease(kctx, l)
	}
	go func() {
		defer close(done)
		a.keepLease(kctx, l, held)
	}()
}

// acquireLease makes one bounded attempt at leasing the management address.
func (a *Agent) acquireLease(ctx context.Context) (dhcp.Lease, error) {
	actx, cancel := context.WithTimeout(ctx, leaseAttempt)
	defer cancel()
	l, err := a.leases.Acquire(actx, network.RoleIBiz, a.clientID, a.cfg.Unit)
	if err != nil {
		a.log.Error("no management address from DHCP; the console stays down until one is leased",
			"link", network.RoleIBiz, "err", err)
		return dhcp.Lease{}, err
	}
	a.log.Info("management address leased", "addr", l.Addr, "server", l.Server, "expiry", l.Expiry)
	return l, nil
}

// keepLease renews lease l at half its remaining time while held, or
// acquires one with back-off while not, until ctx ends.
func (a *Agent) keepLease(ctx context.Context, l dhcp.Lease, held bool) {
	retry := leaseRetryMin
	backOff := func() time.Duration {
		d := retry
		retry = min(2*retry, leaseRetryMax)
		return d
	}
	wait := time.Duration(0)
	if !held {
		wait = backOff()
	}
	for {
		if held {
			if l.Expiry.IsZero() {
				// An infinite lease needs no renewal.
				<-ctx.Done()
				return
			}
			wait = max(time.Until(l.Expiry)/2, leaseRenewMin)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if !held {
			nl, err := a.acquireLease(ctx)
			if err != nil {
				wait = backOff()
				continue
			}
			l, held, retry = nl, true, leaseRetryMin
			a.takeLease(ctx, l)
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, leaseAttempt)
		nl, err := a.leases.Renew(rctx, network.RoleIBiz, l, a.clientID)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			if nl.Addr != l.Addr {
				a.log.Warn("management address changed on renewal", "from", l.Addr, "to", nl.Addr)
			}
			l = nl
			a.takeLease(ctx, l)
		case errors.Is(err, dhcp.ErrNAK) || !time.Now().Before(l.Expiry):
			a.log.Error("management address lost; leasing anew", "addr", l.Addr, "err", err)
			a.dropLease(ctx)
			held, wait = false, 0
		default:
			// The server may be away for a while: the address stays
			// usable until the lease expires, and the next attempt comes
			// at half the time left.
			a.log.Warn("management address not renewed; retrying", "addr", l.Addr, "expiry", l.Expiry, "err", err)
		}
	}
}

// takeLease holds the leased address l.Addr and serves the console on it,
// moving both from any other address held before.
func (a *Agent) takeLease(ctx context.Context, l dhcp.Lease) {
	a.mu.Lock()
	old := a.leased
	a.mu.Unlock()
	if old == l.Addr {
		return
	}
	if err := a.opt.Net.HoldMgmt(ctx, l.Addr); err != nil {
		a.log.Error("management address", "addr", l.Addr, "err", err)
	}
	a.dropLease(ctx)
	a.mu.Lock()
	a.leased = l.Addr
	a.mu.Unlock()
	a.openConsole()
}

// dropLease stops the console and removes the leased address, without
// releasing the lease: the binding is the unit's, kept for the next holder.
func (a *Agent) dropLease(ctx context.Context) {
	a.closeConsole()
	a.mu.Lock()
	old := a.leased
	a.leased = netip.Prefix{}
	a.mu.Unlock()
	if !old.IsValid() {
		return
	}
	if err := a.opt.Net.ReleaseMgmt(ctx, old); err != nil {
		a.log.Error("remove management address", "addr", old, "err", err)
	}
}

// stopLease stops the renewals of a DHCP primary and waits for them.
func (a *Agent) stopLease() {
	a.mu.Lock()
	stop, done := a.leaseStop, a.leaseDone
	a.leaseStop, a.leaseDone = nil, nil
	a.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// openConsole serves the console on the IPv4 management address.
func (a *Agent) openConsole() {
	a.mu.Lock()
	addr := a.mgmt4()
	a.mu.Unlock()
	c, err := a.startConsole(addr.Addr())
	if err != nil {
		a.log.Error("console", "err", err)
		return
	}
	a.mu.Lock()
	a.console = c
	a.mu.Unlock()
}

func (a *Agent) closeConsole() {
	a.mu.Lock()
	c := a.console
	a.console = nil
	a.mu.Unlock()
	if c != nil {
		c.Close()
	}
}
