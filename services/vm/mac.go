package vm

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net"
)

// MAC returns the address of a VM's first NIC: see NICMAC.
func MAC(unitKey []byte, vmID int) net.HardwareAddr {
	return NICMAC(unitKey, vmID, 0)
}

// NICMAC derives the MAC address of NIC nic of VM vmID from the unit key
// with HMAC-SHA256. It is stable (the VM keeps its address across restarts,
// failovers and migrations, so guests keep their leases and the switches
// learn nothing new), differs between units that share a network (their
// keys differ) and needs no registry. The address is unicast and locally
// administered, so it never collides with a vendor's address; 46 random
// bits make a collision within one unit very unlikely but not impossible,
// which is why Validate refuses a MAC used twice.
func NICMAC(unitKey []byte, vmID, nic int) net.HardwareAddr {
	m := hmac.New(sha256.New, unitKey)
	var msg [len("dyad vm mac") + 16]byte
	n := copy(msg[:], "dyad vm mac")
	binary.BigEndian.PutUint64(msg[n:], uint64(vmID))
	binary.BigEndian.PutUint64(msg[n+8:], uint64(nic))
	m.Write(msg[:])
	sum := m.Sum(nil)
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&^0x01 | 0x02 // unicast, locally administered
	return mac
}

// CheckMAC accepts an Ethernet address a VM's NIC may carry: six bytes,
// unicast, neither all zeros. Operators may give a globally administered
// address (a guest licensed to a MAC keeps its vendor's address).
func CheckMAC(mac net.HardwareAddr) error {
	if len(mac) != 6 {
		return fmt.Errorf("MAC %s: an Ethernet address has 6 bytes, not %d", mac, len(mac))
	}
	if mac[0]&0x01 != 0 {
		return fmt.Errorf("MAC %s is a multicast address: a NIC needs a unicast one (even first byte)", mac)
	}
	if mac.String() == "00:00:00:00:00:00" {
		return fmt.Errorf("MAC %s is not an address", mac)
	}
	return nil
}
