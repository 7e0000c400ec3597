// Package nodeprep is the node-preparation phase set: what the seed's
// Ansible roles did to every node before kubeadm — host name and hosts
// file, swap off, kernel modules, sysctls, package repositories, containerd
// with its configuration, and the Kubernetes packages pinned and held — as
// typed agent modules run by each node's own pipeline.
package nodeprep

import (
	"context"
	"net/netip"
	"sort"

	"github.com/kthw/kthw/controller/config"
	"github.com/kthw/kthw/controller/phase"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// Params are the inputs of the phase set, composed from the distro profile,
// its version matrix and the cluster file (see FromProfile).
type Params struct {
	// Hosts are the cluster's nodes for /etc/hosts: address → names.
	Hosts []*agentv1.HostnameModule_Host
	// KernelModules are loaded and persisted.
	KernelModules []string
	// Sysctls are persisted and applied.
	Sysctls map[string]string
	// Repositories are added before packages are installed.
	Repositories []*agentv1.RepositoryModule
	// Containerd configures the container runtime; nil skips it.
	Containerd *agentv1.ContainerdModule
	// Kubernetes pins and holds kubelet, kubeadm and kubectl (one module
	// per distinct version); empty skips them, with SkipKubernetes as the
	// reason.
	Kubernetes     []*agentv1.KubernetesPackagesModule
	SkipKubernetes string
	// BasePackages are installed first (conntrack, socat, ...).
	BasePackages []string
	// SELinux is the mode to set (permissive on rocky); empty leaves it.
	SELinux string
	// FirewallTool (ufw, firewalld) and the ports to open per role; an
	// empty tool skips the step.
	FirewallTool  string
	FirewallPorts map[config.Role][]*agentv1.FirewallModule_Port
	// Manager forces a package manager (empty: the agent detects it).
	Manager string
}

// Steps returns the node-preparation steps in order.
func Steps(p Params) []phase.Step {
	steps := []phase.Step{
		phase.Module("hostname", func(n *phase.Node) (*agentv1.RunModuleRequest, error) {
			return &agentv1.RunModuleRequest{Module: &agentv1.RunModuleRequest_Hostname{Hostname: &agentv1.HostnameModule{
				Hostname: n.Name, Hosts: p.Hosts,
			}}}, nil
		}),
		phase.Module("swap", func(n *phase.Node) (*agentv1.RunModuleRequest, error) {
			return &agentv1.RunModuleRequest{Module: &agentv1.RunModuleRequest_Swap{Swap: &agentv1.SwapModule{}}}, nil
		}),
	}
	if p.SELinux != "" {
		steps = append(steps, phase.Module("selinux", func(n *phase.Node) (*agentv1.RunModuleRequest, error) {
			return &agentv1.RunModuleRequest{Module: &agentv1.RunModuleRequest_Selinux{Selinux: &agentv1.SELinuxModule{Mode: p.SELinux}}}, nil
		}))
	}
	if p.FirewallTool != "" {
		steps = append(steps, phase.Module("firewall", func(n *phase.Node) (*agentv1.RunModuleRequest, error) {
			ports := p.FirewallPorts[n.Role]
			if len(ports) == 0 {
				return nil, nil
			}
			return &agentv1.RunModuleRequest{Module: &agentv1.RunModuleRequest_Firewall{Firewall: &agentv1.FirewallModule{
				Tool: p.FirewallTool, Ports: ports,
			}}}, nil
		}))
	}
	if len(p.KernelModules) > 0 {
		steps = append(steps, phase.Module("kernel-modules", func(n *phase.Node) (*agentv1.RunModuleRequest, error) {
			return &agentv1.RunModuleRequest{Module: &agentv1.RunModuleRequest_KernelModules{KernelModules: &agentv1.KernelModulesModule{
				Names: p.KernelModules,
			}}}, nil
		}))
	}
	if len(p.Sysctls) > 0 {
		steps = append(steps, phase.Module("sysctl", func(n *phase.Node) (*agentv1.RunModuleRequest, error) {
			return &agentv1.RunModuleRequest{Module: &agentv1.RunModuleRequest_Sysctl{Sysctl: &agentv1.SysctlModule{
				Values: p.Sysctls,
			}}}, nil
		}))
	}
	for _, r := range p.Repositories {
		r := r
		steps = append(steps, phase.Module("repository/"+r.GetName(), func(n *phase.Node) (*agentv1.RunModuleRequest, error) {
			return &agentv1.RunModuleRequest{Module: &agentv1.RunModuleRequest_Repository{Repository: r}}, nil
		}))
	}
	// One package transaction for the base and the container runtime
	// packages: one index refresh, one dpkg/rpm run. The containerd
	// module then finds its packages installed and only configures.
	if pkgs := p.packages(); len(pkgs) > 0 {
		steps = append(steps, phase.Module("packages", func(n *phase.Node) (*agentv1.RunModuleRequest, error) {
			return &agentv1.RunModuleRequest{Module: &agentv1.RunModuleRequest_Packages{Packages: &agentv1.PackagesModule{
				Packages: pkgs, Manager: p.Manager,
			}}}, nil
		}))
	}
	if p.Containerd != nil {
		steps = append(steps, phase.Module("containerd", func(n *phase.Node) (*agentv1.RunModuleRequest, error) {
			return &agentv1.RunModuleRequest{Module: &agentv1.RunModuleRequest_Containerd{Containerd: p.Containerd}}, nil
		}))
	}
	for _, k := range p.Kubernetes {
		k := k
		steps = append(steps, phase.Module("kubernetes-packages", func(n *phase.Node) (*agentv1.RunModuleRequest, error) {
			return &agentv1.RunModuleRequest{Module: &agentv1.RunModuleRequest_KubernetesPackages{KubernetesPackages: k}}, nil
		}))
	}
	if len(p.Kubernetes) == 0 && p.SkipKubernetes != "" {
		reason := p.SkipKubernetes
		steps = append(steps, phase.Step{Name: "kubernetes-packages", Run: func(context.Context, *phase.Node) (phase.Result, error) {
			return phase.Result{Skipped: reason}, nil
		}})
	}
	return steps
}

// SortedHosts returns hosts entries in address order (stable renders).
func SortedHosts(m map[string][]string) []*agentv1.HostnameModule_Host {
	addrs := make([]string, 0, len(m))
	for a := range m {
		addrs = append(addrs, a)
	}
	sort.Slice(addrs, func(i, j int) bool {
		a, errA := netip.ParseAddr(addrs[i])
		b, errB := netip.ParseAddr(addrs[j])
		if errA != nil || errB != nil {
			return addrs[i] < addrs[j]
		}
		return a.Less(b)
	})
	out := make([]*agentv1.HostnameModule_Host, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, &agentv1.HostnameModule_Host{Address: a, Names: m[a]})
	}
	return out
}

// packages lists the base packages and the container runtime's.
func (p Params) packages() []*agentv1.Package {
	var out []*agentv1.Package
	for _, name := range p.BasePackages {
		out = append(out, &agentv1.Package{Name: name})
	}
	if p.Containerd != nil {
		out = append(out, p.Containerd.GetPackages()...)
	}
	return out
}
