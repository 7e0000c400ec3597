package module

import agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"

// Builtins returns a registry of every module this agent links in. Adding a
// module means adding it here.
func Builtins() *Registry {
	r := NewRegistry()
	Register(r, func(m *agentv1.CommandModule) (Module, error) { return NewCommand(m) })
	Register(r, func(m *agentv1.FileModule) (Module, error) { return NewFile(m) })
	Register(r, func(m *agentv1.PackagesModule) (Module, error) { return NewPackages(m) })
	Register(r, func(m *agentv1.RepositoryModule) (Module, error) { return NewRepository(m) })
	Register(r, func(m *agentv1.KubernetesPackagesModule) (Module, error) { return NewKubernetesPackages(m) })
	Register(r, func(m *agentv1.SysctlModule) (Module, error) { return NewSysctl(m) })
	Register(r, func(m *agentv1.KernelModulesModule) (Module, error) { return NewKernelModules(m) })
	Register(r, func(m *agentv1.SwapModule) (Module, error) { return NewSwap(m) })
	Register(r, func(m *agentv1.HostnameModule) (Module, error) { return NewHostname(m) })
	Register(r, func(m *agentv1.SystemdUnitModule) (Module, error) { return NewSystemdUnit(m) })
	Register(r, func(m *agentv1.ContainerdModule) (Module, error) { return NewContainerd(m) })
	Register(r, func(m *agentv1.EtcdSnapshotModule) (Module, error) { return NewEtcdSnapshot(m) })
	Register(r, func(m *agentv1.EtcdRestoreModule) (Module, error) { return NewEtcdRestore(m) })
	Register(r, func(m *agentv1.FirewallModule) (Module, error) { return NewFirewall(m) })
	Register(r, func(m *agentv1.SELinuxModule) (Module, error) { return NewSELinux(m) })
	return r
}
