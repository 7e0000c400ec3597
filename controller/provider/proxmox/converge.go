package proxmox

import (
	"context"
	"fmt"
	"strings"

	pve "github.com/luthermonson/go-proxmox"

	"github.com/kthw/kthw/controller/config"
)

// settings returns what node n's VM should have.
func (p *Provider) settings(n config.NodeSpec) settings {
	return settings{
		name:         n.Name,
		cores:        n.Cores,
		memoryMiB:    n.MemoryMiB,
		diskGiB:      n.DiskGiB,
		ipconfig0:    IPConfig(n.Address, p.gateway),
		nameserver:   strings.Join(p.cfg.Nameservers, " "),
		searchdomain: p.cfg.SearchDomain,
		ciuser:       p.cfg.User,
		sshkeys:      p.authorized,
		tags:         TagString(Tags(p.cluster, n.Role)),
		description:  Marker{Cluster: p.cluster, Node: n.Name, Role: n.Role}.Description(),
	}
}

// converge brings node n's VM to its settings and running. A stopped VM
// (a fresh clone among them) gets every setting before it starts, so
// cloud-init finds them on its first boot. A running VM gets the changes
// that are safe live (name, tags, description, a larger disk); cores or
// memory that differ are fixed with a shutdown and start; cloud-init
// settings that differ (address, user, SSH keys) are only reported, since
// a running node is not re-provisioned. started says whether this call
// started the VM.
func (p *Provider) converge(ctx context.Context, c *pve.Client, n config.NodeSpec, r vmRef) (vm *pve.VirtualMachine, started bool, err error) {
	vm, err = p.waitUnlocked(ctx, c, r)
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", r, err)
	}
	want := p.settings(n)
	changes := diffConfig(vm.VirtualMachineConfig, want)
	running := vm.Status == pve.StatusVirtualMachineRunning

	if !running {
		if err := p.applyConfig(ctx, c, r, changes); err != nil {
			return vm, false, err
		}
		if err := p.growDisk(ctx, c, r, vm.VirtualMachineConfig, n.DiskGiB); err != nil {
			return vm, false, err
		}
		if err := p.start(ctx, c, r); err != nil {
			return vm, true, err
		}
		return vm, true, nil
	}

	var apply, hw []change
	for _, ch := range changes {
		switch ch.kind {
		case live:
			apply = append(apply, ch)
		case hardware:
			hw = append(hw, ch)
		case cloudInit:
			p.log.WarnContext(ctx, "running VM differs from the cluster file; not re-provisioned (destroy the node to apply)",
				"node", n.Name, "vmid", r.id, "setting", ch.key, "has", ch.from, "want", ch.to)
		}
	}
	if err := p.applyConfig(ctx, c, r, apply); err != nil {
		return vm, false, err
	}
	if err := p.growDisk(ctx, c, r, vm.VirtualMachineConfig, n.DiskGiB); err != nil {
		return vm, false, err
	}
	if len(hw) > 0 {
		for _, ch := range hw {
			p.log.WarnContext(ctx, "VM differs from the cluster file; restarting it to apply", "node", n.Name, "vmid", r.id,
				"setting", ch.key, "has", ch.from, "want", ch.to)
		}
		if err := p.shutdown(ctx, c, r); err != nil {
			return vm, false, err
		}
		if err := p.applyConfig(ctx, c, r, hw); err != nil {
			return vm, false, err
		}
		if err := p.start(ctx, c, r); err != nil {
			return vm, true, err
		}
		return vm, true, nil
	}
	return vm, false, nil
}

// applyConfig sets changed settings in one config request (POST: a task).
func (p *Provider) applyConfig(ctx context.Context, c *pve.Client, r vmRef, cs []change) error {
	if len(cs) == 0 {
		return nil
	}
	keys := make([]string, len(cs))
	for i, ch := range cs {
		keys[i] = ch.key
	}
	p.log.DebugContext(ctx, "configuring", "vmid", r.id, "settings", strings.Join(keys, ","))
	task, err := handle(c, r).Config(ctx, options(cs)...)
	if err != nil {
		return authError(fmt.Sprintf("configure %s (%s)", r, strings.Join(keys, ", ")), err)
	}
	if err := p.w.waitTask(ctx, task, p.cfg.TaskTimeout); err != nil {
		return fmt.Errorf("configure %s (%s): %w", r, strings.Join(keys, ", "), err)
	}
	return nil
}

// growDisk resizes the boot disk to an absolute size when it is smaller
// ("20G", never "+20G", which would grow it on every run). Proxmox cannot
// shrink a disk; a larger one is reported and left.
func (p *Provider) growDisk(ctx context.Context, c *pve.Client, r vmRef, cfg *pve.VirtualMachineConfig, gib int) error {
	key, val, ok := bootDisk(cfg)
	if !ok {
		return fmt.Errorf("%s has no boot disk to size", r)
	}
	want := int64(gib) << 30
	if have, ok := diskBytes(val); ok && have >= want {
		if have > want {
			p.log.WarnContext(ctx, "disk is larger than the cluster file says; Proxmox cannot shrink disks, left as is",
				"vmid", r.id, "disk", key, "bytes", have, "diskGiB", gib)
		}
		return nil
	}
	size := fmt.Sprintf("%dG", gib)
	task, err := handle(c, r).ResizeDisk(ctx, key, size)
	if err != nil {
		return authError(fmt.Sprintf("resize %s %s to %s", r, key, size), err)
	}
	if err := p.w.waitTask(ctx, task, p.cfg.TaskTimeout); err != nil {
		return fmt.Errorf("resize %s %s to %s: %w", r, key, size, err)
	}
	return nil
}

// start starts the VM and waits for the start task.
func (p *Provider) start(ctx context.Context, c *pve.Client, r vmRef) error {
	task, err := handle(c, r).Start(ctx)
	if err != nil {
		return authError("start "+r.String(), err)
	}
	if err := p.w.waitTask(ctx, task, p.cfg.TaskTimeout); err != nil {
		return fmt.Errorf("start %s: %w", r, err)
	}
	return nil
}

// shutdown stops the VM cleanly (ACPI or guest agent), and hard when that
// fails.
func (p *Provider) shutdown(ctx context.Context, c *pve.Client, r vmRef) error {
	task, err := handle(c, r).Shutdown(ctx)
	if err == nil {
		err = p.w.waitTask(ctx, task, p.cfg.TaskTimeout)
	}
	if err == nil {
		return nil
	}
	p.log.WarnContext(ctx, "clean shutdown failed; stopping", "vmid", r.id, "error", err)
	return p.stop(ctx, c, r)
}

// stop powers the VM off and waits; a VM not running is done.
func (p *Provider) stop(ctx context.Context, c *pve.Client, r vmRef) error {
	task, err := handle(c, r).Stop(ctx)
	if err == nil {
		err = p.w.waitTask(ctx, task, p.cfg.TaskTimeout)
	}
	if err != nil && !isNotExist(err) && !strings.Contains(msgOf(err), "not running") {
		return authError("stop "+r.String(), err)
	}
	return nil
}
