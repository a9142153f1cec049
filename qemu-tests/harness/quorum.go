package harness

import (
	"context"
	"fmt"
	"net"

	"github.com/dyad-ha/dyad/services/quorum"
	"github.com/dyad-ha/dyad/services/unitca"
)

// QuorumAddr is where the lab's quorum server listens: the operator's
// address (OperatorIP) on the ibiz segment at quorum.DefaultPort, which
// both PMs reach even when every link between them is cut (Partition).
const QuorumAddr = "10.99.0.254:7413"

// quorumServer runs the real quorum service (services/quorum) inside the
// unit's namespace for the unit's key.
type quorumServer struct {
	conn   net.PacketConn
	cancel context.CancelFunc
	done   chan struct{}
}

func (u *Unit) startQuorum(secret []byte) error {
	var conn net.PacketConn
	err := u.ns.do(func() error {
		var err error
		conn, err = net.ListenPacket("udp4", QuorumAddr)
		return err
	})
	if err != nil {
		return fmt.Errorf("quorum server: %w", err)
	}
	key := unitca.QuorumKey(secret)
	// Fresh: a new unit was never granted a lease, and a unit that fails
	// a PM right after forming must not wait out a quiet period.
	srv := quorum.NewFreshServer(func(unit string) ([]byte, bool) {
		return key, unit == UnitName
	}, u.log.With("part", "quorum"))
	ctx, cancel := context.WithCancel(context.Background())
	q := &quorumServer{conn: conn, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(q.done)
		if err := srv.Serve(ctx, conn); err != nil && ctx.Err() == nil {
			u.log.Warn("quorum server", "err", err)
		}
	}()
	if !u.track(q) {
		q.Close()
		return fmt.Errorf("quorum server: unit closed")
	}
	return nil
}

// Close stops the quorum server.
func (q *quorumServer) Close() error {
	q.cancel()
	err := q.conn.Close()
	<-q.done
	return err
}

// Partition cuts (cut true) or heals every link between the two PMs: the
// point-to-point links are unplugged, and each PM's ports on the namespace's
// bridges are isolated from each other, so the PMs no longer hear each
// other on any path while both still reach the namespace (the quorum server,
// the operator).
func (u *Unit) Partition(ctx context.Context, cut bool) error {
	isolated := "off"
	if cut {
		isolated = "on"
	}
	for _, pm := range u.pms {
		for _, c := range pm.nics {
			if c.tap == "" {
				if err := pm.SetLink(ctx, c.Link, !cut); err != nil {
					return err
				}
				continue
			}
			if err := u.ns.run(ctx, "link", "set", "dev", c.tap, "type", "bridge_slave", "isolated", isolated); err != nil {
				return fmt.Errorf("harness: partition: %w", err)
			}
		}
	}
	return nil
}
