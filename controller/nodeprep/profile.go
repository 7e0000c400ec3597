package nodeprep

import (
	"fmt"
	"os"
	"strings"

	"github.com/kthw/kthw/controller/config"
	"github.com/kthw/kthw/distro/profile"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// FromProfile composes the phase set's inputs from the cluster's distro
// profile, its version matrix (with the file's overrides) and the cluster
// file's nodePrep section. It fails, before anything runs, on an unknown
// profile, an unsupported version or version skew, a repository override
// the profile does not have and an unreadable key file.
func FromProfile(c *config.Cluster, nodes []config.NodeSpec) (Params, error) {
	prof, err := profile.Get(c.Profile)
	if err != nil {
		return Params{}, err
	}
	m, err := prof.Versions(c.Versions)
	if err != nil {
		return Params{}, fmt.Errorf("versions: %w", err)
	}
	keys := map[string][]byte{}
	overrides := map[string]config.RepositoryOverride{}
	for _, o := range c.NodePrep.Repositories {
		overrides[o.Name] = o
		if o.KeyFile != "" {
			b, err := os.ReadFile(o.KeyFile)
			if err != nil {
				return Params{}, fmt.Errorf("nodePrep.repositories %s: key: %w", o.Name, err)
			}
			keys[o.Name] = b
		}
	}
	installK8s := c.NodePrep.InstallKubernetesPackages()
	repos, err := prof.RepositoriesFor(m, keys)
	if err != nil {
		return Params{}, err
	}
	p := Params{
		KernelModules: prof.KernelModules,
		Sysctls:       map[string]string{},
		BasePackages:  prof.Packages.Base,
	}
	for _, s := range prof.Sysctls {
		p.Sysctls[s.Key] = s.Value
	}
	if prof.SELinux != "" && prof.SELinux != "none" {
		p.SELinux = prof.SELinux
	}
	if t := prof.Firewall.Tool; t != "" && t != "none" {
		p.FirewallTool = t
		ports := func(lists ...[]profile.Port) []*agentv1.FirewallModule_Port {
			var out []*agentv1.FirewallModule_Port
			for _, l := range lists {
				for _, pt := range l {
					out = append(out, &agentv1.FirewallModule_Port{Port: pt.Port, Protocol: pt.Protocol, Comment: pt.Purpose})
				}
			}
			return out
		}
		p.FirewallPorts = map[config.Role][]*agentv1.FirewallModule_Port{
			config.RoleControlPlane: ports(prof.Firewall.All, prof.Firewall.ControlPlane),
			config.RoleWorker:       ports(prof.Firewall.All, prof.Firewall.Worker),
		}
	}
	hosts := map[string][]string{}
	for _, n := range nodes {
		a := n.Address.Addr().String()
		hosts[a] = append(hosts[a], n.Name)
	}
	p.Hosts = SortedHosts(hosts)

	seen := map[string]bool{}
	for _, r := range repos {
		seen[r.Name] = true
		if r.Purpose == "kubernetes" && !installK8s {
			continue
		}
		mod := &agentv1.RepositoryModule{
			Name: r.Name, Description: r.Description, Uri: r.URI, Suite: r.Suite,
			Components: r.Components, Key: r.Key,
		}
		if o, ok := overrides[r.Name]; ok {
			if o.URI != "" {
				mod.Uri = strings.ReplaceAll(o.URI, "{minor}", m.KubernetesMinor())
			}
			if o.Suite != "" {
				mod.Suite = o.Suite
			}
			if len(o.Components) > 0 {
				mod.Components = o.Components
			}
		}
		p.Repositories = append(p.Repositories, mod)
	}
	for name := range overrides {
		if !seen[name] {
			return Params{}, fmt.Errorf("nodePrep.repositories: profile %s has no repository %q", prof.Name, name)
		}
	}

	var ctrPkgs []*agentv1.Package
	for _, name := range prof.Packages.Containerd {
		ctrPkgs = append(ctrPkgs, &agentv1.Package{Name: name, Version: m.Containerd})
	}
	p.Containerd = &agentv1.ContainerdModule{
		Packages:      ctrPkgs,
		SandboxImage:  m.SandboxImage(),
		SystemdCgroup: true,
	}
	for _, mr := range c.NodePrep.RegistryMirrors {
		p.Containerd.Mirrors = append(p.Containerd.Mirrors, &agentv1.ContainerdModule_Mirror{Registry: mr.Registry, Endpoints: mr.Endpoints})
	}

	if !installK8s {
		p.SkipKubernetes = "nodePrep.kubernetesPackages is false (the built-in lab cluster reaches only the Debian mirror; set it in a cluster file to install kubelet, kubeadm and kubectl)"
		return p, nil
	}
	// One module per distinct version: kubeadm follows the control plane,
	// kubelet and kubectl may lag within the skew policy.
	byVersion := map[string][]string{}
	var order []string
	for _, name := range prof.Packages.Kubernetes {
		v := m.Kubernetes
		switch name {
		case "kubelet":
			v = m.Kubelet
		case "kubectl":
			v = m.Kubectl
		}
		if _, ok := byVersion[v]; !ok {
			order = append(order, v)
		}
		byVersion[v] = append(byVersion[v], name)
	}
	for _, v := range order {
		p.Kubernetes = append(p.Kubernetes, &agentv1.KubernetesPackagesModule{Version: v, Packages: byVersion[v]})
	}
	return p, nil
}
