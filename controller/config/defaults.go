package config

import (
	"net/netip"
	"path/filepath"
	"time"
)

// Defaults of the cluster file, as documented on the fields.
const (
	DefaultBridge      = "kthw0"
	DefaultLabDir      = "/var/lib/kthw/lab"
	DefaultProxyPort   = 3142
	DefaultNodeCIDR    = "10.200.0.0/24"
	DefaultPodCIDR     = "10.244.0.0/16"
	DefaultServiceCIDR = "10.96.0.0/12"
	DefaultDNSDomain   = "cluster.local"
	DefaultSSHPort     = 22
	DefaultSSHUser     = "root"
	DefaultCores       = 2
	DefaultMemoryMiB   = 2048
	DefaultDiskGiB     = 20

	DefaultEtcdSnapshotSchedule = "hourly"
	DefaultEtcdSnapshotKeep     = 24
	DefaultEtcdSnapshotDir      = "/var/lib/kthw/etcd-snapshots"

	DefaultProxmoxUser             = "kthw"
	DefaultProxmoxBridge           = "vmbr0"
	DefaultProxmoxCloneConcurrency = 2
	DefaultProxmoxRequestTimeout   = 30 * time.Second
	DefaultProxmoxTaskTimeout      = 10 * time.Minute
	DefaultProxmoxBootTimeout      = 10 * time.Minute

	// FirstNodeHost is the offset in network.nodeCIDR of the first
	// automatically allocated node address (.11 in a /24); the addresses
	// below it are left to the gateway and the operator.
	FirstNodeHost = 11
)

// DefaultProfiles returns the distro profile names Validate accepts when it
// is given none. The distro package supplies the authoritative list.
func DefaultProfiles() []string {
	return []string{"debian", "ubuntu", "suse", "rocky"}
}

// Default returns the documented default lab cluster for profile: name
// "lab", the local provider, one control-plane node cp-1 and two workers
// worker-1 and worker-2 whose addresses are allocated from 10.200.0.0/24
// starting at 10.200.0.11 (10.200.0.1 is the gateway on the kthw0 bridge).
// Defaults are applied.
//
// The lab cluster does not install the Kubernetes packages (see
// NodePrep.KubernetesPackages): lab nodes reach only the Debian mirror of
// the machine they run on.
func Default(profile string) *Cluster {
	c := &Cluster{
		APIVersion: APIVersion,
		Kind:       Kind,
		Name:       "lab",
		Profile:    profile,
		Provider:   Provider{Type: ProviderLocal},
		Pools: []NodePool{
			{Name: "cp", Role: RoleControlPlane, Count: 1},
			{Name: "worker", Role: RoleWorker, Count: 2},
		},
		NodePrep: NodePrep{KubernetesPackages: new(bool)},
	}
	c.SetDefaults()
	return c
}

// SetDefaults fills every unset field that has a default, as documented on
// the fields. It leaves name and profile alone and does not fail: a value
// it cannot default from (a malformed nodeCIDR, say) is left for Validate
// to report.
func (c *Cluster) SetDefaults() {
	if c.APIVersion == "" {
		c.APIVersion = APIVersion
	}
	if c.Kind == "" {
		c.Kind = Kind
	}
	c.Provider.setDefaults()
	c.Network.setDefaults()
	for i := range c.Pools {
		c.Pools[i].setDefaults()
	}
	if s := c.Etcd.Snapshots; s != nil {
		if s.Schedule == "" {
			s.Schedule = DefaultEtcdSnapshotSchedule
		}
		if s.Keep == 0 {
			s.Keep = DefaultEtcdSnapshotKeep
		}
		if s.Dir == "" {
			s.Dir = DefaultEtcdSnapshotDir
		}
	}
}

func (p *Provider) setDefaults() {
	if p.Type == "" {
		p.Type = ProviderLocal
	}
	if p.Type == ProviderLocal && p.Local == nil {
		p.Local = &LocalProvider{}
	}
	if p.Local != nil {
		if p.Local.Bridge == "" {
			p.Local.Bridge = DefaultBridge
		}
		if p.Local.LabDir == "" {
			p.Local.LabDir = DefaultLabDir
		}
		if p.Local.ImageDir == "" {
			p.Local.ImageDir = filepath.Join(p.Local.LabDir, "rootfs")
		}
		if p.Local.ProxyPort == 0 {
			p.Local.ProxyPort = DefaultProxyPort
		}
	}
	if p.Proxmox != nil {
		p.Proxmox.setDefaults()
	}
	if p.Static != nil {
		for i := range p.Static.Hosts {
			h := &p.Static.Hosts[i]
			if h.Port == 0 {
				h.Port = DefaultSSHPort
			}
			if h.User == "" {
				h.User = DefaultSSHUser
			}
		}
	}
}

func (n *Network) setDefaults() {
	if n.NodeCIDR == "" {
		n.NodeCIDR = DefaultNodeCIDR
	}
	if n.Gateway == "" {
		if p, err := netip.ParsePrefix(n.NodeCIDR); err == nil && p.Addr().Is4() {
			n.Gateway = p.Masked().Addr().Next().String()
		}
	}
	if n.PodCIDR == "" {
		n.PodCIDR = DefaultPodCIDR
	}
	if n.ServiceCIDR == "" {
		n.ServiceCIDR = DefaultServiceCIDR
	}
	if n.DNSDomain == "" {
		n.DNSDomain = DefaultDNSDomain
	}
}

func (p *NodePool) setDefaults() {
	if p.Name == "" && len(p.Names) == 0 {
		switch p.Role {
		case RoleControlPlane:
			p.Name = "cp"
		case RoleWorker:
			p.Name = "worker"
		}
	}
	if p.Count == 0 && len(p.Names) > 0 {
		p.Count = len(p.Names)
	}
	if p.Cores == 0 {
		p.Cores = DefaultCores
	}
	if p.MemoryMiB == 0 {
		p.MemoryMiB = DefaultMemoryMiB
	}
	if p.DiskGiB == 0 {
		p.DiskGiB = DefaultDiskGiB
	}
}

func (x *ProxmoxProvider) setDefaults() {
	if x.CloneMode == "" {
		x.CloneMode = CloneFull
	}
	if x.Bridge == "" {
		x.Bridge = DefaultProxmoxBridge
	}
	if x.User == "" {
		x.User = DefaultProxmoxUser
	}
	if x.CloneConcurrency == 0 {
		x.CloneConcurrency = DefaultProxmoxCloneConcurrency
	}
	if x.RequestTimeout == 0 {
		x.RequestTimeout = DefaultProxmoxRequestTimeout
	}
	if x.TaskTimeout == 0 {
		x.TaskTimeout = DefaultProxmoxTaskTimeout
	}
	if x.BootTimeout == 0 {
		x.BootTimeout = DefaultProxmoxBootTimeout
	}
}
