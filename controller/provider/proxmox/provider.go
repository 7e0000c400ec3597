package proxmox

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	pve "github.com/luthermonson/go-proxmox"

	"github.com/kthw/kthw/controller/config"
	"github.com/kthw/kthw/controller/provider"
	"github.com/kthw/kthw/controller/secret"
	"github.com/kthw/kthw/distro/profile"
)

// IDStore records each node's VMID before its clone is requested, so that a
// run killed mid-clone is finished, not duplicated, by the next one.
// *state.Store implements it.
type IDStore interface {
	// ProviderID returns the recorded identifier of a node, "" if none.
	ProviderID(ctx context.Context, node string) (string, error)
	// SetProviderID records it; "" clears it.
	SetProviderID(ctx context.Context, node, id string) error
}

// SecretResolver resolves the cluster file's secret references.
type SecretResolver interface {
	Resolve(ctx context.Context, ref string) (string, error)
}

// Options are the provider's collaborators; the zero value works.
type Options struct {
	// IDs records VMIDs before cloning; nil records nothing.
	IDs IDStore
	// Secrets resolves tokenSecretRef/passwordRef (default: the process
	// environment and the sops program).
	Secrets SecretResolver
	Logger  *slog.Logger
	// Clock paces polling and retries (default: the wall clock).
	Clock Clock
	// Poll is the first interval of every poll (tasks, locks, the guest
	// agent); it doubles up to MaxPoll. Defaults 500ms and 5s.
	Poll, MaxPoll time.Duration
	// Backoff is the retry policy of contended clones (DefaultBackoff).
	Backoff Backoff
	// RootCAs, when set, is the CA pool to trust instead of caFile.
	RootCAs *x509.CertPool
	// WrapTransport, when set, wraps the API client's HTTP transport.
	WrapTransport func(http.RoundTripper) http.RoundTripper
}

// Provider makes the nodes of one cluster as Proxmox VMs cloned from the
// profile's template. See the package documentation.
type Provider struct {
	cfg        config.ProxmoxProvider
	cluster    string
	profile    string
	template   string
	gateway    netip.Addr
	authorized string
	o          Options
	log        *slog.Logger
	w          waiter
	alloc      *allocator
	limit      *limiter

	mu     sync.Mutex
	client *pve.Client
	tmpl   *templateInfo

	statsMu    sync.Mutex
	cloneStats cloneStats
}

var (
	_ provider.Provider = (*Provider)(nil)
	_ provider.Doctor   = (*Provider)(nil)
)

// New returns the provider for cluster c (defaults set, validated).
// authorizedKey (authorized_keys format) is the controller's key that every
// VM authorizes for the cloud-init user. New does no I/O: the API is first
// contacted by Prepare, Ensure, Observe or Destroy.
func New(c *config.Cluster, authorizedKey []byte, o Options) (*Provider, error) {
	if c.Provider.Proxmox == nil {
		return nil, errors.New("proxmox provider: no provider.proxmox settings")
	}
	cfg := *c.Provider.Proxmox
	tmpl := cfg.Template
	if tmpl == "" {
		prof, err := profile.Get(c.Profile)
		if err != nil {
			return nil, fmt.Errorf("proxmox provider: %w", err)
		}
		tmpl = prof.Template
	}
	gw, err := netip.ParseAddr(c.Network.Gateway)
	if err != nil {
		return nil, fmt.Errorf("proxmox provider: network.gateway: %w", err)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = RealClock{}
	}
	if o.Poll <= 0 {
		o.Poll = 500 * time.Millisecond
	}
	if o.MaxPoll < o.Poll {
		o.MaxPoll = max(5*time.Second, o.Poll)
	}
	if o.Secrets == nil {
		o.Secrets = secret.Resolver{}
	}
	o.Backoff = o.Backoff.withDefaults()
	return &Provider{
		cfg: cfg, cluster: c.Name, profile: c.Profile, template: tmpl, gateway: gw,
		authorized: strings.TrimSpace(string(authorizedKey)), o: o, log: o.Logger,
		w:     waiter{clock: o.Clock, poll: o.Poll, maxPoll: o.MaxPoll},
		alloc: newAllocator(), limit: newLimiter(cfg.CloneConcurrency),
	}, nil
}

// Name implements provider.Provider.
func (p *Provider) Name() string { return string(config.ProviderProxmox) }

// Template is the name of the VM template nodes are cloned from.
func (p *Provider) Template() string { return p.template }

// Client connects (once) and returns the API client.
func (p *Provider) Client(ctx context.Context) (*pve.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client != nil {
		return p.client, nil
	}
	var cr Credentials
	if p.cfg.Username != "" {
		pw, err := p.o.Secrets.Resolve(ctx, p.cfg.PasswordRef)
		if err != nil {
			return nil, fmt.Errorf("proxmox password (provider.proxmox.passwordRef): %w", err)
		}
		cr = Credentials{Username: p.cfg.Username, Password: pw}
	} else {
		s, err := p.o.Secrets.Resolve(ctx, p.cfg.TokenSecretRef)
		if err != nil {
			return nil, fmt.Errorf("proxmox token secret (provider.proxmox.tokenSecretRef): %w", err)
		}
		cr = Credentials{TokenID: p.cfg.TokenID, TokenSecret: s}
	}
	c, v, err := Connect(ctx, ConnectOptions{
		Endpoint: p.cfg.Endpoint, Credentials: cr, CAFile: p.cfg.CAFile,
		InsecureSkipVerify: p.cfg.InsecureSkipVerify, Timeout: p.cfg.RequestTimeout,
		RootCAs: p.o.RootCAs, WrapTransport: p.o.WrapTransport, Logger: p.log,
	})
	if err != nil {
		return nil, err
	}
	p.log.DebugContext(ctx, "connected to proxmox", "endpoint", p.cfg.Endpoint, "version", v.Version, "release", v.Release)
	p.client = c
	return c, nil
}

// Prepare checks, before any VM is made, that the configured Proxmox node
// exists and that the template exists and is fit (cloud-init drive, guest
// agent): a missing one fails the run with nothing made.
func (p *Provider) Prepare(ctx context.Context, _ []config.NodeSpec) error {
	c, err := p.Client(ctx)
	if err != nil {
		return err
	}
	if err := p.checkNode(ctx, c); err != nil {
		return err
	}
	p.mu.Lock()
	p.tmpl = nil // look again: the template may have been rebuilt
	p.mu.Unlock()
	_, err = p.templateInfo(ctx, c)
	return err
}

// checkNode checks the configured node is a member of the Proxmox cluster.
func (p *Provider) checkNode(ctx context.Context, c *pve.Client) error {
	ns, err := c.Nodes(ctx)
	if err != nil {
		return authError("list Proxmox nodes", err)
	}
	var names []string
	for _, n := range ns {
		if n == nil {
			continue
		}
		if n.Node == p.cfg.Node {
			if n.Status != "" && n.Status != "online" {
				return fmt.Errorf("proxmox node %s is %s", n.Node, n.Status)
			}
			return nil
		}
		names = append(names, n.Node)
	}
	slices.Sort(names)
	return fmt.Errorf("%w %q (provider.proxmox.node): the cluster's nodes are %s; use Proxmox's short node name, not a host name or FQDN",
		ErrNodeUnknown, p.cfg.Node, strings.Join(names, ", "))
}

// Existing lists the nodes of this cluster that have a VM tagged with it.
func (p *Provider) Existing(ctx context.Context) ([]string, error) {
	c, err := p.Client(ctx)
	if err != nil {
		return nil, err
	}
	rs, err := p.clusterAPI(c).Resources(ctx, "vm")
	if err != nil {
		return nil, authError("list VMs", err)
	}
	var names []string
	for _, r := range rs {
		if r != nil && r.Type == "qemu" && r.Template == 0 && r.Name != "" && ClusterTagged(r.Tags, p.cluster) {
			names = append(names, r.Name)
		}
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// Teardown has nothing to remove: every VM goes with its node, and the
// template stays for the next cluster.
func (p *Provider) Teardown(context.Context) error { return nil }

// Observe reports the node's VM without changing anything. The address is
// the configured one (nodes have static addresses); the host key is the
// one pinned when the node was made.
func (p *Provider) Observe(ctx context.Context, n config.NodeSpec) (provider.Node, error) {
	out := p.node(n, 0, provider.StateMissing, n.Address.Addr(), "")
	c, err := p.Client(ctx)
	if err != nil {
		return out, err
	}
	loc, found, err := p.find(ctx, c, n.Name)
	if err != nil || !found {
		return out, err
	}
	out.ID = strconv.Itoa(loc.ref.id)
	if loc.unproven {
		out.State = provider.StateStopped // a clone still under way
		return out, nil
	}
	vm, err := p.load(ctx, c, loc.ref)
	if isNotExist(err) {
		return out, nil
	}
	if err != nil {
		return out, authError("VM status", err)
	}
	out.State = vmState(vm)
	return out, nil
}

// vmState maps Proxmox's VM status to the provider's.
func vmState(vm *pve.VirtualMachine) provider.State {
	switch {
	case vm.Status == pve.StatusVirtualMachineRunning && (vm.QMPStatus == "" || vm.QMPStatus == pve.StatusVirtualMachineRunning):
		return provider.StateRunning
	case vm.Status == pve.StatusVirtualMachineStopped, vm.QMPStatus == pve.StatusVirtualMachinePaused:
		return provider.StateStopped
	}
	return provider.StateUnknown
}

func (p *Provider) node(n config.NodeSpec, vmid int, st provider.State, host netip.Addr, hostKey string) provider.Node {
	out := provider.Node{
		Name: n.Name, Role: n.Role, Port: config.DefaultSSHPort, User: p.cfg.User,
		HostKey: hostKey, State: st,
	}
	if host.IsValid() {
		out.Host = host.String()
	}
	if vmid > 0 {
		out.ID = strconv.Itoa(vmid)
	}
	return out
}

// vmRef names a VM: its VMID and the Proxmox node it is on.
type vmRef struct {
	id   int
	node string
}

func (r vmRef) String() string { return fmt.Sprintf("VM %d on %s", r.id, r.node) }

// clusterAPI, nodeAPI and handle build go-proxmox values without a request
// (go-proxmox's Client.Cluster and Client.Node each make one).
func (p *Provider) clusterAPI(c *pve.Client) *pve.Cluster { return new(pve.Cluster).New(c) }

func nodeAPI(c *pve.Client, name string) *pve.Node { return new(pve.Node).New(c, name) }

// handle is a VM to act on. Each call returns a fresh value: go-proxmox
// values keep stale fields (a lock) across reads.
func handle(c *pve.Client, r vmRef) *pve.VirtualMachine {
	v := &pve.VirtualMachine{}
	v.New(c, r.node, r.id)
	return v
}

// load reads a VM's status and config into a fresh value.
func (p *Provider) load(ctx context.Context, c *pve.Client, r vmRef) (*pve.VirtualMachine, error) {
	vm, err := nodeAPI(c, r.node).VirtualMachine(ctx, r.id)
	if err != nil {
		return nil, err
	}
	if vm.VirtualMachineConfig == nil {
		vm.VirtualMachineConfig = &pve.VirtualMachineConfig{}
	}
	return vm, nil
}

// lockOf is the VM's lock, from its status or its config.
func lockOf(vm *pve.VirtualMachine) string {
	if vm.Lock != "" {
		return vm.Lock
	}
	if vm.VirtualMachineConfig != nil {
		return vm.VirtualMachineConfig.Lock
	}
	return ""
}

// waitUnlocked polls the VM, a fresh value each time, until it has no lock
// (a clone, a migration, a backup holds one), and returns it.
func (p *Provider) waitUnlocked(ctx context.Context, c *pve.Client, r vmRef) (*pve.VirtualMachine, error) {
	deadline := p.o.Clock.Now().Add(p.cfg.TaskTimeout)
	var iv time.Duration
	for {
		vm, err := p.load(ctx, c, r)
		if err != nil {
			return nil, err
		}
		lock := lockOf(vm)
		if lock == "" {
			return vm, nil
		}
		if !p.o.Clock.Now().Before(deadline) {
			return nil, fmt.Errorf("%s is still locked (%s) after %s: a task of an earlier run may have died; see the VM's task log, then run `qm unlock %d` or destroy the VM",
				r, lock, p.cfg.TaskTimeout, r.id)
		}
		iv = p.w.interval(iv)
		if err := p.o.Clock.Sleep(ctx, iv); err != nil {
			return nil, err
		}
	}
}

// owns reports whether a VM config is node's of this cluster: its marker
// says so, or its name and tags do.
func (p *Provider) owns(cfg *pve.VirtualMachineConfig, node string) bool {
	if cfg == nil {
		return false
	}
	if m, ok := ParseMarker(cfg.Description); ok && m.Cluster == p.cluster && m.Node == node {
		return true
	}
	return cfg.Name == node && ClusterTagged(cfg.Tags, p.cluster)
}

// record stores a node's VMID (0 clears it).
func (p *Provider) record(ctx context.Context, node string, id int) error {
	if p.o.IDs == nil {
		return nil
	}
	s := ""
	if id > 0 {
		s = strconv.Itoa(id)
	}
	if err := p.o.IDs.SetProviderID(ctx, node, s); err != nil {
		return fmt.Errorf("record VMID of %s: %w", node, err)
	}
	return nil
}

// recorded returns a node's recorded VMID, 0 if none.
func (p *Provider) recorded(ctx context.Context, node string) (int, error) {
	if p.o.IDs == nil {
		return 0, nil
	}
	s, err := p.o.IDs.ProviderID(ctx, node)
	if err != nil || s == "" {
		return 0, err
	}
	id, err := strconv.Atoi(s)
	if err != nil || id <= 0 {
		return 0, nil // another provider's identifier
	}
	return id, nil
}
