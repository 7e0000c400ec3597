package proxmox

import (
	"context"
	"errors"
	"fmt"

	pve "github.com/luthermonson/go-proxmox"

	"github.com/kthw/kthw/controller/config"
)

// retry marks an error worth another attempt.
type retry struct{ err error }

func (r retry) Error() string { return r.err.Error() }
func (r retry) Unwrap() error { return r.err }

func isRetry(err error) bool {
	var r retry
	return errors.As(err, &r)
}

// cloneStats counts what clones took (for tests and figures).
type cloneStats struct {
	Clones, Retries, LockRetries, IDConflicts int
}

// clone makes node's VM from the template and returns it once the clone
// task is done. Its VMID is allocated here and recorded before the clone
// is requested. Clones per Proxmox node and storage are limited; a clone
// that hits a lock timeout or finds its VMID taken is retried with backoff
// (a new VMID for the latter). A clone request whose outcome is unknown (the
// connection failed) is checked for: the VM it may have made is adopted,
// never cloned a second time.
func (p *Provider) clone(ctx context.Context, c *pve.Client, n config.NodeSpec, t *templateInfo) (vmRef, error) {
	full := p.cfg.CloneMode != config.CloneLinked
	storage := t.storage
	if full && p.cfg.Storage != "" {
		storage = p.cfg.Storage
	}
	release, err := p.limit.acquire(ctx, p.cfg.Node+"/"+storage)
	if err != nil {
		return vmRef{}, err
	}
	defer release()

	prefer, err := p.recorded(ctx, n.Name)
	if err != nil {
		return vmRef{}, err
	}
	marker := Marker{Cluster: p.cluster, Node: n.Name, Role: n.Role}
	src := handle(c, t.ref)
	var made vmRef
	// lost holds the VMIDs of clone requests whose answer was lost: Proxmox
	// may still carry them out, so they are asked for again (never a new
	// VMID for the same node while the old one may appear).
	lost := map[int]bool{}
	// adopted takes ref as made when it holds node's VM.
	adopted := func(ref vmRef) (bool, error) {
		ok, err := p.adoptIfOurs(ctx, c, ref, n.Name)
		if ok {
			made = ref
		}
		return ok, err
	}
	retries, err := p.o.Backoff.Retry(ctx, p.o.Clock, isRetry, func(attempt int) error {
		for id := range lost {
			// A lost request may have made the VM meanwhile.
			if ok, err := adopted(vmRef{id: id, node: p.cfg.Node}); ok || err != nil {
				return err
			}
			if p.alloc.isTaken(id) {
				delete(lost, id) // someone else's
			} else {
				prefer = id // not there: ask for it again
			}
		}
		id, free, err := p.alloc.allocate(ctx, p.clusterAPI(c), prefer)
		if err != nil {
			return err
		}
		prefer = 0
		if err := p.record(ctx, n.Name, id); err != nil {
			free()
			return err
		}
		ref := vmRef{id: id, node: p.cfg.Node}
		failed := func(err error) error { return fmt.Errorf("clone %s to VMID %d: %w", t.name, id, err) }
		opts := &pve.VirtualMachineCloneOptions{
			NewID: id, Name: n.Name, Description: marker.Description(), Pool: p.cfg.Pool,
			Full: pve.IntOrBool(full),
		}
		if full && p.cfg.Storage != "" {
			opts.Storage = p.cfg.Storage // linked clones stay on the template's storage
		}
		if t.ref.node != p.cfg.Node {
			opts.Target = p.cfg.Node
		}
		p.log.InfoContext(ctx, "cloning", "node", n.Name, "template", t.name, "vmid", id, "attempt", attempt+1)
		_, task, err := src.Clone(ctx, opts)
		free()
		if err != nil {
			switch {
			case isAlreadyExists(err) && lost[id]:
				// Perhaps the lost request got through after all: the
				// next attempt looks.
				return retry{failed(err)}
			case isAmbiguous(err):
				// The request may have been carried out.
				if ok, aerr := adopted(ref); ok || aerr != nil {
					return aerr
				}
				if !p.alloc.isTaken(id) {
					lost[id] = true
				}
				return retry{failed(err)}
			case p.contended(id, err):
				return retry{failed(err)}
			}
			return authError(fmt.Sprintf("clone %s to VMID %d", t.name, id), err)
		}
		if err := p.w.waitTask(ctx, task, p.cfg.TaskTimeout); err != nil {
			var te *TaskError
			if !errors.As(err, &te) {
				// The task was lost track of, not failed: look at what
				// it made.
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if ok, aerr := adopted(ref); ok || aerr != nil {
					return aerr
				}
				return failed(err)
			}
			// A failed clone normally removes its VM; make sure.
			if cerr := p.removeFailedClone(ctx, c, ref, n.Name); cerr != nil {
				return errors.Join(failed(err), cerr)
			}
			if p.contended(id, err) {
				return retry{failed(err)}
			}
			return failed(err)
		}
		made = ref
		return nil
	})
	p.stats(func(s *cloneStats) { s.Clones++; s.Retries += retries })
	if err != nil {
		if rerr := p.record(context.WithoutCancel(ctx), n.Name, 0); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return vmRef{}, err
	}
	if retries > 0 {
		p.log.InfoContext(ctx, "cloned after retries", "node", n.Name, "vmid", made.id, "retries", retries)
	}
	return made, nil
}

// contended reports whether a failed clone is worth another attempt, and
// counts it: its VMID was taken meanwhile (by another client: the allocator
// skips it from now on), or it hit a lock that may free up.
func (p *Provider) contended(id int, err error) bool {
	switch {
	case isAlreadyExists(err):
		p.alloc.markTaken(id)
		p.stats(func(s *cloneStats) { s.IDConflicts++ })
	case isLockContention(err):
		p.stats(func(s *cloneStats) { s.LockRetries++ })
	default:
		return false
	}
	return true
}

// adoptIfOurs checks whether a VMID holds node's VM (made by a clone whose
// answer was lost), waiting for the clone's lock to go.
func (p *Provider) adoptIfOurs(ctx context.Context, c *pve.Client, r vmRef, node string) (bool, error) {
	vm, err := p.waitUnlocked(ctx, c, r)
	if isNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if p.owns(vm.VirtualMachineConfig, node) {
		return true, nil
	}
	p.alloc.markTaken(r.id)
	return false, nil
}

// removeFailedClone destroys what a failed clone left at its VMID, if it
// is node's (a VM someone else made there is left alone).
func (p *Provider) removeFailedClone(ctx context.Context, c *pve.Client, r vmRef, node string) error {
	ctx = context.WithoutCancel(ctx)
	vm, err := p.waitUnlocked(ctx, c, r)
	if isNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check what the failed clone left: %w", err)
	}
	if !p.owns(vm.VirtualMachineConfig, node) {
		return nil
	}
	p.log.WarnContext(ctx, "removing what a failed clone left", "node", node, "vmid", r.id)
	return p.destroy(ctx, c, r)
}

// stats updates the clone counters.
func (p *Provider) stats(fn func(*cloneStats)) {
	p.statsMu.Lock()
	fn(&p.cloneStats)
	p.statsMu.Unlock()
}
