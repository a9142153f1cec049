package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/services/network"
	"github.com/dyad-ha/dyad/services/network/dhcp"
	"github.com/dyad-ha/dyad/services/pmconfig"
	"github.com/dyad-ha/dyad/services/unit"
)

// addrNet records the management addresses the agent holds.
type addrNet struct {
	mu   sync.Mutex
	held []netip.Prefix
}

func (n *addrNet) Setup(context.Context, pmconfig.Config) (network.PortPlan, error) {
	return network.PortPlan{}, nil
}

func (n *addrNet) Apply(context.Context, network.Desired) error { return nil }

func (n *addrNet) Links(context.Context) ([]unit.Link, error) { return nil, nil }

func (n *addrNet) HoldMgmt(_ context.Context, ps ...netip.Prefix) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range ps {
		if !slices.Contains(n.held, p) {
			n.held = append(n.held, p)
		}
	}
	return nil
}

func (n *addrNet) ReleaseMgmt(_ context.Context, ps ...netip.Prefix) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.held = slices.DeleteFunc(n.held, func(p netip.Prefix) bool { return slices.Contains(ps, p) })
	return nil
}

func (n *addrNet) addrs() []netip.Prefix {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.held)
}

// fakeLeases answers Acquire and Renew from queues of results; an empty
// queue fails.
type fakeLeases struct {
	mu       sync.Mutex
	acquires []leaseResult
	renews   []leaseResult
	calls    []string
}

type leaseResult struct {
	l   dhcp.Lease
	err error
	// hang: the server does not answer until the caller gives up.
	hang bool
}

var errNoServer = errors.New("no DHCP server answered")

func (f *fakeLeases) next(q *[]leaseResult) (dhcp.Lease, error) {
	if len(*q) == 0 {
		return dhcp.Lease{}, errNoServer
	}
	r := (*q)[0]
	*q = (*q)[1:]
	return r.l, r.err
}

func (f *fakeLeases) Acquire(_ context.Context, ifname string, clientID []byte, hostname string) (dhcp.Lease, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("acquire %s %x %s", ifname, clientID, hostname))
	return f.next(&f.acquires)
}

func (f *fakeLeases) Renew(ctx context.Context, ifname string, l dhcp.Lease, clientID []byte) (dhcp.Lease, error) {
	f.mu.Lock()
	f.calls = append(f.calls, fmt.Sprintf("renew %s %s %x", ifname, l.Addr, clientID))
	if len(f.renews) > 0 && f.renews[0].hang {
		f.renews = f.renews[1:]
		f.mu.Unlock()
		<-ctx.Done()
		f.mu.Lock()
		defer f.mu.Unlock()
		f.calls = append(f.calls, "renew given up")
		return dhcp.Lease{}, ctx.Err()
	}
	defer f.mu.Unlock()
	return f.next(&f.renews)
}

func (f *fakeLeases) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func newDHCPAgent(t *testing.T, leases LeaseSource) (*Agent, *addrNet) {
	t.Helper()
	net := &addrNet{}
	a, err := New(Options{
		Config: pmconfig.Config{
			Node: 1, Unit: "lab", MgmtDHCP: true,
			UnitKey: bytes.Repeat([]byte{7}, 32),
		},
		DataDir: t.TempDir(),
		BootID:  "boot-a",
		Uptime:  func() time.Duration { return time.Minute },
		Log:     slog.New(slog.DiscardHandler),
		Net:     net,
		Leases:  leases,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.stepDown(context.Background(), "test over")
		a.db.Close()
	})
	return a, net
}

// lease is a lease of addr from a loopback address, so that the console
// really listens on it.
func lease(addr string, ttl time.Duration) dhcp.Lease {
	return dhcp.Lease{Addr: netip.MustParsePrefix(addr), Server: netip.MustParseAddr("127.42.0.254"), Expiry: time.Now().Add(ttl)}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// holding reports whether the agent holds exactly addr (none when addr is
// empty): on the link, in the unit's record and with the console on it.
func holding(t *testing.T, a *Agent, net *addrNet, addr string) bool {
	t.Helper()
	u, err := a.Unit(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	held := net.addrs()
	if addr == "" {
		return len(held) == 0 && u.ManagementIP == "" && !a.consoleRunning()
	}
	p := netip.MustParsePrefix(addr)
	return slices.Equal(held, []netip.Prefix{p}) && u.ManagementIP == p.Addr().String() && consoleAnswers(p.Addr())
}

// consoleAnswers reports whether the console serves on ip.
func consoleAnswers(ip netip.Addr) bool {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://%s:%d/api/v1/health", ip, ConsolePort))
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (a *Agent) consoleRunning() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.console != nil
}

// Promotion holds the leased address and serves the console on it; a
// renewal that changes the address moves both; step-down removes the
// address without giving the lease back, and renewals stop.
func TestDHCPPrimaryHoldsRenewsAndStepsDown(t *testing.T) {
	ctx := t.Context()
	leases := &fakeLeases{
		acquires: []leaseResult{{l: lease("127.42.0.1/8", 2*time.Second)}},
		renews:   []leaseResult{{l: lease("127.42.0.2/8", 2*time.Second)}, {hang: true}},
	}
	a, net := newDHCPAgent(t, leases)

	if !a.becomePrimary(ctx, 1) {
		t.Fatal("not primary")
	}
	if !holding(t, a, net, "127.42.0.1/8") {
		t.Fatalf("after promotion: holding %v, console running %v", net.addrs(), a.consoleRunning())
	}
	id := dhcpClientID(a.cfg.UnitKey)
	if got, want := leases.callLog(), []string{fmt.Sprintf("acquire ibiz0 %x lab", id)}; !slices.Equal(got, want) {
		t.Fatalf("lease calls %q, want %q", got, want)
	}

	// Renewal at half the 2 s lease.
	waitFor(t, "the renewed address is held", 5*time.Second, func() bool { return holding(t, a, net, "127.42.0.2/8") })
	if consoleAnswers(netip.MustParseAddr("127.42.0.1")) {
		t.Fatal("console still serving on the address given up")
	}

	// Step down while the next renewal waits for a silent server.
	waitFor(t, "a second renewal", 5*time.Second, func() bool { return len(leases.callLog()) == 3 })
	a.stepDown(ctx, "test")
	if !holding(t, a, net, "") {
		t.Fatalf("after step-down: holding %v, console running %v", net.addrs(), a.consoleRunning())
	}
	want := []string{
		fmt.Sprintf("acquire ibiz0 %x lab", id),
		fmt.Sprintf("renew ibiz0 127.42.0.1/8 %x", id),
		fmt.Sprintf("renew ibiz0 127.42.0.2/8 %x", id),
		"renew given up",
	}
	if got := leases.callLog(); !slices.Equal(got, want) {
		t.Fatalf("lease calls %q, want %q (renewals stopped, no release)", got, want)
	}
}

// Without a server the primary keeps trying, with the console down, and
// takes the address once one answers; a refused renewal starts over.
func TestDHCPPrimaryRetriesWithoutServer(t *testing.T) {
	ctx := t.Context()
	leases := &fakeLeases{
		acquires: []leaseResult{{err: errNoServer}, {l: lease("127.42.0.3/8", 2*time.Second)}, {l: lease("127.42.0.4/8", time.Hour)}},
		renews:   []leaseResult{{err: fmt.Errorf("renew: %w", dhcp.ErrNAK)}},
	}
	a, net := newDHCPAgent(t, leases)

	a.becomePrimary(ctx, 1)
	if a.Role() != unit.RolePrimary || !holding(t, a, net, "") {
		t.Fatalf("without a lease: role %s, holding %v, console running %v", a.Role(), net.addrs(), a.consoleRunning())
	}
	waitFor(t, "the address leased on retry is held", 5*time.Second, func() bool { return holding(t, a, net, "127.42.0.3/8") })
	// The renewal is refused: the address is dropped and a new one leased.
	waitFor(t, "the address leased after the refusal is held", 5*time.Second, func() bool { return holding(t, a, net, "127.42.0.4/8") })
	if len(leases.callLog()) != 4 {
		t.Fatalf("lease calls %q, want acquire, acquire, renew, acquire", leases.callLog())
	}
}

func TestDHCPClientID(t *testing.T) {
	a := dhcpClientID(bytes.Repeat([]byte{7}, 32))
	if !bytes.Equal(a, dhcpClientID(bytes.Repeat([]byte{7}, 32))) {
		t.Fatal("client identifier differs for the same unit secret")
	}
	if bytes.Equal(a, dhcpClientID(bytes.Repeat([]byte{8}, 32))) {
		t.Fatal("two units share a client identifier")
	}
	// RFC 4361: type 255, IAID (4), DUID type 4 (2), UUID (16).
	if len(a) != 23 || a[0] != 0xff || !bytes.Equal(a[5:7], []byte{0, 4}) {
		t.Fatalf("client identifier %x is not an RFC 4361 identifier with a DUID-UUID", a)
	}
}
