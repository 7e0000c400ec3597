package proxmox

import (
	"net"
	"net/netip"
	"strings"

	pve "github.com/luthermonson/go-proxmox"
)

// sameMAC compares hardware addresses case-insensitively (Proxmox writes
// them uppercase in net0, the guest agent lowercase).
func sameMAC(a, b string) bool {
	ha, err1 := net.ParseMAC(strings.TrimSpace(a))
	hb, err2 := net.ParseMAC(strings.TrimSpace(b))
	if err1 != nil || err2 != nil {
		return false
	}
	return strings.EqualFold(ha.String(), hb.String())
}

// GuestAddresses returns the global unicast IPv4 addresses the guest agent
// reports on the NIC whose hardware address is mac, in the agent's order.
// Loopback, link-local and IPv6 addresses, and other NICs (bridges, CNI
// interfaces a node grows later) are left out.
func GuestAddresses(ifaces []*pve.AgentNetworkIface, mac string) []netip.Addr {
	var out []netip.Addr
	for _, ifc := range ifaces {
		if ifc == nil || !sameMAC(ifc.HardwareAddress, mac) {
			continue
		}
		for _, a := range ifc.IPAddresses {
			if a == nil || a.IPAddressType != "ipv4" {
				continue
			}
			ip, err := netip.ParseAddr(a.IPAddress)
			if err != nil || !ip.Is4() || !ip.IsGlobalUnicast() {
				continue
			}
			out = append(out, ip)
		}
	}
	return out
}
