// Package config is the cluster file: the versioned YAML document
// (apiVersion kthw.dev/v1alpha1, kind Cluster) that says what kthw-controller
// builds — name, distro profile, provider, networks, node pools and version
// overrides.
//
// The life of a cluster file is Load (or Parse) → SetDefaults → Validate →
// Nodes:
//
//	c, err := config.Load("cluster.yaml") // strict: unknown fields are errors
//	c.SetDefaults()
//	if err := c.Validate(profiles); err != nil { ... } // every field error at once
//	nodes, err := c.Nodes() // flat, ordered, addresses allocated
//
// Decoding errors are *ParseError values that name file:line:col. Validation
// errors are *FieldError values joined with errors.Join; each names the field
// path ("nodes[1].role") and, for a cluster that came from a file, the line.
// FieldErrors splits a joined error back into its parts.
//
// A cluster file never holds a secret: the Proxmox API token is given as a
// reference (env:NAME or sops:FILE#KEY) that the secrets layer resolves at run
// time.
package config

import "time"

// APIVersion and Kind identify the cluster file format this package reads.
const (
	APIVersion = "kthw.dev/v1alpha1"
	Kind       = "Cluster"
)

// Cluster is one cluster file. The zero value is not useful; build one with
// Default or Parse.
type Cluster struct {
	// APIVersion is the file format version; must be kthw.dev/v1alpha1.
	APIVersion string `yaml:"apiVersion"`
	// Kind must be Cluster.
	Kind string `yaml:"kind"`
	// Name is the cluster's name, a DNS label (lowercase letters, digits
	// and '-', at most 63 characters). It names the workspace and tags
	// provider resources.
	Name string `yaml:"name"`
	// Profile is the distro profile every node runs: debian, ubuntu, suse
	// or rocky (the set the distro package provides). It picks the package
	// manager, repositories and default version matrix.
	Profile string `yaml:"profile"`
	// Provider says where nodes come from.
	Provider Provider `yaml:"provider"`
	// Network holds the node, pod and service networks.
	Network Network `yaml:"network"`
	// Pools are the node pools (the file's "nodes" list), expanded in
	// order into nodes by the Nodes method.
	Pools []NodePool `yaml:"nodes"`
	// Versions overrides component versions of the profile's matrix, keyed
	// by component (kubernetes, containerd, etcd, ...). Values look like
	// "v1.31.2", "1.31.2", "1.31" or "1.31.x"; this package checks only the
	// syntax, the distro profile decides what exists.
	Versions map[string]string `yaml:"versions,omitempty"`
	// NodePrep tunes node preparation: which package repositories and
	// registry mirrors the nodes use.
	NodePrep NodePrep `yaml:"nodePrep,omitempty"`
	// Etcd configures what kthw does with the control-plane nodes'
	// (kubeadm stacked) etcd: scheduled snapshots.
	Etcd Etcd `yaml:"etcd,omitempty"`

	// file and lines are set by Parse so that validation errors can name
	// the source line; lines maps a field path to its line.
	file  string
	lines map[string]int
}

// ProviderType names a node provider.
type ProviderType string

// The node providers.
const (
	// ProviderLocal runs lab nodes on this machine (systemd-nspawn on a
	// bridge). It needs no configuration beyond defaults.
	ProviderLocal ProviderType = "local"
	// ProviderStatic uses existing machines reachable over SSH.
	ProviderStatic ProviderType = "static"
	// ProviderProxmox creates VMs through the Proxmox VE API.
	ProviderProxmox ProviderType = "proxmox"
)

// ProviderTypes returns the known provider types in documentation order.
func ProviderTypes() []ProviderType {
	return []ProviderType{ProviderLocal, ProviderStatic, ProviderProxmox}
}

// Provider selects and configures the node provider. Only the section that
// matches Type may be set.
type Provider struct {
	// Type is local (default), static or proxmox.
	Type ProviderType `yaml:"type"`
	// Local configures the local lab provider.
	Local *LocalProvider `yaml:"local,omitempty"`
	// Static lists existing hosts for the static provider.
	Static *StaticProvider `yaml:"static,omitempty"`
	// Proxmox configures the Proxmox VE provider.
	Proxmox *ProxmoxProvider `yaml:"proxmox,omitempty"`
}

// LocalProvider configures lab nodes on the controller's own machine.
type LocalProvider struct {
	// Bridge is the Linux bridge the lab nodes attach to; it carries
	// network.gateway. Default kthw0.
	Bridge string `yaml:"bridge,omitempty"`
	// LabDir is the absolute directory holding the nodes' root file
	// systems. Default /var/lib/kthw/lab.
	LabDir string `yaml:"labDir,omitempty"`
	// ImageDir is the absolute directory caching the built node root file
	// systems, shared by labs. Default <labDir>/rootfs.
	ImageDir string `yaml:"imageDir,omitempty"`
	// ProxyPort is the port of the lab's apt proxy on 127.0.0.1 and the
	// bridge address (1024-32767). Default 3142.
	ProxyPort int `yaml:"proxyPort,omitempty"`
}

// StaticProvider lists existing machines, one per node.
type StaticProvider struct {
	// Hosts has exactly one entry per node, matched by name.
	Hosts []StaticHost `yaml:"hosts"`
}

// StaticHost is how to reach one existing machine over SSH.
type StaticHost struct {
	// Name is the node name this host plays (as produced by the pools).
	Name string `yaml:"name"`
	// Address is the SSH address: an IP address or a host name. When it
	// is an IP inside network.nodeCIDR it must equal the node's address.
	Address string `yaml:"address"`
	// Port is the SSH port. Default 22.
	Port int `yaml:"port,omitempty"`
	// User is the SSH user; it needs password-less sudo. Default root.
	User string `yaml:"user,omitempty"`
	// IdentityFile is a private key file for this host; empty means the
	// SSH agent and the controller's default keys.
	IdentityFile string `yaml:"identityFile,omitempty"`
	// Jump is an optional bastion, [user@]host[:port].
	Jump string `yaml:"jump,omitempty"`
}

// ProxmoxProvider configures the Proxmox VE API and the VMs made through it.
// Authentication is an API token (TokenID and TokenSecretRef) or a user's
// password (Username and PasswordRef), never both.
type ProxmoxProvider struct {
	// Endpoint is the API's base URL, e.g. https://pve.example:8006.
	Endpoint string `yaml:"endpoint"`
	// Node is the Proxmox node (host) the VMs are created on, as Proxmox
	// names it (pvecm nodes), not its FQDN.
	Node string `yaml:"node"`
	// TokenID is the API token ID, USER@REALM!TOKENNAME. A token with
	// privilege separation needs its own permissions (VM.Allocate,
	// VM.Clone, VM.Config.*, VM.PowerMgmt, VM.Audit, VM.Monitor,
	// Datastore.AllocateSpace, Sys.Audit).
	TokenID string `yaml:"tokenID,omitempty"`
	// TokenSecretRef says where the token's secret is: env:NAME (an
	// environment variable) or sops:FILE#KEY (a key of a SOPS-encrypted
	// file). Never the secret itself.
	TokenSecretRef string `yaml:"tokenSecretRef,omitempty"`
	// Username is USER@REALM for a password login (a ticket), instead of
	// a token.
	Username string `yaml:"username,omitempty"`
	// PasswordRef says where Username's password is, like TokenSecretRef.
	PasswordRef string `yaml:"passwordRef,omitempty"`
	// InsecureSkipVerify turns off TLS certificate verification. For labs
	// only; exclusive with CAFile.
	InsecureSkipVerify bool `yaml:"insecureSkipVerify,omitempty"`
	// CAFile is a PEM file of CA certificates to trust for Endpoint, e.g.
	// the cluster's /etc/pve/pve-root-ca.pem. Empty means the system pool.
	CAFile string `yaml:"caFile,omitempty"`

	// Template is the name of the VM template nodes are cloned from.
	// Default: the profile's (kthw-debian-12 for debian); see
	// kthw-controller template build.
	Template string `yaml:"template,omitempty"`
	// CloneMode is full (default: every VM owns its disks) or linked
	// (copy-on-write on the template's disks; fast, but the template can
	// then not be deleted and Storage does not apply).
	CloneMode string `yaml:"cloneMode,omitempty"`
	// Storage is the storage full clones put their disks on, and the one
	// template build creates the template's disks on. Default: the
	// template's own storage for clones, local-lvm for template build.
	Storage string `yaml:"storage,omitempty"`
	// Pool is a resource pool the VMs are added to; empty means none.
	Pool string `yaml:"pool,omitempty"`
	// Bridge is the bridge of the template's network device (template
	// build). Default vmbr0.
	Bridge string `yaml:"bridge,omitempty"`
	// User is the cloud-init user (ciuser) kthw logs in as: cloud-init
	// gives it the workspace's SSH key and password-less sudo. Default
	// kthw.
	User string `yaml:"user,omitempty"`
	// Nameservers are the nodes' DNS servers (cloud-init nameserver).
	// Default: the Proxmox host's.
	Nameservers []string `yaml:"nameservers,omitempty"`
	// SearchDomain is the nodes' DNS search domain (cloud-init
	// searchdomain). Default: the Proxmox host's.
	SearchDomain string `yaml:"searchDomain,omitempty"`
	// CloneConcurrency is how many clones run at once per Proxmox node and
	// storage (parallel clones hit storage lock timeouts). Default 2.
	CloneConcurrency int `yaml:"cloneConcurrency,omitempty"`
	// RequestTimeout bounds each API request, e.g. 30s. Default 30s.
	RequestTimeout time.Duration `yaml:"requestTimeout,omitempty"`
	// TaskTimeout bounds each Proxmox task (clone, start, resize, stop).
	// Default 10m.
	TaskTimeout time.Duration `yaml:"taskTimeout,omitempty"`
	// BootTimeout bounds the wait, after a VM starts, for its guest agent
	// to report the node's address and cloud-init to finish. Default 10m.
	BootTimeout time.Duration `yaml:"bootTimeout,omitempty"`
}

// The Proxmox clone modes.
const (
	CloneFull   = "full"
	CloneLinked = "linked"
)

// Network holds the cluster's address plan. All prefixes are IPv4 and must
// not overlap each other.
type Network struct {
	// NodeCIDR is the network the nodes' addresses come from. Default
	// 10.200.0.0/24.
	NodeCIDR string `yaml:"nodeCIDR,omitempty"`
	// Gateway is the nodes' default gateway, inside NodeCIDR (for the
	// local provider, the bridge's address). Default the first host of
	// NodeCIDR.
	Gateway string `yaml:"gateway,omitempty"`
	// PodCIDR is the pod network; each node gets a /24 of it. Default
	// 10.244.0.0/16.
	PodCIDR string `yaml:"podCIDR,omitempty"`
	// ServiceCIDR is the service network, at most a /12. Default
	// 10.96.0.0/12.
	ServiceCIDR string `yaml:"serviceCIDR,omitempty"`
	// DNSDomain is the cluster DNS domain. Default cluster.local.
	DNSDomain string `yaml:"dnsDomain,omitempty"`
}

// Role is a node's role in the cluster.
type Role string

// The node roles.
const (
	RoleControlPlane Role = "control-plane"
	RoleWorker       Role = "worker"
)

// NodePool is a group of alike nodes. Nodes are named either NAME-1 …
// NAME-COUNT from the Name prefix, or explicitly by Names.
type NodePool struct {
	// Name is the prefix of the pool's node names. Default "cp" for
	// control-plane pools and "worker" for worker pools. Exclusive with
	// Names.
	Name string `yaml:"name,omitempty"`
	// Names names every node of the pool explicitly; each must be a DNS
	// label. Count may then be omitted.
	Names []string `yaml:"names,omitempty"`
	// Role is control-plane or worker.
	Role Role `yaml:"role"`
	// Count is the number of nodes (0 to 5000). With Names it defaults to
	// len(Names) and must equal it.
	Count int `yaml:"count,omitempty"`
	// Cores is the number of virtual CPUs per node. Default 2.
	Cores int `yaml:"cores,omitempty"`
	// MemoryMiB is the memory per node in MiB. Default 2048.
	MemoryMiB int `yaml:"memoryMiB,omitempty"`
	// DiskGiB is the root disk size per node in GiB. Default 20.
	DiskGiB int `yaml:"diskGiB,omitempty"`
	// Addresses optionally pins the pool's node addresses (plain IPs in
	// network.nodeCIDR), one per node in order. Without it addresses are
	// allocated from nodeCIDR starting at its 11th address.
	Addresses []string `yaml:"addresses,omitempty"`
}

// NodePrep tunes node preparation.
type NodePrep struct {
	// KubernetesPackages installs kubelet, kubeadm and kubectl from the
	// profile's Kubernetes repository (pkgs.k8s.io), pinned to the
	// matrix's version and held. Default true in a cluster file; the
	// built-in lab cluster (no file) sets it false, so that it runs on a
	// machine that reaches only its Debian mirror.
	KubernetesPackages *bool `yaml:"kubernetesPackages,omitempty"`
	// Repositories override the profile's repositories by name
	// (kubernetes, containerd): a mirror URI and/or the signing key.
	Repositories []RepositoryOverride `yaml:"repositories,omitempty"`
	// RegistryMirrors are written as containerd hosts.toml files.
	RegistryMirrors []RegistryMirror `yaml:"registryMirrors,omitempty"`
}

// RepositoryOverride replaces parts of a profile repository.
type RepositoryOverride struct {
	// Name is the profile repository's name, e.g. kubernetes.
	Name string `yaml:"name"`
	// URI replaces the repository's base URI ({minor} is replaced by the
	// Kubernetes minor version, e.g. v1.31).
	URI string `yaml:"uri,omitempty"`
	// Suite and Components replace apt's suite and components.
	Suite      string   `yaml:"suite,omitempty"`
	Components []string `yaml:"components,omitempty"`
	// KeyFile is an ASCII-armored OpenPGP public key file that signs the
	// repository, replacing the profile's embedded key.
	KeyFile string `yaml:"keyFile,omitempty"`
}

// RegistryMirror sends pulls for a registry to mirrors first.
type RegistryMirror struct {
	// Registry is the registry host, e.g. docker.io or registry.k8s.io.
	Registry string `yaml:"registry"`
	// Endpoints are mirror URLs, tried in order.
	Endpoints []string `yaml:"endpoints"`
}

// Etcd configures kthw's handling of kubeadm's stacked etcd.
type Etcd struct {
	// Snapshots, when set, installs a systemd timer on every
	// control-plane node that saves a node-local etcd snapshot on a
	// schedule (kthw-agent etcd snapshot). Unset: no scheduled snapshots.
	Snapshots *EtcdSnapshots `yaml:"snapshots,omitempty"`
}

// EtcdSnapshots schedules node-local etcd snapshots.
type EtcdSnapshots struct {
	// Schedule is when snapshots are taken: a systemd calendar event,
	// either a shorthand (minutely, hourly, daily, weekly, monthly) or an
	// OnCalendar expression such as "*-*-* 00/6:00:00". Default hourly.
	Schedule string `yaml:"schedule,omitempty"`
	// Keep is how many snapshots each node keeps (1 to 10000). Default 24.
	Keep int `yaml:"keep,omitempty"`
	// Dir is the absolute directory on the nodes that keeps them.
	// Default /var/lib/kthw/etcd-snapshots.
	Dir string `yaml:"dir,omitempty"`
}

// InstallKubernetesPackages reports whether node preparation installs the
// Kubernetes packages.
func (n NodePrep) InstallKubernetesPackages() bool {
	return n.KubernetesPackages == nil || *n.KubernetesPackages
}
