package proxmox

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	pve "github.com/luthermonson/go-proxmox"
)

// checkBake refuses, before anything is made, a bake that cannot work.
func (p *Provider) checkBake(ctx context.Context, r *Recipe, o BuildOptions) error {
	var errs []error
	if r.Bake == nil {
		errs = append(errs, fmt.Errorf("the recipe of %s has no bake steps for its image without the guest agent", r.Profile))
	}
	if o.Baker == nil {
		errs = append(errs, errors.New("the image has no guest agent and no way to log in to the builder VM was given"))
	}
	if !o.Address.IsValid() || !o.Address.Addr().Is4() {
		errs = append(errs, errors.New("the builder VM needs a static IPv4 address for its one boot (--address CIDR)"))
	}
	if p.authorized == "" {
		errs = append(errs, errors.New("no SSH key to authorize for the builder VM"))
	}
	if p.cfg.Username == "" {
		errs = append(errs, ErrTokenConsole)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s lacks qemu-guest-agent, so template build installs it in a VM booted once from it: %w", r.Image.File, errors.Join(errs...))
	}
	return nil
}

// bake boots the builder VM once, reads its host keys from the serial
// console, lets the Baker install and clean, shuts it down and removes the
// one-boot cloud-init settings. The VM is left stopped, ready for the
// template conversion.
func (p *Provider) bake(ctx context.Context, c *pve.Client, r vmRef, rc *Recipe, o BuildOptions) error {
	gw := o.Gateway
	if !gw.IsValid() {
		gw = p.gateway
	}
	opts := []pve.VirtualMachineOption{
		{Name: "ciuser", Value: p.cfg.User},
		{Name: "sshkeys", Value: pve.EncodeSSHKeys(p.authorized)},
		{Name: "ipconfig0", Value: IPConfig(o.Address, gw)},
	}
	if ns := strings.Join(p.cfg.Nameservers, " "); ns != "" {
		opts = append(opts, pve.VirtualMachineOption{Name: "nameserver", Value: ns})
	}
	if p.cfg.SearchDomain != "" {
		opts = append(opts, pve.VirtualMachineOption{Name: "searchdomain", Value: p.cfg.SearchDomain})
	}
	p.log.InfoContext(ctx, "booting the builder VM once to install the guest agent", "vmid", r.id, "address", o.Address, "user", p.cfg.User)
	task, err := handle(c, r).Config(ctx, opts...)
	if err == nil {
		err = p.w.waitTask(ctx, task, p.cfg.TaskTimeout)
	}
	if err != nil {
		return authError("set the builder VM's one-boot cloud-init settings", err)
	}

	start, err := handle(c, r).Start(ctx)
	if err != nil {
		return authError("start the builder "+r.String(), err)
	}
	if err := p.waitRunning(ctx, c, r, start); err != nil {
		return err
	}
	timeout := o.ConsoleTimeout
	if timeout <= 0 {
		timeout = p.cfg.BootTimeout
	}
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	keys, err := p.consoleHostKeys(ctx, c, r, timeout)
	if err != nil {
		return err
	}
	// The start task ends on its own; its failure would show above.
	_ = p.w.waitTask(ctx, start, p.cfg.TaskTimeout)
	p.log.InfoContext(ctx, "read the builder VM's host keys from its serial console", "vmid", r.id, "keys", len(keys))

	target := BakeTarget{Host: o.Address.Addr().String(), Port: 22, User: p.cfg.User, HostKeys: keys}
	if err := o.Baker.Bake(ctx, target, rc.Bake); err != nil {
		return fmt.Errorf("bake %s into the builder VM %d: %w", strings.Join(rc.Bake.Packages, ", "), r.id, err)
	}

	// What the template is for: its guest agent answers through the API
	// (and the shutdown below goes through it, as Proxmox does for a VM
	// with agent=1).
	if err := p.waitBakedAgent(ctx, c, r, timeout); err != nil {
		return err
	}
	if err := p.shutdownBuilder(ctx, c, r, o.ShutdownTimeout); err != nil {
		return err
	}
	// Delete what the one boot was given: a template carries no user,
	// key or address.
	del := make([]string, len(opts))
	for i, opt := range opts {
		del[i] = opt.Name
	}
	task, err = handle(c, r).Config(ctx, pve.VirtualMachineOption{Name: "delete", Value: strings.Join(del, ",")})
	if err == nil {
		err = p.w.waitTask(ctx, task, p.cfg.TaskTimeout)
	}
	if err != nil {
		return authError("delete the builder VM's one-boot cloud-init settings", err)
	}
	return nil
}

// waitBakedAgent waits until the builder VM's guest agent, which the bake
// installed, answers a ping through the API.
func (p *Provider) waitBakedAgent(ctx context.Context, c *pve.Client, r vmRef, timeout time.Duration) error {
	deadline := p.w.clock.Now().Add(timeout)
	vm := handle(c, r)
	var iv time.Duration
	for {
		err := vm.AgentPing(ctx)
		switch {
		case err == nil:
			p.log.InfoContext(ctx, "the baked guest agent answers", "vmid", r.id)
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case isUnauthorized(err):
			return authError("ping the guest agent of the builder "+r.String(), err)
		case agentNotConfigured(err):
			return fmt.Errorf("the builder %s has no guest agent configured (agent=1): %w", r, err)
		}
		if !p.w.clock.Now().Before(deadline) {
			return fmt.Errorf("the guest agent the bake installed in the builder %s does not answer through the API after %s (%v): does the recipe's bake start it (bake.enable)?",
				r, timeout, err)
		}
		iv = p.w.interval(iv)
		if err := p.w.clock.Sleep(ctx, iv); err != nil {
			return err
		}
	}
}

// waitRunning polls (quickly: the console must be open before cloud-init
// prints the host keys) until the VM runs or its start task failed.
func (p *Provider) waitRunning(ctx context.Context, c *pve.Client, r vmRef, start *pve.Task) error {
	deadline := p.w.clock.Now().Add(p.cfg.TaskTimeout)
	for {
		st := handle(c, r)
		if err := st.Ping(ctx); err != nil {
			return authError("read the status of "+r.String(), err)
		}
		if st.Status == pve.StatusVirtualMachineRunning {
			return nil
		}
		if start != nil { // nil: the start was answered synchronously
			t := pve.NewTask(start.UPID, c)
			if err := t.Ping(ctx); err == nil && t.IsCompleted && !taskSucceeded(t.ExitStatus) {
				return &TaskError{UPID: string(t.UPID), Type: t.Type, Exit: t.ExitStatus}
			}
		}
		if !p.w.clock.Now().Before(deadline) {
			return fmt.Errorf("%s did not start within %s", r, p.cfg.TaskTimeout)
		}
		if err := p.w.clock.Sleep(ctx, min(p.w.poll, 250*time.Millisecond)); err != nil {
			return err
		}
	}
}

// shutdownBuilder shuts the VM down cleanly (ACPI, or the guest agent's
// guest-shutdown where it answers) and stops it when that does not end in
// timeout; then it waits until the VM is stopped.
func (p *Provider) shutdownBuilder(ctx context.Context, c *pve.Client, r vmRef, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	task, err := handle(c, r).Shutdown(ctx)
	if err == nil {
		err = p.w.waitTask(ctx, task, timeout)
	}
	if err != nil {
		p.log.WarnContext(ctx, "the builder VM did not shut down cleanly; stopping it", "vmid", r.id, "err", err)
		if err := p.stop(ctx, c, r); err != nil {
			return err
		}
	}
	deadline := p.w.clock.Now().Add(p.cfg.TaskTimeout)
	for {
		st := handle(c, r)
		if err := st.Ping(ctx); err != nil {
			return authError("read the status of "+r.String(), err)
		}
		if st.Status == pve.StatusVirtualMachineStopped {
			return nil
		}
		if !p.w.clock.Now().Before(deadline) {
			return fmt.Errorf("%s still %s %s after its shutdown", r, st.Status, p.cfg.TaskTimeout)
		}
		if err := p.w.clock.Sleep(ctx, p.w.poll); err != nil {
			return err
		}
	}
}
