package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// want is one expected field error: its path and a part of its message.
type want struct{ path, msg string }

func staticCluster() *Cluster {
	c := Default("debian")
	c.Provider = Provider{Type: ProviderStatic, Static: &StaticProvider{Hosts: []StaticHost{
		{Name: "cp-1", Address: "10.200.0.11"},
		{Name: "worker-1", Address: "worker-1.example.net"},
		{Name: "worker-2", Address: "192.0.2.7", Jump: "ops@bastion:2222"},
	}}}
	c.SetDefaults()
	return c
}

func proxmoxCluster() *Cluster {
	c := Default("debian")
	c.Provider = Provider{Type: ProviderProxmox, Proxmox: &ProxmoxProvider{
		Endpoint:       "https://pve.example:8006",
		Node:           "pve1",
		TokenID:        "kthw@pve!ctl",
		TokenSecretRef: "env:PM_TOKEN",
	}}
	c.SetDefaults()
	return c
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		base   func() *Cluster
		mutate func(c *Cluster)
		want   []want
	}{
		{"apiVersion", nil, func(c *Cluster) { c.APIVersion = "kthw.dev/v9" }, []want{{"apiVersion", `unsupported "kthw.dev/v9"`}}},
		{"kind", nil, func(c *Cluster) { c.Kind = "Node" }, []want{{"kind", `unsupported "Node"`}}},
		{"name missing", nil, func(c *Cluster) { c.Name = "" }, []want{{"name", "required"}}},
		{"name not a label", nil, func(c *Cluster) { c.Name = "My.Lab" }, []want{{"name", "not a DNS label"}}},
		{"name too long", nil, func(c *Cluster) { c.Name = strings.Repeat("a", 64) }, []want{{"name", "not a DNS label"}}},
		{"profile missing", nil, func(c *Cluster) { c.Profile = "" }, []want{{"profile", "required; known profiles: debian, ubuntu, suse, rocky"}}},
		{"profile unknown", nil, func(c *Cluster) { c.Profile = "arch" }, []want{{"profile", `unknown profile "arch"; known profiles: debian, ubuntu, suse, rocky`}}},

		{"provider type unknown", nil, func(c *Cluster) { c.Provider.Type = "vsphere" }, []want{
			{"provider.type", `unknown provider type "vsphere"`},
			{"provider.local", `is set, but provider.type is "vsphere"`},
		}},
		{"provider type empty", nil, func(c *Cluster) { c.Provider = Provider{} }, []want{{"provider.type", "required"}}},
		{"provider section of another type", nil, func(c *Cluster) { c.Provider.Static = &StaticProvider{} }, []want{{"provider.static", `is set, but provider.type is "local"`}}},
		{"local bridge too long", nil, func(c *Cluster) { c.Provider.Local.Bridge = "bridge-name-too-long" }, []want{{"provider.local.bridge", "not a Linux interface name"}}},
		{"local bridge with slash", nil, func(c *Cluster) { c.Provider.Local.Bridge = "br/0" }, []want{{"provider.local.bridge", "not a Linux interface name"}}},
		{"local bridge empty", nil, func(c *Cluster) { c.Provider.Local.Bridge = "" }, []want{{"provider.local.bridge", "required"}}},
		{"local labDir relative", nil, func(c *Cluster) { c.Provider.Local.LabDir = "lab" }, []want{{"provider.local.labDir", "not an absolute path"}}},

		{"nodePrep valid", nil, func(c *Cluster) {
			c.NodePrep.Repositories = []RepositoryOverride{{Name: "kubernetes", URI: "http://10.200.0.1:8080/k8s/{minor}/", KeyFile: "k.asc"}}
			c.NodePrep.RegistryMirrors = []RegistryMirror{{Registry: "docker.io", Endpoints: []string{"https://mirror.lan:5000"}}}
		}, nil},
		{"nodePrep bad", nil, func(c *Cluster) {
			c.NodePrep.Repositories = []RepositoryOverride{{Name: "kubernetes", URI: "ftp://x"}, {Name: "kubernetes"}}
			c.NodePrep.RegistryMirrors = []RegistryMirror{{Registry: "docker.io/library"}, {Registry: "ghcr.io", Endpoints: []string{"mirror.lan"}}}
		}, []want{
			{"nodePrep.repositories[0].uri", "not an http(s) or file: URI"},
			{"nodePrep.repositories[1].name", "overridden twice"},
			{"nodePrep.repositories[1]", "overrides nothing"},
			{"nodePrep.registryMirrors[0].registry", "not a registry host"},
			{"nodePrep.registryMirrors[0].endpoints", "required"},
			{"nodePrep.registryMirrors[1].endpoints[0]", "not an http(s) URL"},
		}},

		{"static valid", staticCluster, func(*Cluster) {}, nil},
		{"static no hosts", staticCluster, func(c *Cluster) { c.Provider.Static.Hosts = nil }, []want{{"provider.static.hosts", "required: one host per node"}}},
		{"static section missing", staticCluster, func(c *Cluster) { c.Provider.Static = nil }, []want{{"provider.static.hosts", "required"}}},
		{"static host for no node", staticCluster, func(c *Cluster) { c.Provider.Static.Hosts[2].Name = "worker-3" }, []want{
			{"provider.static.hosts[2].name", `no node named "worker-3"`},
			{"provider.static.hosts", "no host for node worker-2"},
		}},
		{"static host name missing", staticCluster, func(c *Cluster) { c.Provider.Static.Hosts[2].Name = "" }, []want{
			{"provider.static.hosts[2].name", "required"},
			{"provider.static.hosts", "no host for node worker-2"},
		}},
		{"static duplicate host", staticCluster, func(c *Cluster) { c.Provider.Static.Hosts[2].Name = "worker-1" }, []want{
			{"provider.static.hosts[2].name", `duplicate host for node "worker-1" (also provider.static.hosts[1])`},
			{"provider.static.hosts", "no host for node worker-2"},
		}},
		{"static node without host", staticCluster, func(c *Cluster) { c.Provider.Static.Hosts = c.Provider.Static.Hosts[:2] }, []want{{"provider.static.hosts", "no host for node worker-2"}}},
		{"static address missing", staticCluster, func(c *Cluster) { c.Provider.Static.Hosts[1].Address = "" }, []want{{"provider.static.hosts[1].address", "required"}}},
		{"static address bad", staticCluster, func(c *Cluster) { c.Provider.Static.Hosts[1].Address = "not a host" }, []want{{"provider.static.hosts[1].address", "not an IP address or host name"}}},
		{"static address on node network mismatch", staticCluster, func(c *Cluster) { c.Provider.Static.Hosts[0].Address = "10.200.0.50" }, []want{{"provider.static.hosts[0].address", "node cp-1 has address 10.200.0.11"}}},
		{"static port", staticCluster, func(c *Cluster) { c.Provider.Static.Hosts[0].Port = 70000 }, []want{{"provider.static.hosts[0].port", "not a TCP port"}}},
		{"static user", staticCluster, func(c *Cluster) { c.Provider.Static.Hosts[0].User = "" }, []want{{"provider.static.hosts[0].user", "required"}}},
		{"static jump", staticCluster, func(c *Cluster) { c.Provider.Static.Hosts[2].Jump = "ops@bastion:ssh" }, []want{{"provider.static.hosts[2].jump", "not [user@]host[:port]"}}},

		{"proxmox valid", proxmoxCluster, func(*Cluster) {}, nil},
		{"proxmox section missing", proxmoxCluster, func(c *Cluster) { c.Provider.Proxmox = nil }, []want{
			{"provider.proxmox.endpoint", "required"},
			{"provider.proxmox.node", "required"},
			{"provider.proxmox.tokenID", "required"},
			{"provider.proxmox.tokenSecretRef", "required"},
		}},
		{"proxmox endpoint missing", proxmoxCluster, func(c *Cluster) { c.Provider.Proxmox.Endpoint = "" }, []want{{"provider.proxmox.endpoint", "required"}}},
		{"proxmox endpoint not a URL", proxmoxCluster, func(c *Cluster) { c.Provider.Proxmox.Endpoint = "pve.example:8006" }, []want{{"provider.proxmox.endpoint", "not an http(s) URL"}}},
		{"proxmox node missing", proxmoxCluster, func(c *Cluster) { c.Provider.Proxmox.Node = "" }, []want{{"provider.proxmox.node", "required"}}},
		{"proxmox node bad", proxmoxCluster, func(c *Cluster) { c.Provider.Proxmox.Node = "pve 1" }, []want{{"provider.proxmox.node", "not a Proxmox node name"}}},
		{"proxmox tokenID bad", proxmoxCluster, func(c *Cluster) { c.Provider.Proxmox.TokenID = "kthw@pve" }, []want{{"provider.proxmox.tokenID", "not USER@REALM!TOKENNAME"}}},
		{"proxmox secret ref missing", proxmoxCluster, func(c *Cluster) { c.Provider.Proxmox.TokenSecretRef = "" }, []want{{"provider.proxmox.tokenSecretRef", "required"}}},
		{"proxmox secret ref is a secret", proxmoxCluster, func(c *Cluster) {
			c.Provider.Proxmox.TokenSecretRef = "3f2a9c1e-4b7d-4e2f-9a61-0c5d8e7f1b23"
		}, []want{{"provider.proxmox.tokenSecretRef", "looks like the token secret itself"}}},
		{"proxmox secret ref env bad", proxmoxCluster, func(c *Cluster) { c.Provider.Proxmox.TokenSecretRef = "env:" }, []want{{"provider.proxmox.tokenSecretRef", "env: needs an environment variable name"}}},
		{"proxmox secret ref sops without key", proxmoxCluster, func(c *Cluster) { c.Provider.Proxmox.TokenSecretRef = "sops:secrets.yaml" }, []want{{"provider.proxmox.tokenSecretRef", "sops: needs a file and a key"}}},
		{"proxmox secret ref other", proxmoxCluster, func(c *Cluster) { c.Provider.Proxmox.TokenSecretRef = "vault:kv/pm" }, []want{{"provider.proxmox.tokenSecretRef", "not a secret reference"}}},
		{"proxmox caFile and insecure", proxmoxCluster, func(c *Cluster) {
			c.Provider.Proxmox.CAFile = "/etc/pve-ca.pem"
			c.Provider.Proxmox.InsecureSkipVerify = true
		}, []want{{"provider.proxmox.caFile", "exclusive with insecureSkipVerify"}}},
		{"proxmox password login", proxmoxCluster, func(c *Cluster) {
			x := c.Provider.Proxmox
			x.TokenID, x.TokenSecretRef, x.Username, x.PasswordRef = "", "", "kthw@pve", "env:PM_PASSWORD"
		}, nil},
		{"proxmox token and password", proxmoxCluster, func(c *Cluster) { c.Provider.Proxmox.Username = "kthw@pve" }, []want{
			{"provider.proxmox.tokenID", "exclusive with username"},
			{"provider.proxmox.tokenSecretRef", "exclusive with username"},
			{"provider.proxmox.passwordRef", "required with username"},
		}},
		{"proxmox password without user", proxmoxCluster, func(c *Cluster) {
			x := c.Provider.Proxmox
			x.TokenID, x.TokenSecretRef, x.PasswordRef = "", "", "hunter2"
		}, []want{{"provider.proxmox.username", "required with passwordRef"}, {"provider.proxmox.passwordRef", "not a secret reference"}}},
		{"proxmox username bad", proxmoxCluster, func(c *Cluster) {
			x := c.Provider.Proxmox
			x.TokenID, x.TokenSecretRef, x.Username, x.PasswordRef = "", "", "root", "env:PW"
		}, []want{{"provider.proxmox.username", "not USER@REALM"}}},
		{"proxmox settings bad", proxmoxCluster, func(c *Cluster) {
			x := c.Provider.Proxmox
			x.Template, x.CloneMode, x.Storage, x.Pool, x.Bridge, x.User = "my template", "thin", "local lvm", "-pool", "vmbr0/1", "Root"
			x.Nameservers, x.SearchDomain, x.CloneConcurrency = []string{"1.1.1.1", "dns.example"}, "not a domain!", 99
			x.RequestTimeout, x.TaskTimeout, x.BootTimeout = time.Millisecond, -time.Second, 500*time.Millisecond
		}, []want{
			{"provider.proxmox.template", "not a Proxmox VM name"},
			{"provider.proxmox.cloneMode", "unknown clone mode"},
			{"provider.proxmox.storage", "not a Proxmox storage ID"},
			{"provider.proxmox.pool", "not a Proxmox pool ID"},
			{"provider.proxmox.bridge", "not a Linux bridge name"},
			{"provider.proxmox.user", "not a user name"},
			{"provider.proxmox.nameservers[1]", "not an IP address"},
			{"provider.proxmox.searchDomain", "not a DNS name"},
			{"provider.proxmox.cloneConcurrency", "must be 1 to 32"},
			{"provider.proxmox.requestTimeout", "at least 1s"},
			{"provider.proxmox.taskTimeout", "at least 1s"},
			{"provider.proxmox.bootTimeout", "at least 1s"},
		}},
		{"proxmox cluster named like a tag", proxmoxCluster, func(c *Cluster) { c.Name = "worker" }, []want{{"name", "VM tags"}}},
		{"local cluster may be named worker", nil, func(c *Cluster) { c.Name = "worker" }, nil},

		{"nodeCIDR malformed", nil, func(c *Cluster) { c.Network.NodeCIDR = "10.200.0.0" }, []want{{"network.nodeCIDR", "not a CIDR prefix"}}},
		{"nodeCIDR missing", nil, func(c *Cluster) { c.Network.NodeCIDR = "" }, []want{{"network.nodeCIDR", "required"}}},
		{"nodeCIDR host bits", nil, func(c *Cluster) { c.Network.NodeCIDR = "10.200.0.1/24" }, []want{{"network.nodeCIDR", "did you mean 10.200.0.0/24?"}}},
		{"nodeCIDR IPv6", nil, func(c *Cluster) { c.Network.NodeCIDR = "fd00::/64" }, []want{{"network.nodeCIDR", "not IPv4"}}},
		{"nodeCIDR too small", nil, func(c *Cluster) { c.Network.NodeCIDR = "10.200.0.0/31" }, []want{{"network.nodeCIDR", "too small"}}},
		{"podCIDR overlaps nodeCIDR", nil, func(c *Cluster) { c.Network.PodCIDR = "10.200.0.0/16" }, []want{{"network.podCIDR", "overlaps network.nodeCIDR 10.200.0.0/24"}}},
		{"serviceCIDR overlaps nodeCIDR", nil, func(c *Cluster) { c.Network.ServiceCIDR = "10.200.0.0/16" }, []want{{"network.serviceCIDR", "overlaps network.nodeCIDR 10.200.0.0/24"}}},
		{"serviceCIDR overlaps podCIDR", nil, func(c *Cluster) { c.Network.ServiceCIDR = "10.244.128.0/20" }, []want{{"network.serviceCIDR", "overlaps network.podCIDR 10.244.0.0/16"}}},
		{"serviceCIDR too large", nil, func(c *Cluster) { c.Network.ServiceCIDR = "172.0.0.0/8" }, []want{{"network.serviceCIDR", "limit of a /12"}}},
		{"podCIDR smaller than a node", nil, func(c *Cluster) { c.Network.PodCIDR = "10.244.0.0/25" }, []want{{"network.podCIDR", "smaller than one node's /24"}}},
		{"podCIDR too few node networks", nil, func(c *Cluster) { c.Network.PodCIDR = "10.244.0.0/23" }, []want{{"network.podCIDR", "holds 2 per-node /24 networks, too few for 3 nodes"}}},
		{"gateway missing", nil, func(c *Cluster) { c.Network.Gateway = "" }, []want{{"network.gateway", "required"}}},
		{"gateway not an IP", nil, func(c *Cluster) { c.Network.Gateway = "gw" }, []want{{"network.gateway", "not an IP address"}}},
		{"gateway outside", nil, func(c *Cluster) { c.Network.Gateway = "10.201.0.1" }, []want{{"network.gateway", "outside network.nodeCIDR"}}},
		{"gateway network address", nil, func(c *Cluster) { c.Network.Gateway = "10.200.0.0" }, []want{{"network.gateway", "network address"}}},
		{"gateway broadcast", nil, func(c *Cluster) { c.Network.Gateway = "10.200.0.255" }, []want{{"network.gateway", "broadcast address"}}},
		{"dnsDomain", nil, func(c *Cluster) { c.Network.DNSDomain = "cluster_local" }, []want{{"network.dnsDomain", "not a DNS name"}}},

		{"no pools", nil, func(c *Cluster) { c.Pools = nil }, []want{{"nodes", "required"}}},
		{"no control plane", nil, func(c *Cluster) { c.Pools = c.Pools[1:] }, []want{{"nodes", "no control-plane node"}}},
		{"control plane count 0", nil, func(c *Cluster) { c.Pools[0].Count = 0 }, []want{{"nodes", "no control-plane node"}}},
		{"role unknown", nil, func(c *Cluster) { c.Pools[1].Role = "master" }, []want{{"nodes[1].role", `unknown role "master"`}}},
		{"role missing", nil, func(c *Cluster) { c.Pools[1].Role = "" }, []want{{"nodes[1].role", "required"}}},
		{"count negative", nil, func(c *Cluster) { c.Pools[1].Count = -1 }, []want{{"nodes[1].count", "must not be negative"}}},
		{"count too large", nil, func(c *Cluster) { c.Pools[1].Count = MaxPoolCount + 1 }, []want{{"nodes[1].count", "at most 5000"}}},
		{"cores", nil, func(c *Cluster) { c.Pools[0].Cores = -2 }, []want{{"nodes[0].cores", "must be positive"}}},
		{"memory", nil, func(c *Cluster) { c.Pools[0].MemoryMiB = -1 }, []want{{"nodes[0].memoryMiB", "must be positive"}}},
		{"disk", nil, func(c *Cluster) { c.Pools[0].DiskGiB = -1 }, []want{{"nodes[0].diskGiB", "must be positive"}}},
		{"name and names", nil, func(c *Cluster) { c.Pools[1].Names = []string{"a", "b"} }, []want{{"nodes[1].name", "exclusive with names"}}},
		{"names and count differ", nil, func(c *Cluster) {
			c.Pools[1].Name = ""
			c.Pools[1].Names = []string{"a", "b", "c"}
		}, []want{{"nodes[1].count", "is 2 but names lists 3 nodes"}}},
		{"names not labels", nil, func(c *Cluster) {
			c.Pools[1].Name = ""
			c.Pools[1].Names = []string{"ok", "Not_OK"}
		}, []want{{"nodes[1].names[1]", `node name "Not_OK" is not a DNS label`}}},
		{"name missing", nil, func(c *Cluster) { c.Pools[1].Name = "" }, []want{{"nodes[1].name", "required"}}},
		{"name prefix bad", nil, func(c *Cluster) { c.Pools[1].Name = "Worker" }, []want{{"nodes[1].name", `prefix "Worker" does not make DNS labels`}}},
		{"duplicate node names", nil, func(c *Cluster) {
			c.Pools = append(c.Pools, NodePool{Names: []string{"worker-2"}, Role: RoleWorker, Count: 1, Cores: 1, MemoryMiB: 1024, DiskGiB: 10})
		}, []want{{"nodes[2].names[0]", `duplicate node name "worker-2" (also from nodes[1].name)`}}},
		{"addresses count", nil, func(c *Cluster) { c.Pools[1].Addresses = []string{"10.200.0.50"} }, []want{{"nodes[1].addresses", "lists 1 addresses for 2 nodes"}}},
		{"address not an IP", nil, func(c *Cluster) { c.Pools[0].Addresses = []string{"cp.example"} }, []want{{"nodes[0].addresses[0]", "not an IP address"}}},
		{"address outside nodeCIDR", nil, func(c *Cluster) { c.Pools[0].Addresses = []string{"10.201.0.5"} }, []want{{"nodes[0].addresses[0]", "outside network.nodeCIDR 10.200.0.0/24"}}},
		{"address network", nil, func(c *Cluster) { c.Pools[0].Addresses = []string{"10.200.0.0"} }, []want{{"nodes[0].addresses[0]", "network address"}}},
		{"address broadcast", nil, func(c *Cluster) { c.Pools[0].Addresses = []string{"10.200.0.255"} }, []want{{"nodes[0].addresses[0]", "broadcast address"}}},
		{"address gateway", nil, func(c *Cluster) { c.Pools[0].Addresses = []string{"10.200.0.1"} }, []want{{"nodes[0].addresses[0]", "is network.gateway"}}},
		{"duplicate addresses", nil, func(c *Cluster) {
			c.Pools[0].Addresses = []string{"10.200.0.20"}
			c.Pools[1].Addresses = []string{"10.200.0.21", "10.200.0.20"}
		}, []want{{"nodes[1].addresses[1]", "duplicate address 10.200.0.20 (also nodes[0].addresses[0])"}}},
		{"addresses exhausted", nil, func(c *Cluster) {
			c.Network.NodeCIDR = "10.200.0.0/28"
			c.Pools[1].Count = 5
		}, []want{{"nodes[1]", "no free address in network.nodeCIDR 10.200.0.0/28 for node worker-4"}}},

		{"version bad", nil, func(c *Cluster) { c.Versions = map[string]string{"kubernetes": "latest"} }, []want{{"versions.kubernetes", `"latest" is not a version`}}},
		{"version component bad", nil, func(c *Cluster) { c.Versions = map[string]string{"Kube_rnetes": "v1.31.2"} }, []want{{"versions.Kube_rnetes", "not a component name"}}},
		{"versions good", nil, func(c *Cluster) {
			c.Versions = map[string]string{"kubernetes": "v1.31.2", "containerd": "1.7.x", "etcd": "3.5", "runc": "1.1.14-1.1", "cri-tools": "v1.31.1+deb"}
		}, nil},

		{"all at once", nil, func(c *Cluster) {
			c.Name = ""
			c.Profile = "arch"
			c.Pools[1].Role = "boss"
			c.Versions = map[string]string{"kubernetes": "one"}
		}, []want{
			{"name", "required"},
			{"profile", "unknown profile"},
			{"nodes[1].role", "unknown role"},
			{"versions.kubernetes", "not a version"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := tt.base
			if base == nil {
				base = func() *Cluster { return Default("debian") }
			}
			c := base()
			tt.mutate(c)
			checkErrors(t, c.Validate(nil), tt.want)
		})
	}
}

// checkErrors asserts that err holds exactly the wanted field errors, in
// order.
func checkErrors(t *testing.T, err error, wants []want) {
	t.Helper()
	got := FieldErrors(err)
	if err != nil && len(got) == 0 {
		t.Fatalf("error holds no *FieldError: %v", err)
	}
	var b strings.Builder
	for _, fe := range got {
		fmt.Fprintf(&b, "\n\t%s: %s", fe.Path, fe.Msg)
	}
	if len(got) != len(wants) {
		t.Fatalf("got %d field errors, want %d:%s", len(got), len(wants), b.String())
	}
	for i, w := range wants {
		if got[i].Path != w.path || !strings.Contains(got[i].Msg, w.msg) {
			t.Errorf("error %d = %s: %s; want %s: ...%s...", i, got[i].Path, got[i].Msg, w.path, w.msg)
		}
	}
}

func TestValidateKnownProfiles(t *testing.T) {
	c := Default("alpine")
	checkErrors(t, c.Validate([]string{"debian", "alpine"}), nil)
	checkErrors(t, c.Validate(nil), []want{{"profile", `unknown profile "alpine"`}})
	checkErrors(t, c.Validate([]string{"debian"}), []want{{"profile", "known profiles: debian"}})
}

func TestValidateNeverEchoesSecret(t *testing.T) {
	const secret = "3f2a9c1e-4b7d-4e2f-9a61-0c5d8e7f1b23"
	c := proxmoxCluster()
	c.Provider.Proxmox.TokenSecretRef = secret
	err := c.Validate(nil)
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Fatalf("Validate() = %v; want an error that does not repeat the secret", err)
	}
}

func TestFieldErrorsUnwrap(t *testing.T) {
	a := &FieldError{Path: "a", Msg: "x"}
	b := &FieldError{Path: "b", Msg: "y"}
	err := fmt.Errorf("check cluster: %w", errors.Join(a, errors.Join(b)))
	got := FieldErrors(err)
	if len(got) != 2 || got[0] != a || got[1] != b {
		t.Fatalf("FieldErrors() = %v; want [a b]", got)
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe != a {
		t.Fatalf("errors.As() found %v; want a", fe)
	}
}

func TestFieldErrorString(t *testing.T) {
	tests := []struct {
		fe   FieldError
		want string
	}{
		{FieldError{Path: "name", File: "c.yaml", Line: 3, Msg: "required"}, "c.yaml:3: name: required"},
		{FieldError{Path: "name", Line: 3, Msg: "required"}, "line 3: name: required"},
		{FieldError{Path: "name", File: "c.yaml", Msg: "required"}, "c.yaml: name: required"},
		{FieldError{Path: "name", Msg: "required"}, "name: required"},
	}
	for _, tt := range tests {
		if got := tt.fe.Error(); got != tt.want {
			t.Errorf("Error() = %q; want %q", got, tt.want)
		}
	}
}
