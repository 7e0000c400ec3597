package proxmox

import (
	"context"
	"fmt"
	"sync"

	pve "github.com/luthermonson/go-proxmox"
)

// minVMID and maxVMID bound Proxmox's VMIDs (0-99 are reserved).
const (
	minVMID = 100
	maxVMID = 999_999_999
)

// allocator hands out VMIDs to this process's clones. Proxmox has no atomic
// "allocate": /cluster/nextid only says what is free now, so two clones that
// ask at once get the same answer (and go-proxmox's Clone without NewID does
// exactly that). The allocator checks candidates under one mutex, skips the
// ones it has handed out and not yet released, and remembers the ones a
// clone found taken anyway (another client got there first).
type allocator struct {
	mu       sync.Mutex
	reserved map[int]bool
	taken    map[int]bool
}

func newAllocator() *allocator {
	return &allocator{reserved: map[int]bool{}, taken: map[int]bool{}}
}

// allocate reserves a free VMID: prefer if it is free, else the first free
// one from /cluster/nextid on. Release it once the clone request has
// returned: the VM then holds it, or it is free again.
func (a *allocator) allocate(ctx context.Context, cl *pve.Cluster, prefer int) (int, func(), error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	free := func(id int) (bool, error) {
		if a.reserved[id] || a.taken[id] {
			return false, nil
		}
		return cl.CheckID(ctx, id)
	}
	reserve := func(id int) (int, func(), error) {
		a.reserved[id] = true
		return id, func() {
			a.mu.Lock()
			delete(a.reserved, id)
			a.mu.Unlock()
		}, nil
	}
	if prefer > 0 {
		ok, err := free(prefer)
		if err != nil {
			return 0, nil, authError("check VMID", err)
		}
		if ok {
			return reserve(prefer)
		}
	}
	id, err := cl.NextID(ctx)
	if err != nil {
		return 0, nil, authError("next free VMID", err)
	}
	for ; id <= maxVMID; id++ {
		ok, err := free(id)
		if err != nil {
			return 0, nil, authError("check VMID", err)
		}
		if ok {
			return reserve(id)
		}
		if err := ctx.Err(); err != nil {
			return 0, nil, err
		}
	}
	return 0, nil, fmt.Errorf("no free VMID")
}

// markTaken records that a clone found id taken although it was checked
// free: some other client holds it.
func (a *allocator) markTaken(id int) {
	a.mu.Lock()
	a.taken[id] = true
	a.mu.Unlock()
}

func (a *allocator) isTaken(id int) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.taken[id]
}
