package proxmox

import (
	"context"
	"errors"
	"fmt"

	"github.com/kthw/kthw/controller/config"
	"github.com/kthw/kthw/controller/provider"
)

// Ensure makes node n's VM exist, match the cluster file and run, and
// returns how to reach it. It adopts the VM an earlier run made (found by
// name and tags, by the VMID recorded before its clone, or by the marker
// its clone was given) and clones one only when there is none.
//
// A VM this call cloned whose configuration fails before its first start
// is destroyed again: it never booted, and the next run clones afresh. A VM
// that started and then did not come up (guest agent, cloud-init) is left
// as it is, recorded and tagged, for the next run to adopt and for the
// operator to inspect; down removes it.
func (p *Provider) Ensure(ctx context.Context, n config.NodeSpec) (provider.Node, error) {
	c, err := p.Client(ctx)
	if err != nil {
		return provider.Node{}, err
	}
	loc, found, err := p.find(ctx, c, n.Name)
	if err != nil {
		return provider.Node{}, err
	}
	if found {
		if found, err = p.confirm(ctx, c, loc, n.Name); err != nil {
			return provider.Node{}, err
		}
	}
	created := false
	ref := loc.ref
	if found {
		p.log.InfoContext(ctx, "adopting VM", "node", n.Name, "vmid", ref.id, "found_by", loc.how)
		if err := p.record(ctx, n.Name, ref.id); err != nil {
			return provider.Node{}, err
		}
	} else {
		t, err := p.templateInfo(ctx, c)
		if err != nil {
			return provider.Node{}, err
		}
		if ref, err = p.clone(ctx, c, n, t); err != nil {
			return provider.Node{}, err
		}
		created = true
	}

	vm, started, err := p.converge(ctx, c, n, ref)
	if err != nil {
		if created && !started && ctx.Err() == nil {
			p.log.WarnContext(ctx, "configuring the new VM failed; destroying it", "node", n.Name, "vmid", ref.id, "error", err)
			if derr := p.destroy(ctx, c, ref); derr != nil {
				return provider.Node{}, errors.Join(err, fmt.Errorf("remove the half-made %s: %w", ref, derr))
			}
			if rerr := p.record(ctx, n.Name, 0); rerr != nil {
				return provider.Node{}, errors.Join(err, rerr)
			}
		}
		return p.node(n, ref.id, provider.StateUnknown, n.Address.Addr(), ""), err
	}
	mac := net0MAC(vm.VirtualMachineConfig)
	if mac == "" {
		return provider.Node{}, fmt.Errorf("%w: %s has no net0 MAC address", ErrBoot, ref)
	}
	g, err := p.waitGuest(ctx, c, ref, mac, n.Address.Addr())
	if err != nil {
		return p.node(n, ref.id, provider.StateUnknown, n.Address.Addr(), ""), err
	}
	return p.node(n, ref.id, provider.StateRunning, g.addr, g.hostKey), nil
}
