// Package loopback brings up the loopback interface, the only link PID 1
// configures; the agent owns every other link and address.
package loopback

import (
	"fmt"
	"net"

	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/sys/unix"
)

// Up sets lo administratively up in the network namespace of the calling
// thread. The kernel adds 127.0.0.1/8 and ::1 itself when lo comes up.
func Up() error {
	ifi, err := net.InterfaceByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer c.Close()
	msg, err := c.Link.Get(uint32(ifi.Index))
	if err != nil {
		return fmt.Errorf("get lo: %w", err)
	}
	if err := c.Link.Set(&rtnetlink.LinkMessage{
		Family: msg.Family,
		Type:   msg.Type,
		Index:  msg.Index,
		Flags:  unix.IFF_UP,
		Change: unix.IFF_UP,
	}); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	return nil
}
