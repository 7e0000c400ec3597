package proxmox

import (
	"context"
	"fmt"
	"slices"
	"strings"

	pve "github.com/luthermonson/go-proxmox"
)

// templateInfo is the template nodes are cloned from.
type templateInfo struct {
	name string
	ref  vmRef
	// storage holds the template's boot disk (the clone's source).
	storage string
}

// templateInfo returns the template, looked up once per Prepare.
func (p *Provider) templateInfo(ctx context.Context, c *pve.Client) (*templateInfo, error) {
	p.mu.Lock()
	t := p.tmpl
	p.mu.Unlock()
	if t != nil {
		return t, nil
	}
	t, err := findTemplate(ctx, c, p.template, p.cfg.Node)
	if err != nil {
		return nil, p.templateHint(err)
	}
	p.mu.Lock()
	p.tmpl = t
	p.mu.Unlock()
	p.log.DebugContext(ctx, "template", "name", t.name, "vmid", t.ref.id, "node", t.ref.node)
	return t, nil
}

func (p *Provider) templateHint(err error) error {
	return fmt.Errorf("%w; build it with `kthw-controller template build --profile %s -f <this cluster file>`, or name another with provider.proxmox.template", err, p.profile)
}

// findTemplate finds the VM template called name (or tagged name) through
// the cluster's resources, preferring one on node (a clone from another
// node needs shared storage), then the lowest VMID. It checks that the
// template has a cloud-init drive and the guest agent on: nodes get their
// address and SSH key from cloud-init and report them through the agent.
func findTemplate(ctx context.Context, c *pve.Client, name, node string) (*templateInfo, error) {
	rs, err := new(pve.Cluster).New(c).Resources(ctx, "vm")
	if err != nil {
		return nil, authError("list VMs", err)
	}
	var cands []*pve.ClusterResource
	lname := strings.ToLower(name)
	for _, r := range rs {
		if r == nil || r.Type != "qemu" || r.Template != 1 {
			continue
		}
		if r.Name == name || slices.Contains(ParseTags(r.Tags), lname) {
			cands = append(cands, r)
		}
	}
	if len(cands) == 0 {
		return nil, fmt.Errorf("%w: no VM template named %s", ErrTemplateMissing, name)
	}
	slices.SortFunc(cands, func(a, b *pve.ClusterResource) int {
		if (a.Node == node) != (b.Node == node) {
			if a.Node == node {
				return -1
			}
			return 1
		}
		return int(a.VMID) - int(b.VMID)
	})
	r := cands[0]
	ref := vmRef{id: int(r.VMID), node: r.Node}
	vm, err := nodeAPI(c, ref.node).VirtualMachine(ctx, ref.id)
	if err != nil {
		return nil, authError("read template "+name, err)
	}
	cfg := vm.VirtualMachineConfig
	if cfg == nil {
		cfg = &pve.VirtualMachineConfig{}
	}
	if !hasCloudInitDrive(cfg) {
		return nil, fmt.Errorf("%w: template %s (VMID %d) has no cloud-init drive, so its clones get no address and no SSH key; add one with `qm set %d --ide2 <storage>:cloudinit`",
			ErrTemplateUnfit, name, ref.id, ref.id)
	}
	if !agentEnabled(cfg) {
		return nil, fmt.Errorf("%w: template %s (VMID %d) has the QEMU guest agent off, so its clones cannot report their address; `qm set %d --agent enabled=1` (the image needs qemu-guest-agent installed)",
			ErrTemplateUnfit, name, ref.id, ref.id)
	}
	t := &templateInfo{name: name, ref: ref}
	if _, v, ok := bootDisk(cfg); ok {
		t.storage, _, _ = strings.Cut(parsePropString(v)[""], ":")
	}
	return t, nil
}
