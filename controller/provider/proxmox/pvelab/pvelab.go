// Package pvelab backs the Proxmox simulator's VMs (package pvesim) with real lab nodes
// (package lab): a started VM boots a systemd-nspawn Debian node set up from the VM's
// cloud-init settings the way cloud-init sets up a cloud image — host name from the VM name,
// the ipconfig0 address and gateway on the lab bridge, the ciuser made with passwordless sudo
// and the VM's sshkeys as its authorized_keys (for ciuser root: root's keys) — with an SSH host
// key the backend generates on the VM's first start and keeps across restarts. The guest agent
// then reports net0's MAC with that address and reads cloud-init's boot-finished and the host
// public key (agent/file-read), so kthw's proxmox provider learns the key out of band and
// connects to a real node.
//
// A VM is the lab node <prefix><vmid> in the backend's lab. The simulator holds its VMs in
// memory only: nodes of the prefix found at Prepare belong to a simulator that is gone and are
// destroyed. Run one simulator per lab directory and prefix.
package pvelab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/kthw/kthw/controller/lab"
	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
)

// Options configure a Backend.
type Options struct {
	// MachinePrefix starts every lab node's name: a VM is "<prefix><vmid>" (default "pve-").
	// Node names are machine names and name the host side of the node's link, unique on the
	// machine.
	MachinePrefix string
	// DefaultUser is the user a VM without ciuser gets its keys for, as a cloud image's
	// default user (default "debian", Debian's cloud images').
	DefaultUser string
	// Logger receives a line per node started, stopped or destroyed (discarded when nil).
	Logger *slog.Logger
}

// DefaultMachinePrefix is Options.MachinePrefix's default.
const DefaultMachinePrefix = "pve-"

// Backend is a pvesim.Backend on lab nodes. Its methods are safe for concurrent use.
type Backend struct {
	lab    *lab.Lab
	prefix string
	user   string
	log    *slog.Logger

	mu       sync.Mutex
	prepared bool
	hostKeys map[int][]byte       // private host keys by VMID: a VM keeps its key across starts
	leases   map[int]netip.Prefix // addresses of VMs without a static ipconfig0
}

var _ pvesim.Backend = (*Backend)(nil)

// New returns a backend on l. It touches nothing on the host until Prepare or Start.
func New(l *lab.Lab, o Options) (*Backend, error) {
	if o.MachinePrefix == "" {
		o.MachinePrefix = DefaultMachinePrefix
	}
	if o.DefaultUser == "" {
		o.DefaultUser = "debian"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	p := o.MachinePrefix
	if strings.Trim(p, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" || p[0] == '-' || len(p) > 40 {
		return nil, fmt.Errorf("pvelab: machine prefix %q: want a-z, 0-9, '-', not starting with '-', at most 40 bytes", p)
	}
	return &Backend{lab: l, prefix: p, user: o.DefaultUser, log: o.Logger,
		hostKeys: map[int][]byte{}, leases: map[int]netip.Prefix{}}, nil
}

// Machine is the lab node name of a VM.
func (b *Backend) Machine(vmid int) string { return b.prefix + strconv.Itoa(vmid) }

// vmidOf is the VMID of one of the backend's nodes.
func (b *Backend) vmidOf(machine string) (int, bool) {
	s, ok := strings.CutPrefix(machine, b.prefix)
	if !ok {
		return 0, false
	}
	id, err := strconv.Atoi(s)
	return id, err == nil && strconv.Itoa(id) == s
}

// Prepare makes what nodes need (the lab image, bridge and apt proxy) and destroys nodes of
// the prefix left by an earlier simulator. Start calls it when it has not run.
func (b *Backend) Prepare(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.prepareLocked(ctx)
}

func (b *Backend) prepareLocked(ctx context.Context) error {
	if b.prepared {
		return nil
	}
	if _, err := b.lab.Prepare(ctx); err != nil {
		return err
	}
	nodes, err := b.lab.List(ctx)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if _, ok := b.vmidOf(n.Name); !ok {
			continue
		}
		b.log.WarnContext(ctx, "destroying a lab node left by an earlier simulator", "node", n.Name)
		if err := b.lab.Destroy(ctx, n.Name); err != nil {
			return err
		}
	}
	b.prepared = true
	return nil
}

// Start implements pvesim.Backend: it boots (or, for a node that runs, keeps) the VM's lab node
// and returns when its sshd answers.
func (b *Backend) Start(ctx context.Context, vm pvesim.VMInfo) (pvesim.GuestInfo, error) {
	spec, err := b.spec(ctx, vm)
	if err != nil {
		return pvesim.GuestInfo{}, err
	}
	start := time.Now()
	info, err := b.lab.Start(ctx, spec)
	if err != nil {
		return pvesim.GuestInfo{}, err
	}
	// The guest agent answers when the node's tree has it (a bake installs it; the lab's image
	// has none), or when the disk is one the simulator knows to carry it (a seeded template,
	// an import image listed with the agent), which the lab's image stands in for.
	_, gaErr := os.Stat(filepath.Join(info.Root, GuestAgentPath))
	if vm.Disk.GuestAgent {
		gaErr = nil
	}
	b.log.InfoContext(ctx, "VM booted on a lab node", "vmid", vm.VMID, "node", info.Name, "address", spec.Address,
		"layers", len(info.Layers), "guestAgent", gaErr == nil, "took", time.Since(start).Round(time.Millisecond))
	hostKey := info.HostPublicKey + " root@" + spec.Hostname
	return pvesim.GuestInfo{
		Interfaces: []pvesim.GuestInterface{{Name: "ens18", MAC: strings.ToLower(vm.MAC), Addresses: []netip.Prefix{spec.Address}}},
		Hostname:   spec.Hostname,
		Files: map[string]string{
			pvesim.BootFinishedFile: pvesim.BootFinished(time.Since(start), time.Now()),
			pvesim.HostKeyFile:      hostKey + "\n",
		},
		HostKeys:     []string{hostKey},
		NoGuestAgent: gaErr != nil,
	}, nil
}

// GuestAgentInstalled implements pvesim.AgentProber: whether the VM's lab node now has the
// guest agent in its tree (a bake installed it while the VM runs).
func (b *Backend) GuestAgentInstalled(ctx context.Context, vmid int) bool {
	info, err := b.lab.Status(ctx, b.Machine(vmid))
	if err != nil || info.Root == "" {
		return false
	}
	_, err = os.Stat(filepath.Join(info.Root, GuestAgentPath))
	return err == nil
}

var _ pvesim.AgentProber = (*Backend)(nil)

// GuestAgentPath is where a node's tree has qemu-guest-agent's daemon when the package is
// installed (Debian's qemu-guest-agent).
const GuestAgentPath = "usr/sbin/qemu-ga"

// layers are the read-only layers of a new VM's lab node: the disk of the nearest VM its disk
// was cloned from that has a lab node (a template booted once to be built: its node's own
// layer, above that node's layers). A clone of a template never booted starts on the image.
func (b *Backend) layers(ctx context.Context, vm pvesim.VMInfo) ([]string, error) {
	if _, err := b.lab.Status(ctx, b.Machine(vm.VMID)); err == nil {
		return nil, nil // the node exists: it keeps its layers
	}
	for _, id := range vm.Disk.Lineage {
		src, err := b.lab.Status(ctx, b.Machine(id))
		if errors.Is(err, lab.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if src.State == lab.StateRunning {
			return nil, fmt.Errorf("lab backend: VM %d's disk comes from VM %d, whose lab node runs", vm.VMID, id)
		}
		return append([]string{src.Upper}, src.Layers...), nil
	}
	return nil, nil
}

// spec is the lab node of a VM, as cloud-init would set the VM up.
func (b *Backend) spec(ctx context.Context, vm pvesim.VMInfo) (lab.NodeSpec, error) {
	if !vm.HasCloudInit {
		return lab.NodeSpec{}, errors.New("lab backend: the VM has no cloud-init drive: its guest would get no address, user or keys")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.prepareLocked(ctx); err != nil {
		return lab.NodeSpec{}, err
	}
	bridge := b.lab.Config().BridgeAddress
	addr := vm.Address
	switch {
	case addr.IsValid():
		if !addr.Addr().Is4() || !bridge.Masked().Contains(addr.Addr()) {
			return lab.NodeSpec{}, fmt.Errorf("lab backend: ipconfig0 address %s is not on the lab bridge's network %s (the cluster's nodeCIDR must be it)", addr, bridge.Masked())
		}
	case vm.DHCP:
		var err error
		if addr, err = b.lease(ctx, vm.VMID); err != nil {
			return lab.NodeSpec{}, err
		}
	default:
		return lab.NodeSpec{}, errors.New("lab backend: ipconfig0 has no IPv4 address (ip=ADDRESS/LEN or ip=dhcp)")
	}
	key, ok := b.hostKeys[vm.VMID]
	if !ok {
		var err error
		if key, _, err = lab.GenerateHostKey(); err != nil {
			return lab.NodeSpec{}, err
		}
		b.hostKeys[vm.VMID] = key
	}
	layers, err := b.layers(ctx, vm)
	if err != nil {
		return lab.NodeSpec{}, err
	}
	spec := lab.NodeSpec{Name: b.Machine(vm.VMID), Hostname: hostname(vm), Address: addr, HostKey: key, Layers: layers}
	if vm.Gateway.IsValid() {
		spec.Gateway = vm.Gateway
	}
	keys := strings.Join(vm.SSHKeys, "\n")
	user := vm.User
	if user == "" {
		user = b.user
	}
	switch {
	case keys == "":
		// No key reaches the guest: root authorizes a throwaway key nobody holds.
		_, pub, err := lab.GenerateHostKey()
		if err != nil {
			return lab.NodeSpec{}, err
		}
		spec.AuthorizedKeys = ssh.MarshalAuthorizedKey(pub)
	case user == "root":
		spec.AuthorizedKeys = []byte(keys + "\n")
	default:
		spec.Users = []lab.User{{Name: user, AuthorizedKeys: []byte(keys + "\n"), Sudo: true}}
		spec.AuthorizedKeys = disabledRootKeys(vm.SSHKeys, user)
	}
	return spec, nil
}

// disabledRootKeys is root's authorized_keys as cloud-init writes it with disable_root (its
// default): every key only prints whom to log in as.
func disabledRootKeys(keys []string, user string) []byte {
	opts := `no-port-forwarding,no-agent-forwarding,no-X11-forwarding,command="echo 'Please login as the user \"` + user +
		`\" rather than the user \"root\".';echo;sleep 10;exit 142" `
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(opts + k + "\n")
	}
	return []byte(b.String())
}

// hostname is the guest's host name: the VM name's first label, lower case, as cloud-init
// sets it (VM<id> for a name that is not a host name).
func hostname(vm pvesim.VMInfo) string {
	h, _, _ := strings.Cut(strings.ToLower(vm.Name), ".")
	if h == "" || len(h) > 63 || h[0] == '-' || h[len(h)-1] == '-' || strings.Trim(h, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
		return "vm" + strconv.Itoa(vm.VMID)
	}
	return h
}

// lease is a DHCP address for a VM: the one it had, else the first host address from .100 on
// that no lab node and no other lease has. Callers hold b.mu.
func (b *Backend) lease(ctx context.Context, vmid int) (netip.Prefix, error) {
	if p, ok := b.leases[vmid]; ok {
		return p, nil
	}
	nodes, err := b.lab.List(ctx)
	if err != nil {
		return netip.Prefix{}, err
	}
	used := map[netip.Addr]bool{b.lab.Gateway(): true}
	for _, n := range nodes {
		used[n.Address.Addr()] = true
	}
	for _, p := range b.leases {
		used[p.Addr()] = true
	}
	for i := 100; ; i++ {
		p, err := b.lab.HostAddress(i)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("lab backend: no address left for a DHCP lease in %s", b.lab.Config().BridgeAddress.Masked())
		}
		if !used[p.Addr()] {
			b.leases[vmid] = p
			return p, nil
		}
	}
}

// Stop implements pvesim.Backend: the node is shut down, its disk kept.
func (b *Backend) Stop(ctx context.Context, vmid int) error {
	err := b.lab.Stop(ctx, b.Machine(vmid))
	if errors.Is(err, lab.ErrNotFound) {
		return nil
	}
	if err == nil {
		b.log.InfoContext(ctx, "VM's lab node stopped", "vmid", vmid, "node", b.Machine(vmid))
	}
	return err
}

// Destroy implements pvesim.Backend: the node and its disk are removed. A node whose disk is
// a layer of other nodes (a template's) is kept until they are gone; Teardown removes it.
func (b *Backend) Destroy(ctx context.Context, vmid int) error {
	if users, err := b.layerUsers(ctx, vmid); err != nil {
		return err
	} else if len(users) > 0 {
		return fmt.Errorf("lab node %s kept: its disk is a layer of %s", b.Machine(vmid), strings.Join(users, ", "))
	}
	if err := b.lab.Destroy(ctx, b.Machine(vmid)); err != nil {
		return err
	}
	b.mu.Lock()
	delete(b.hostKeys, vmid)
	delete(b.leases, vmid)
	b.mu.Unlock()
	b.log.InfoContext(ctx, "VM's lab node destroyed", "vmid", vmid, "node", b.Machine(vmid))
	return nil
}

// layerUsers are the lab nodes that have vmid's node's disk as a layer.
func (b *Backend) layerUsers(ctx context.Context, vmid int) ([]string, error) {
	me, err := b.lab.Status(ctx, b.Machine(vmid))
	if errors.Is(err, lab.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	nodes, err := b.lab.List(ctx)
	if err != nil {
		return nil, err
	}
	var users []string
	for _, n := range nodes {
		if n.Name != me.Name && slices.Contains(n.Layers, me.Upper) {
			users = append(users, n.Name)
		}
	}
	return users, nil
}

// Teardown destroys the backend's nodes and, when the lab has no node left, stops its apt
// proxy and removes its bridge. The image cache stays. It carries on past failures.
func (b *Backend) Teardown(ctx context.Context) error {
	var errs []error
	nodes, err := b.lab.List(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	left := 0
	// Nodes whose disk is a layer of others (templates) go last.
	isLayer := map[string]bool{}
	for _, n := range nodes {
		for _, l := range n.Layers {
			isLayer[l] = true
		}
	}
	slices.SortStableFunc(nodes, func(x, y lab.NodeInfo) int {
		switch {
		case isLayer[x.Upper] == isLayer[y.Upper]:
			return 0
		case isLayer[x.Upper]:
			return 1
		}
		return -1
	})
	for _, n := range nodes {
		if _, ok := b.vmidOf(n.Name); !ok {
			left++
			continue
		}
		if err := b.lab.Destroy(ctx, n.Name); err != nil {
			errs = append(errs, err)
			left++
		}
	}
	if left == 0 && err == nil {
		if err := b.lab.StopProxy(ctx); err != nil {
			errs = append(errs, err)
		}
		if err := b.lab.RemoveNetwork(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	b.mu.Lock()
	b.prepared = false
	clear(b.hostKeys)
	clear(b.leases)
	b.mu.Unlock()
	return errors.Join(errs...)
}
