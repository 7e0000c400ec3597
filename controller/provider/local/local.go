// Package local is the default provider: real lab nodes on this machine
// (systemd-nspawn containers booting systemd on a host-only bridge, see
// package lab). Lab machines are named <cluster>-<node>, so several clusters
// can share one lab; the shared bridge and apt proxy go away with the last
// node.
package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/kthw/kthw/controller/config"
	"github.com/kthw/kthw/controller/lab"
	"github.com/kthw/kthw/controller/provider"
	"github.com/kthw/kthw/distro/profile"
)

// Provider makes lab nodes for one cluster.
type Provider struct {
	lab        *lab.Lab
	cluster    string
	authorized []byte
	gateway    netip.Addr
}

var (
	_ provider.Provider = (*Provider)(nil)
	_ provider.Doctor   = (*Provider)(nil)
)

// New returns the local provider for cluster c (defaults set, validated).
// authorizedKey (authorized_keys format) is the controller's key that every
// node authorizes for root.
func New(c *config.Cluster, authorizedKey []byte, log *slog.Logger) (*Provider, error) {
	lp := c.Provider.Local
	if lp == nil {
		return nil, errors.New("local provider: no provider.local settings")
	}
	prefix, err := netip.ParsePrefix(c.Network.NodeCIDR)
	if err != nil {
		return nil, fmt.Errorf("local provider: network.nodeCIDR: %w", err)
	}
	gw, err := netip.ParseAddr(c.Network.Gateway)
	if err != nil {
		return nil, fmt.Errorf("local provider: network.gateway: %w", err)
	}
	l, err := lab.New(lab.Config{
		Dir:           lp.LabDir,
		ImageDir:      lp.ImageDir,
		Bridge:        lp.Bridge,
		BridgeAddress: netip.PrefixFrom(gw, prefix.Bits()),
		ProxyPort:     lp.ProxyPort,
		Logger:        log,
	})
	if err != nil {
		return nil, fmt.Errorf("local provider: %w", err)
	}
	if err := checkProfile(l, c.Profile); err != nil {
		return nil, err
	}
	return &Provider{lab: l, cluster: c.Name, authorized: authorizedKey, gateway: gw}, nil
}

// checkProfile refuses a profile for another release than the lab's nodes
// run, before anything is made: node preparation would fail on every node.
func checkProfile(l *lab.Lab, name string) error {
	nodes, err := l.NodeOS()
	if err != nil {
		return fmt.Errorf("local provider: %w", err)
	}
	prof, err := profile.Get(name)
	if err != nil || nodes.ID == "" {
		return nil // an unknown profile is the config's to report
	}
	if !prof.OS.Matches(nodes.ID, nodes.Version) {
		return fmt.Errorf("local provider: its lab nodes run %s %s, and profile %q is for %s: use the debian profile with the local provider, or nodes of %s through provider proxmox or static",
			nodes.ID, nodes.Version, name, prof.OS, prof.OS)
	}
	return nil
}

// Lab returns the lab the provider runs on.
func (p *Provider) Lab() *lab.Lab { return p.lab }

// Name implements provider.Provider.
func (p *Provider) Name() string { return string(config.ProviderLocal) }

// Machine is the lab machine name of a node.
func (p *Provider) Machine(node string) string { return p.cluster + "-" + node }

// Prepare builds (or finds cached) the root filesystem and makes the bridge
// and the apt proxy.
func (p *Provider) Prepare(ctx context.Context, _ []config.NodeSpec) error {
	_, err := p.lab.Prepare(ctx)
	return err
}

// Ensure boots the node, or adopts it when it runs. A fresh boot gets a new
// host key generated here; the returned node carries the key to pin.
func (p *Provider) Ensure(ctx context.Context, n config.NodeSpec) (provider.Node, error) {
	priv, _, err := lab.GenerateHostKey()
	if err != nil {
		return provider.Node{}, err
	}
	info, err := p.lab.Start(ctx, lab.NodeSpec{
		Name:           p.Machine(n.Name),
		Hostname:       n.Name,
		Address:        n.Address,
		Gateway:        p.gateway,
		HostKey:        priv,
		AuthorizedKeys: p.authorized,
	})
	if err != nil {
		return provider.Node{}, err
	}
	return p.node(n, info), nil
}

// Observe reports the node's lab state.
func (p *Provider) Observe(ctx context.Context, n config.NodeSpec) (provider.Node, error) {
	info, err := p.lab.Status(ctx, p.Machine(n.Name))
	if errors.Is(err, lab.ErrNotFound) {
		return provider.Node{Name: n.Name, Role: n.Role, Host: n.Address.Addr().String(), Port: 22, User: "root", State: provider.StateMissing}, nil
	}
	if err != nil {
		return provider.Node{}, err
	}
	return p.node(n, info), nil
}

func (p *Provider) node(n config.NodeSpec, info lab.NodeInfo) provider.Node {
	addr := info.Address.Addr()
	if !addr.IsValid() {
		addr = n.Address.Addr()
	}
	st := provider.StateUnknown
	switch info.State {
	case lab.StateRunning:
		st = provider.StateRunning
	case lab.StateStopped:
		st = provider.StateStopped
	case lab.StateCrashed:
		st = provider.StateCrashed
	}
	return provider.Node{
		Name: n.Name, Role: n.Role, Host: addr.String(), Port: 22, User: "root",
		HostKey: info.HostPublicKey, State: st, ID: info.Name,
	}
}

// Destroy stops the node and removes its disk.
func (p *Provider) Destroy(ctx context.Context, name string) error {
	return p.lab.Destroy(ctx, p.Machine(name))
}

// Existing lists the cluster's nodes on disk.
func (p *Provider) Existing(ctx context.Context) ([]string, error) {
	infos, err := p.lab.List(ctx)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, in := range infos {
		// The hostname is the node name: it tells cluster "a" with node
		// "b-c" from cluster "a-b" with node "c".
		if in.Hostname != "" && in.Name == p.Machine(in.Hostname) {
			names = append(names, in.Hostname)
		}
	}
	return names, nil
}

// Teardown stops the apt proxy and removes the bridge when no lab node of
// any cluster is left. The cached root filesystems stay.
func (p *Provider) Teardown(ctx context.Context) error {
	infos, err := p.lab.List(ctx)
	if err != nil {
		return err
	}
	if len(infos) > 0 {
		return nil
	}
	return errors.Join(p.lab.StopProxy(ctx), p.lab.RemoveNetwork(ctx))
}

// Doctor checks the machine for what lab nodes need.
func (p *Provider) Doctor(ctx context.Context) []provider.Finding {
	var out []provider.Finding
	for _, f := range p.lab.Doctor(ctx) {
		out = append(out, provider.Finding{Check: f.Check, OK: f.OK, Detail: f.Detail, Fix: f.Fix})
	}
	return out
}
