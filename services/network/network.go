// Package network manages the Ethernet ports, addresses and routes of a PM
// through rtnetlink: it finds the physical ports, gives them their role
// names (priv0, ibiz0, biz1...), brings them up, holds addresses and
// announces a moved IPv4 address with gratuitous ARP.
package network

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// ErrLinkNotFound is returned (wrapped) when no link has the given name.
var ErrLinkNotFound = errors.New("link not found")

// Options configures a Manager.
type Options struct {
	// NetNS is an open file descriptor of the network namespace to manage;
	// 0 means the namespace of the calling process. The caller keeps
	// ownership of the descriptor and must keep it open until Close.
	NetNS int
	// SysClassNet is the sysfs directory listing the namespace's links;
	// default /sys/class/net. sysfs shows the links of the namespace that
	// mounted it, so a Manager for another namespace needs a sysfs mounted
	// from inside that namespace.
	SysClassNet string
	// IncludeVirtual makes Ports also report veth links, which have no
	// device behind them. Only tests that build "hardware" out of veth
	// pairs want this.
	IncludeVirtual bool
	// StatePath is where Reconcile records the links, addresses and
	// routes it created, so it removes only those; default
	// /run/dyad/network-state.json.
	StatePath string
	// ResolvConf is the resolver configuration Reconcile writes; default
	// /etc/resolv.conf.
	ResolvConf string
	Log        *slog.Logger
}

// Manager changes links and addresses in one network namespace.
// Its methods are safe for concurrent use.
type Manager struct {
	conn           *rtnetlink.Conn
	netns          int
	sysClassNet    string
	includeVirtual bool
	statePath      string
	resolvConf     string
	log            *slog.Logger

	// reconcileMu serialises Reconcile: two runs interleaving would each
	// see the other's half-made changes as state to correct.
	reconcileMu sync.Mutex
}

// New opens a route netlink connection in the namespace of opts.NetNS.
func New(ctx context.Context, opts Options) (*Manager, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	conn, err := rtnetlink.Dial(&netlink.Config{NetNS: opts.NetNS})
	if err != nil {
		return nil, fmt.Errorf("open route netlink socket: %w", err)
	}
	return &Manager{
		conn:           conn,
		netns:          opts.NetNS,
		sysClassNet:    cmp.Or(opts.SysClassNet, "/sys/class/net"),
		includeVirtual: opts.IncludeVirtual,
		statePath:      cmp.Or(opts.StatePath, "/run/dyad/network-state.json"),
		resolvConf:     cmp.Or(opts.ResolvConf, "/etc/resolv.conf"),
		log:            cmp.Or(opts.Log, slog.Default()),
	}, nil
}

// Close releases the netlink connection.
func (m *Manager) Close() error {
	return m.conn.Close()
}

// link returns the link called name unless ctx is already done.
func (m *Manager) link(ctx context.Context, name string) (rtnetlink.LinkMessage, error) {
	if err := ctx.Err(); err != nil {
		return rtnetlink.LinkMessage{}, err
	}
	return m.lookup(name)
}

// lookup returns the link called name.
func (m *Manager) lookup(name string) (rtnetlink.LinkMessage, error) {
	links, err := m.conn.Link.List()
	if err != nil {
		return rtnetlink.LinkMessage{}, fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		if l.Attributes != nil && l.Attributes.Name == name {
			return l, nil
		}
	}
	return rtnetlink.LinkMessage{}, fmt.Errorf("link %q: %w", name, ErrLinkNotFound)
}

// inNetNS runs fn on an OS thread that has entered the namespace netns
// (0: the current one). Sockets keep the namespace they were created in,
// so fn can open them for use anywhere. The thread is never unlocked, so
// the runtime discards it instead of reusing it in the wrong namespace.
func inNetNS[T any](netns int, fn func() (T, error)) (T, error) {
	if netns == 0 {
		return fn()
	}
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(netns, unix.CLONE_NEWNET); err != nil {
			var zero T
			done <- result{zero, fmt.Errorf("enter network namespace: %w", err)}
			return
		}
		v, err := fn()
		done <- result{v, err}
	}()
	r := <-done
	return r.v, r.err
}
