package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Conn sends and receives probes on one port.
type Conn struct {
	pc   *packet.Conn
	name string
	mac  net.HardwareAddr

	mu       sync.Mutex
	rejected uint64
	lastErr  error
}

// Listen opens a raw packet socket on the link ifname in the calling
// thread's network namespace.
//
// The socket captures every ethertype and filters in the kernel rather than
// binding to EtherType: on a port enslaved to a bridge, the bridge consumes
// incoming frames before protocol-specific sockets of the port see them,
// and only all-protocol sockets still get a copy. The same filter drops
// frames leaving through the port (sent by any socket, or forwarded out by
// the bridge), so a Conn hears only what arrives from the wire and never
// this PM's own probes on that port.
func Listen(ifname string) (*Conn, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("probe listen on %s: %w", ifname, err)
	}
	filter, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: EtherType, SkipTrue: 3},
		bpf.LoadExtension{Num: bpf.ExtType},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.PACKET_OUTGOING, SkipTrue: 1},
		// One byte more than a probe, so Parse sees an oversized frame as such.
		bpf.RetConstant{Val: uint32(MaxFrameLen) + 1},
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		return nil, fmt.Errorf("probe listen on %s: assemble filter: %w", ifname, err)
	}
	pc, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, &packet.Config{Filter: filter})
	if err != nil {
		return nil, fmt.Errorf("probe listen on %s: open packet socket: %w", ifname, err)
	}
	// A port outside a bridge is not promiscuous: its NIC drops multicast
	// to groups nobody joined.
	if err := pc.JoinGroup(Group()); err != nil {
		pc.Close()
		return nil, fmt.Errorf("probe listen on %s: join group %s: %w", ifname, Group(), err)
	}
	return &Conn{pc: pc, name: ifname, mac: ifi.HardwareAddr}, nil
}

// Close closes the socket; a running Receive returns.
func (c *Conn) Close() error {
	return c.pc.Close()
}

// Send transmits p on the Conn's link, authenticated with key. It sets
// p.Port and p.MAC to the link's name and address.
func (c *Conn) Send(ctx context.Context, key []byte, p Probe) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p.Port, p.MAC = c.name, c.mac
	frame, err := p.Frame(key)
	if err != nil {
		return fmt.Errorf("send probe on %s: %w", c.name, err)
	}
	deadline, _ := ctx.Deadline() // zero: no deadline
	if err := c.pc.SetWriteDeadline(deadline); err != nil {
		return fmt.Errorf("send probe on %s: %w", c.name, err)
	}
	if _, err := c.pc.WriteTo(frame, &packet.Addr{HardwareAddr: Group()}); err != nil {
		return fmt.Errorf("send probe on %s: %w", c.name, err)
	}
	return nil
}

// Receive calls fn, from the calling goroutine, with every probe that
// arrives on the link and passes authentication with key, together with
// the frame's source address, until ctx is done (it then returns
// ctx.Err()) or the socket fails. Frames that are not valid probes are
// counted (see Rejected) and skipped. Probes of this PM's other ports are
// passed on: Pair ignores them. Run one Receive per Conn at a time.
func (c *Conn) Receive(ctx context.Context, key []byte, fn func(p Probe, from net.HardwareAddr)) error {
	if err := checkKey(key); err != nil {
		return fmt.Errorf("receive probes on %s: %w", c.name, err)
	}
	if err := c.pc.SetReadDeadline(time.Time{}); err != nil {
		return fmt.Errorf("receive probes on %s: %w", c.name, err)
	}
	stop := context.AfterFunc(ctx, func() {
		// Wakes the blocked read; the error it gets is reported as ctx.Err().
		c.pc.SetReadDeadline(time.Unix(1, 0))
	})
	defer stop()
	buf := make([]byte, MaxFrameLen+1)
	for {
		n, addr, err := c.pc.ReadFrom(buf)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// Set by the cancellation of an earlier Receive after this
				// one cleared the deadline.
				if err := c.pc.SetReadDeadline(time.Time{}); err != nil {
					return fmt.Errorf("receive probes on %s: %w", c.name, err)
				}
				continue
			}
			return fmt.Errorf("receive probes on %s: %w", c.name, err)
		}
		p, err := Parse(key, buf[:n])
		if err != nil {
			c.reject(err)
			continue
		}
		p.Received = time.Now()
		var from net.HardwareAddr
		if a, ok := addr.(*packet.Addr); ok {
			from = a.HardwareAddr
		}
		fn(p, from)
	}
}

func (c *Conn) reject(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rejected++
	c.lastErr = err
}

// Rejected reports how many frames Receive has skipped as invalid probes
// and why it skipped the last one. Rejections wrapping ErrAuth mean that a
// machine with another key probes the same L2 domain: worth an alert.
func (c *Conn) Rejected() (count uint64, last error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rejected, c.lastErr
}
