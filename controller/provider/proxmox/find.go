package proxmox

import (
	"context"
	"fmt"
	"strings"

	pve "github.com/luthermonson/go-proxmox"
)

// located is a node's VM as find found it.
type located struct {
	ref vmRef
	// how: "tags" (name and cluster tags), "recorded" (the VMID recorded
	// in state), "marker" (name and the description's marker: a clone
	// whose run died before it was tagged).
	how string
	// unproven: the recorded VMID holds a VM still locked by a clone, so
	// whose it is shows only once the lock is gone.
	unproven bool
}

// find looks for node's VM, without waiting or changing anything: by name
// and cluster tags; else by the VMID recorded before its clone; else by
// name and the description marker the clone was given. Proxmox has no
// find-by-name: it lists every VM of the cluster (/cluster/resources).
func (p *Provider) find(ctx context.Context, c *pve.Client, node string) (located, bool, error) {
	rs, err := p.clusterAPI(c).Resources(ctx, "vm")
	if err != nil {
		return located{}, false, authError("list VMs", err)
	}
	var tagged, named []*pve.ClusterResource
	for _, r := range rs {
		if r == nil || r.Type != "qemu" || r.Template != 0 || r.Name != node {
			continue
		}
		if ClusterTagged(r.Tags, p.cluster) {
			tagged = append(tagged, r)
		} else {
			named = append(named, r)
		}
	}
	switch len(tagged) {
	case 0:
	case 1:
		return located{ref: vmRef{id: int(tagged[0].VMID), node: tagged[0].Node}, how: "tags"}, true, nil
	default:
		var ids []string
		for _, r := range tagged {
			ids = append(ids, fmt.Sprintf("%d (on %s)", r.VMID, r.Node))
		}
		return located{}, false, fmt.Errorf("%w: VMs %s are all node %s of cluster %s; destroy the ones not in use",
			ErrDuplicateVM, strings.Join(ids, ", "), node, p.cluster)
	}

	id, err := p.recorded(ctx, node)
	if err != nil {
		return located{}, false, err
	}
	if id > 0 {
		for _, r := range rs {
			if r == nil || r.Type != "qemu" || int(r.VMID) != id || r.Template != 0 {
				continue
			}
			ref := vmRef{id: id, node: r.Node}
			vm, err := p.load(ctx, c, ref)
			if isNotExist(err) {
				break
			}
			if err != nil {
				return located{}, false, authError("read "+ref.String(), err)
			}
			if p.owns(vm.VirtualMachineConfig, node) {
				return located{ref: ref, how: "recorded"}, true, nil
			}
			if lockOf(vm) == "clone" {
				return located{ref: ref, how: "recorded", unproven: true}, true, nil
			}
			break
		}
	}

	for _, r := range named {
		ref := vmRef{id: int(r.VMID), node: r.Node}
		vm, err := p.load(ctx, c, ref)
		if isNotExist(err) {
			continue
		}
		if err != nil {
			return located{}, false, authError("read "+ref.String(), err)
		}
		if m, ok := ParseMarker(vm.VirtualMachineConfig.Description); ok && m.Cluster == p.cluster && m.Node == node {
			return located{ref: ref, how: "marker"}, true, nil
		}
	}
	return located{}, false, nil
}

// confirm settles an unproven find: it waits for the clone's lock to go and
// reports whether the VM is node's. A VM that is gone, or someone else's,
// is not.
func (p *Provider) confirm(ctx context.Context, c *pve.Client, loc located, node string) (bool, error) {
	if !loc.unproven {
		return true, nil
	}
	vm, err := p.waitUnlocked(ctx, c, loc.ref)
	if isNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !p.owns(vm.VirtualMachineConfig, node) {
		p.log.WarnContext(ctx, "the VMID recorded for the node holds another VM; leaving it alone", "node", node, "vmid", loc.ref.id, "name", vm.VirtualMachineConfig.Name)
		return false, nil
	}
	return true, nil
}
