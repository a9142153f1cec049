package probe

import (
	"bytes"
	"context"
	"errors"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/sys/unix"

	"github.com/dyad-ha/dyad/services/network/netnstest"
)

// listenIn opens a Conn on ifname inside the namespace ns.
func listenIn(t *testing.T, ns *netnstest.NS, ifname string) *Conn {
	t.Helper()
	var c *Conn
	err := ns.Do(func() (err error) {
		c, err = Listen(ifname)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// topology builds, in ns, a "switch" bridge connecting PM1's pm1biz1, PM2's
// pm2biz1 and a rogue host, plus PM2's pm2biz2 on a cable to nowhere.
// pm1biz1 is itself enslaved to a bridge shnet1, as a business port of a
// shared network is, so its probes must be seen on the bridge port itself.
func topology(t *testing.T, ns *netnstest.NS) {
	t.Helper()
	ns.AddBridge(t, "switch")
	ns.AddBridge(t, "shnet1")
	ns.AddVeth(t, "pm1biz1", "sw-pm1biz1")
	ns.AddVeth(t, "pm2biz1", "sw-pm2biz1")
	ns.AddVeth(t, "pm2biz2", "nowhere")
	ns.AddVeth(t, "rogue", "sw-rogue")

	c := ns.Conn()
	links, err := c.Link.List()
	if err != nil {
		t.Fatal(err)
	}
	index := make(map[string]uint32)
	for _, l := range links {
		index[l.Attributes.Name] = l.Index
	}
	enslave := map[string]string{"sw-pm1biz1": "switch", "sw-pm2biz1": "switch", "sw-rogue": "switch", "pm1biz1": "shnet1"}
	for _, name := range []string{"switch", "shnet1", "pm1biz1", "sw-pm1biz1", "pm2biz1", "sw-pm2biz1", "pm2biz2", "nowhere", "rogue", "sw-rogue"} {
		attrs := &rtnetlink.LinkAttributes{}
		if br, ok := enslave[name]; ok {
			m := index[br]
			attrs.Master = &m
		}
		err := c.Link.Set(&rtnetlink.LinkMessage{Index: index[name], Flags: unix.IFF_UP, Change: unix.IFF_UP, Attributes: attrs})
		if err != nil {
			t.Fatalf("bring up %s: %v", name, err)
		}
	}
}

// TestProbesAcrossBridge sends probes between PM ports joined by a Linux
// bridge and pairs the ports from what each PM heard.
func TestProbesAcrossBridge(t *testing.T) {
	ns := netnstest.New(t)
	topology(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()

	type port struct {
		node  int
		name  string
		speed int
		key   []byte
		conn  *Conn
	}
	rogueKey := []byte("a key of some other unit, 32 b!!")
	ports := []*port{
		{node: 1, name: "pm1biz1", speed: 1000, key: testKey},
		{node: 2, name: "pm2biz1", speed: 10000, key: testKey},
		{node: 2, name: "pm2biz2", speed: 1000, key: testKey},
		{node: 1, name: "rogue", speed: 1000, key: rogueKey},
	}
	var (
		mu    sync.Mutex
		heard = make(map[string][]Probe)
		from  = make(map[string][]net.HardwareAddr)
		wg    sync.WaitGroup
	)
	rctx, stop := context.WithCancel(ctx)
	receive := func(c *Conn, key []byte, name, label string) {
		wg.Go(func() {
			err := c.Receive(rctx, key, func(pr Probe, src net.HardwareAddr) {
				mu.Lock()
				defer mu.Unlock()
				heard[label] = append(heard[label], pr)
				from[label] = append(from[label], src)
			})
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Receive on %s = %v, want context.Canceled", name, err)
			}
		})
	}
	for _, p := range ports {
		p.conn = listenIn(t, ns, p.name)
		receive(p.conn, p.key, p.name, p.name)
	}
	// A second socket on pm2biz1 sees the first one's probes leave the
	// port; it must not take them for probes arriving from the wire.
	receive(listenIn(t, ns, "pm2biz1"), testKey, "pm2biz1", "pm2biz1 (second socket)")
	heardFrom := func(on, port string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, pr := range heard[on] {
			if pr.Port == port {
				return true
			}
		}
		return false
	}
	authRejected := func() bool {
		n, last := ports[0].conn.Rejected()
		return n > 0 && errors.Is(last, ErrAuth)
	}

	// Links come up asynchronously and a veth drops what it sends before
	// its peer is up, so keep probing, as the agent does, until each side
	// has heard the other.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for seq := uint64(1); !heardFrom("pm1biz1", "pm2biz1") || !heardFrom("pm2biz1", "pm1biz1") ||
		!heardFrom("pm2biz1 (second socket)", "pm1biz1") || !authRejected(); seq++ {
		for _, p := range ports {
			pr := Probe{Unit: "lab", Node: p.node, SpeedMbps: p.speed, BootID: "boot-" + p.name, Seq: seq}
			if err := p.conn.Send(ctx, p.key, pr); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case <-ctx.Done():
			n, last := ports[0].conn.Rejected()
			t.Fatalf("probes not exchanged across the bridge: pm1biz1 heard %v from pm2biz1, pm2biz1 heard %v from pm1biz1, pm1biz1 rejected %d (last: %v)",
				heardFrom("pm1biz1", "pm2biz1"), heardFrom("pm2biz1", "pm1biz1"), n, last)
		case <-tick.C:
		}
	}
	stop()
	wg.Wait()

	macs := make(map[string]net.HardwareAddr)
	for _, p := range ports {
		var ifi *net.Interface
		err := ns.Do(func() (err error) {
			ifi, err = net.InterfaceByName(p.name)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		macs[p.name] = ifi.HardwareAddr
	}
	for on, probes := range heard {
		for i, pr := range probes {
			if strings.HasPrefix(on, pr.Port) {
				t.Errorf("%s heard its own probe %+v", on, pr)
			}
			if pr.Port == "rogue" {
				t.Errorf("%s accepted a probe signed with another key: %+v", on, pr)
			}
			if !bytes.Equal(pr.MAC, macs[pr.Port]) || !bytes.Equal(from[on][i], macs[pr.Port]) {
				t.Errorf("probe of %s heard on %s: MAC %s from %s, want %s", pr.Port, on, pr.MAC, from[on][i], macs[pr.Port])
			}
			if pr.Unit != "lab" || pr.BootID != "boot-"+pr.Port || pr.Received.IsZero() {
				t.Errorf("probe heard on %s: %+v", on, pr)
			}
		}
	}
	if len(heard["pm2biz2"]) != 0 {
		t.Errorf("pm2biz2, cabled to nothing, heard %+v", heard["pm2biz2"])
	}

	now := time.Now()
	p1 := Pair(1, []PortInfo{{"pm1biz1", 1000}}, heard, now, time.Minute)
	p2 := Pair(2, []PortInfo{{"pm2biz1", 10000}, {"pm2biz2", 1000}}, heard, now, time.Minute)
	wantP1 := []Pairing{{LocalPort: "pm1biz1", PeerPort: "pm2biz1", LocalSpeedMbps: 1000, PeerSpeedMbps: 10000,
		Problem: "speed mismatch: 1000 Mb/s here, 10000 Mb/s on pm2"}}
	wantP2 := []Pairing{
		{LocalPort: "pm2biz1", PeerPort: "pm1biz1", LocalSpeedMbps: 10000, PeerSpeedMbps: 1000,
			Problem: "speed mismatch: 10000 Mb/s here, 1000 Mb/s on pm1"},
		{LocalPort: "pm2biz2", LocalSpeedMbps: 1000, Problem: problemNoPeer},
	}
	if !reflect.DeepEqual(p1, wantP1) {
		t.Errorf("PM1 pairings:\n got %+v\nwant %+v", p1, wantP1)
	}
	if !reflect.DeepEqual(p2, wantP2) {
		t.Errorf("PM2 pairings:\n got %+v\nwant %+v", p2, wantP2)
	}
	wantNets := []Network{
		{ID: 1, Name: "network1", Ports: map[int]string{1: "pm1biz1", 2: "pm2biz1"},
			Problem: "speed mismatch: pm1 pm1biz1 at 1000 Mb/s, pm2 pm2biz1 at 10000 Mb/s"},
		{ID: 2, Name: "network2", Ports: map[int]string{2: "pm2biz2"}, Problem: "pm2 pm2biz2: no peer port in the same L2 domain"},
	}
	if nets := Networks(p1, p2, nil); !reflect.DeepEqual(nets, wantNets) {
		t.Errorf("Networks:\n got %+v\nwant %+v", nets, wantNets)
	}
}

func TestListenUnknownLink(t *testing.T) {
	ns := netnstest.New(t)
	err := ns.Do(func() error {
		_, err := Listen("biz7")
		return err
	})
	if err == nil {
		t.Fatal("Listen on a missing link succeeded")
	}
}
