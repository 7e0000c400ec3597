package pvesim

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// VMState is a VM as tests see it.
type VMState struct {
	VMID int
	Node string
	// Config is the config as stored (Proxmox-formatted strings, no
	// digest); Pending holds what a running VM takes at its next start.
	Config  map[string]string
	Pending map[string]string
	// PendingDelete lists the keys a running VM deletes at its next start.
	PendingDelete []string
	Running       bool
	// Template and Lock mirror the "template" and "lock" keys.
	Template bool
	Lock     string
	Pool     string
	// Guest is what the backend returned at the last start.
	Guest GuestInfo
	// Foreign marks a VM a fault (StealNextIDs) made as "another client".
	Foreign bool
}

// VolumeState is a storage volume.
type VolumeState struct {
	VolID   string
	Node    string // empty on shared storages
	VMID    int
	Size    int64
	Content string
	// Base is the base volume of a linked clone.
	Base string
	// GuestAgent: the disk's operating system has qemu-guest-agent.
	GuestAgent bool
}

// VM returns one VM.
func (s *Server) VM(vmid int) (VMState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.vms[vmid]
	if !ok {
		return VMState{}, false
	}
	return s.vmState(v), true
}

// VMs returns every VM, by VMID.
func (s *Server) VMs() []VMState {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := slices.Sorted(maps.Keys(s.vms))
	out := make([]VMState, 0, len(ids))
	for _, id := range ids {
		out = append(out, s.vmState(s.vms[id]))
	}
	return out
}

func (s *Server) vmState(v *vm) VMState {
	g := v.guest
	g.Interfaces = slices.Clone(g.Interfaces)
	g.Files = maps.Clone(g.Files)
	return VMState{
		VMID: v.id, Node: v.node, Config: cloneMap(v.conf), Pending: cloneMap(v.pending),
		PendingDelete: slices.Clone(v.pendingDel),
		Running:       v.running, Template: v.isTemplate(), Lock: v.conf["lock"], Pool: v.pool,
		Guest: g, Foreign: s.stolen[v.id],
	}
}

// Volumes returns every volume, by volid.
func (s *Server) Volumes() []VolumeState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []VolumeState{}
	for _, v := range s.volumes {
		vs := VolumeState{VolID: v.volid(), VMID: v.vmid, Size: v.size, Content: v.content, GuestAgent: !v.noGuestAgent}
		if st := s.findStorage(v.storage); st != nil && !st.spec.Shared {
			vs.Node = v.node
		}
		if v.base != "" {
			vs.Base = v.storage + ":" + v.base
		}
		out = append(out, vs)
	}
	slices.SortFunc(out, func(a, b VolumeState) int {
		if a.VolID != b.VolID {
			if a.VolID < b.VolID {
				return -1
			}
			return 1
		}
		if a.Node < b.Node {
			return -1
		}
		return 0
	})
	return out
}

// AddVM creates a VM directly, as another client would have: config holds
// Proxmox-formatted values. It fails if the VMID is taken.
func (s *Server) AddVM(vmid int, node string, config map[string]string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.vms[vmid]; ok {
		return fmt.Errorf("VM %d already exists", vmid)
	}
	if node == "" {
		node = s.nodes[0].name
	}
	if s.findNode(node) == nil {
		return fmt.Errorf("no node %q", node)
	}
	if vmid < 100 {
		return errors.New("VMID must be at least 100")
	}
	s.vms[vmid] = &vm{id: vmid, node: node, conf: cloneMap(config), created: time.Now()}
	return nil
}

// SetLock sets a VM's config lock the way a crashed clone ("clone") or a
// running backup ("backup") leaves it; "" removes it, like qm unlock.
// Start, config and delete tasks then fail with "VM is locked (LOCK)".
func (s *Server) SetLock(vmid int, lock string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.vms[vmid]
	if !ok {
		return fmt.Errorf("no VM %d", vmid)
	}
	if lock == "" {
		delete(v.conf, "lock")
	} else {
		v.conf["lock"] = lock
	}
	return nil
}

// InstallGuestAgent is qemu-guest-agent installed in a running VM's guest
// (what a template build's bake does): its agent answers from now on and
// its boot disk carries it.
func (s *Server) InstallGuestAgent(vmid int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.vms[vmid]
	if !ok {
		return fmt.Errorf("no VM %d", vmid)
	}
	if !v.running {
		return fmt.Errorf("VM %d is not running", vmid)
	}
	s.guestAgentInstalled(v)
	return nil
}

// SeedTemplate adds a template while the server runs.
func (s *Server) SeedTemplate(t TemplateSpec) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seedTemplate(t)
}

// SetFaults replaces the fault knobs.
func (s *Server) SetFaults(f Faults) {
	s.mu.Lock()
	s.faults = f.clone()
	s.mu.Unlock()
}

// UpdateFaults edits the fault knobs in place.
func (s *Server) UpdateFaults(edit func(*Faults)) {
	s.mu.Lock()
	edit(&s.faults)
	s.mu.Unlock()
}

// Faults returns the fault knobs as they are now (counters count down).
func (s *Server) Faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults.clone()
}

// FaultStats returns how often each kind of fault fired.
func (s *Server) FaultStats() FaultStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.stats)
}
