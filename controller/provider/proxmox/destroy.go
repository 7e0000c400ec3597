package proxmox

import (
	"context"
	"errors"
	"fmt"

	pve "github.com/luthermonson/go-proxmox"
)

// Destroy removes node name's VM and its disks: it waits out a clone still
// under way, stops the VM and deletes it with purge (out of backup and
// replication jobs, HA) and destroy-unreferenced-disks. A VM that does not
// exist counts as destroyed.
func (p *Provider) Destroy(ctx context.Context, name string) error {
	c, err := p.Client(ctx)
	if err != nil {
		return err
	}
	loc, found, err := p.find(ctx, c, name)
	if err != nil {
		return err
	}
	if found {
		if found, err = p.confirm(ctx, c, loc, name); err != nil {
			return err
		}
	}
	if !found {
		return p.record(ctx, name, 0)
	}
	p.log.InfoContext(ctx, "destroying VM", "node", name, "vmid", loc.ref.id)
	if err := p.destroy(ctx, c, loc.ref); err != nil {
		return err
	}
	return p.record(ctx, name, 0)
}

// destroy stops and deletes a VM; gone already is done.
func (p *Provider) destroy(ctx context.Context, c *pve.Client, r vmRef) error {
	vm, err := p.waitUnlocked(ctx, c, r)
	if isNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("destroy %s: %w", r, err)
	}
	if vm.Status != pve.StatusVirtualMachineStopped {
		if err := p.stop(ctx, c, r); err != nil {
			return fmt.Errorf("destroy %s: %w", r, err)
		}
	}
	task, err := handle(c, r).Delete(ctx, &pve.VirtualMachineDeleteOptions{Purge: true, DestroyUnreferencedDisks: true})
	if err == nil {
		err = p.w.waitTask(ctx, task, p.cfg.TaskTimeout)
	}
	if err != nil && !isNotExist(err) {
		var te *TaskError
		if errors.As(err, &te) {
			return fmt.Errorf("destroy %s: %w", r, err)
		}
		return authError("destroy "+r.String(), err)
	}
	return nil
}
