package lab

import (
	"context"
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// HostVeth returns the host-side interface of a running node's link (systemd-nspawn names it
// vb-<machine>, shortened with a hash when long). It is found from the node's host0, whose
// peer it is, not from the name.
func (l *Lab) HostVeth(ctx context.Context, name string) (string, error) {
	leader, err := l.Leader(ctx, name)
	if err != nil {
		return "", err
	}
	return hostVeth(leader)
}

// SetLink sets the host side of a running node's link up or down: down cuts the node off the
// network (its interface stays up inside), up restores it.
func (l *Lab) SetLink(ctx context.Context, name string, up bool) error {
	veth, err := l.HostVeth(ctx, name)
	if err != nil {
		return fmt.Errorf("set link of node %s: %w", name, err)
	}
	link, err := netlink.LinkByName(veth)
	if err != nil {
		return fmt.Errorf("set link of node %s: %w", name, err)
	}
	if up {
		err = netlink.LinkSetUp(link)
	} else {
		err = netlink.LinkSetDown(link)
	}
	if err != nil {
		return fmt.Errorf("set link %s of node %s up=%t: %w", veth, name, up, err)
	}
	l.log.InfoContext(ctx, "lab node link set", "node", name, "veth", veth, "up", up)
	return nil
}

// vethOf finds the host-side link of the node whose systemd-nspawn is pid.
func (l *Lab) vethOf(pid int) (string, error) {
	leader, err := leaderOf(pid)
	if err != nil {
		return "", err
	}
	return hostVeth(leader)
}

// hostVeth finds, from a container init's network namespace, the host side of its host0.
func hostVeth(leader int) (string, error) {
	ns, err := netns.GetFromPid(leader)
	if err != nil {
		return "", fmt.Errorf("open network namespace of %d: %w", leader, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return "", fmt.Errorf("open network namespace of %d: %w", leader, err)
	}
	defer h.Close()
	inner, err := h.LinkByName("host0")
	if err != nil {
		return "", fmt.Errorf("find host0 of %d: %w", leader, err)
	}
	peer := inner.Attrs().ParentIndex
	if peer == 0 {
		return "", fmt.Errorf("find host0's peer of %d: no peer index", leader)
	}
	outer, err := netlink.LinkByIndex(peer)
	if err != nil {
		return "", fmt.Errorf("find host0's peer of %d: %w", leader, err)
	}
	if outer.Type() != "veth" {
		return "", fmt.Errorf("find host0's peer of %d: index %d is a %s", leader, peer, outer.Type())
	}
	return outer.Attrs().Name, nil
}

// deleteVeth removes a node's leftover host-side veth (attached to bridge, or to nothing); a
// missing one is fine.
func deleteVeth(name, bridge string) error {
	link, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up %s: %w", name, err)
	}
	if link.Type() != "veth" {
		return nil // the name was reused by something else: not ours
	}
	if m := link.Attrs().MasterIndex; m != 0 {
		if br, err := netlink.LinkByIndex(m); err != nil || br.Attrs().Name != bridge {
			return nil // attached elsewhere: not ours
		}
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// checkBridge fails with ErrNoNetwork when the lab's bridge does not exist.
func (l *Lab) checkBridge() error {
	link, err := netlink.LinkByName(l.cfg.Bridge)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return fmt.Errorf("bridge %s: %w", l.cfg.Bridge, ErrNoNetwork)
	}
	if err != nil {
		return fmt.Errorf("look up bridge %s: %w", l.cfg.Bridge, err)
	}
	if link.Type() != "bridge" {
		return fmt.Errorf("bridge %s: is a %s", l.cfg.Bridge, link.Type())
	}
	return nil
}
