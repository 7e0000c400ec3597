// Package static is the provider for machines that already exist: the
// cluster file lists each node's address, SSH user, key and jump host. It
// creates and destroys nothing; host keys come from known_hosts as for any
// SSH target.
package static

import (
	"context"
	"fmt"
	"sort"

	"github.com/kthw/kthw/controller/config"
	"github.com/kthw/kthw/controller/provider"
)

// Provider hands out the listed machines.
type Provider struct {
	hosts map[string]config.StaticHost
}

var _ provider.Provider = (*Provider)(nil)

// New returns the provider for c's static hosts (defaults set, validated).
func New(c *config.Cluster) (*Provider, error) {
	if c.Provider.Static == nil {
		return nil, fmt.Errorf("static provider: no provider.static settings")
	}
	p := &Provider{hosts: map[string]config.StaticHost{}}
	for _, h := range c.Provider.Static.Hosts {
		p.hosts[h.Name] = h
	}
	return p, nil
}

// Name implements provider.Provider.
func (p *Provider) Name() string { return string(config.ProviderStatic) }

// Prepare has nothing to make.
func (p *Provider) Prepare(context.Context, []config.NodeSpec) error { return nil }

// Ensure returns the listed machine; whether it answers is for the
// connection to find out.
func (p *Provider) Ensure(ctx context.Context, n config.NodeSpec) (provider.Node, error) {
	return p.Observe(ctx, n)
}

// Observe returns the listed machine in state unknown.
func (p *Provider) Observe(_ context.Context, n config.NodeSpec) (provider.Node, error) {
	h, ok := p.hosts[n.Name]
	if !ok {
		return provider.Node{}, fmt.Errorf("static provider: no host listed for node %s", n.Name)
	}
	return provider.Node{
		Name: n.Name, Role: n.Role, Host: h.Address, Port: h.Port, User: h.User,
		IdentityFile: h.IdentityFile, Jump: h.Jump, State: provider.StateUnknown, ID: h.Address,
	}, nil
}

// Destroy leaves the machine alone: static machines are not kthw's to remove.
func (p *Provider) Destroy(context.Context, string) error { return nil }

// Existing lists the configured machines.
func (p *Provider) Existing(context.Context) ([]string, error) {
	names := make([]string, 0, len(p.hosts))
	for n := range p.hosts {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// Teardown has nothing to remove.
func (p *Provider) Teardown(context.Context) error { return nil }
