package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// Gateway is the bridge's address: the nodes' gateway and where they reach the apt proxy.
func (l *Lab) Gateway() netip.Addr { return l.cfg.BridgeAddress.Addr() }

// HostAddress returns the n-th address of the lab's range with its prefix length, for a node
// (n = 1 is the network's first host address). It refuses the bridge's own address and
// addresses outside the range.
func (l *Lab) HostAddress(n int) (netip.Prefix, error) {
	p := l.cfg.BridgeAddress
	base := p.Masked().Addr().As4()
	v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	size := uint32(1) << (32 - p.Bits())
	if n < 1 || uint32(n) >= size-1 {
		return netip.Prefix{}, fmt.Errorf("host address %d: outside %s", n, p.Masked())
	}
	v += uint32(n)
	a := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	if a == p.Addr() {
		return netip.Prefix{}, fmt.Errorf("host address %d: %s is the bridge's address", n, a)
	}
	return netip.PrefixFrom(a, p.Bits()), nil
}

// EnsureNetwork creates the lab's bridge with its address when missing and sets it up. An
// existing interface of that name must be a bridge; no other interface may hold an address in
// the lab's range.
func (l *Lab) EnsureNetwork(ctx context.Context) error {
	name, want := l.cfg.Bridge, l.cfg.BridgeAddress
	if err := l.checkRangeFree(); err != nil {
		return err
	}
	link, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("create bridge %s: %w", name, err)
		}
		l.log.InfoContext(ctx, "lab bridge created", "bridge", name, "address", want)
		if link, err = netlink.LinkByName(name); err != nil {
			return fmt.Errorf("create bridge %s: %w", name, err)
		}
	case err != nil:
		return fmt.Errorf("look up bridge %s: %w", name, err)
	case link.Type() != "bridge":
		return fmt.Errorf("ensure bridge %s: an interface of that name exists and is a %s", name, link.Type())
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", name, err)
	}
	have := false
	for _, a := range addrs {
		p, ok := prefixOf(a.IPNet)
		switch {
		case !ok:
		case p == want:
			have = true
		default:
			// Someone else's bridge (another lab, another range): do not join it.
			return fmt.Errorf("ensure bridge %s: it exists with address %s, not %s; choose another bridge name or range",
				name, p, want)
		}
	}
	if !have {
		if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: ipNet(want)}); err != nil {
			return fmt.Errorf("add %s to %s: %w", want, name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

// RemoveNetwork deletes the lab's bridge. It fails with ErrNetworkInUse while a node of this
// lab runs or any interface is still attached to it. A missing bridge is not an error.
func (l *Lab) RemoveNetwork(ctx context.Context) error {
	link, err := netlink.LinkByName(l.cfg.Bridge)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up bridge %s: %w", l.cfg.Bridge, err)
	}
	if link.Type() != "bridge" {
		return fmt.Errorf("remove bridge %s: it is a %s, not ours", l.cfg.Bridge, link.Type())
	}
	nodes, err := l.List(ctx)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if n.State == StateRunning {
			return fmt.Errorf("remove bridge %s: node %s is running: %w", l.cfg.Bridge, n.Name, ErrNetworkInUse)
		}
	}
	links, err := linkList()
	if err != nil {
		return err
	}
	for _, o := range links {
		if o.Attrs().MasterIndex == link.Attrs().Index {
			return fmt.Errorf("remove bridge %s: %s is attached: %w", l.cfg.Bridge, o.Attrs().Name, ErrNetworkInUse)
		}
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("remove bridge %s: %w", l.cfg.Bridge, err)
	}
	l.log.InfoContext(ctx, "lab bridge removed", "bridge", l.cfg.Bridge)
	return nil
}

// checkRangeFree fails when an interface other than the lab's bridge has an address that
// overlaps the lab's range: the range would not be ours.
func (l *Lab) checkRangeFree() error {
	links, err := linkList()
	if err != nil {
		return err
	}
	for _, link := range links {
		if link.Attrs().Name == l.cfg.Bridge {
			continue
		}
		addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("list addresses of %s: %w", link.Attrs().Name, err)
		}
		for _, a := range addrs {
			if p, ok := prefixOf(a.IPNet); ok && p.Overlaps(l.cfg.BridgeAddress.Masked()) {
				return fmt.Errorf("ensure bridge %s: %s on %s overlaps the lab range %s",
					l.cfg.Bridge, p, link.Attrs().Name, l.cfg.BridgeAddress.Masked())
			}
		}
	}
	return nil
}

// linkList lists the host's links, retrying an interrupted dump.
func linkList() ([]netlink.Link, error) {
	var err error
	for range 5 {
		var links []netlink.Link
		links, err = netlink.LinkList()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			if err != nil {
				return nil, fmt.Errorf("list links: %w", err)
			}
			return links, nil
		}
	}
	return nil, fmt.Errorf("list links: %w", err)
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
