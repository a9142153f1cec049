package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Port is the UDP port of heartbeats.
const Port = 7410

// allNodes is the IPv6 link-local all-nodes group: heartbeats need no IP
// configuration beyond the link-local address every IPv6 link has.
var allNodes = netip.MustParseAddr("ff02::1")

// PathSocket sends and receives heartbeats on one path (one interface).
type PathSocket struct {
	Path  string
	iface string
	conn  *net.UDPConn
}

// ListenPath opens the heartbeat socket of path on interface iface.
func ListenPath(ctx context.Context, path, iface string) (*PathSocket, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
				return
			}
			// One socket per path: the kernel tells us which path a beat
			// came on, and a beat is sent out of that path only.
			if serr = unix.BindToDevice(int(fd), iface); serr != nil {
				return
			}
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_LOOP, 0)
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(ctx, "udp6", fmt.Sprintf("[::]:%d", Port))
	if err != nil {
		return nil, fmt.Errorf("heartbeat socket on %s (%s): %w", path, iface, err)
	}
	return &PathSocket{Path: path, iface: iface, conn: pc.(*net.UDPConn)}, nil
}

// Close closes the socket.
func (s *PathSocket) Close() error { return s.conn.Close() }

// Send sends a datagram to the peer at to, or to all nodes of the link when
// the peer's address is not known yet.
func (s *PathSocket) Send(p []byte, to netip.AddrPort) error {
	if !to.IsValid() {
		to = netip.AddrPortFrom(allNodes.WithZone(s.iface), Port)
	}
	_, err := s.conn.WriteToUDPAddrPort(p, to)
	return err
}

// Receive reads datagrams until ctx ends, passing each valid beat to fn.
// Datagrams that fail authentication are counted in the log, not acted on.
func (s *PathSocket) Receive(ctx context.Context, log *slog.Logger, key []byte, fn func(Beat, netip.AddrPort)) {
	go func() {
		<-ctx.Done()
		s.conn.SetReadDeadline(time.Now())
	}()
	buf := make([]byte, MaxBeatSize+1)
	var rejected int
	for ctx.Err() == nil {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("heartbeat receive", "path", s.Path, "err", err)
			}
			continue
		}
		b, err := Unmarshal(key, buf[:n])
		if err != nil {
			rejected++
			if rejected&(rejected-1) == 0 { // 1, 2, 4, 8...: visible, not a flood
				log.Warn("heartbeat rejected", "path", s.Path, "from", from, "err", err, "count", rejected)
			}
			continue
		}
		fn(b, from)
	}
}
