package module

import agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"

// Builtins returns a registry of every module this agent links in. Adding a
// module means adding it here.
func Builtins() *Registry {
	r := NewRegistry()
	Register(r, func(m *agentv1.CommandModule) (Module, error) { return NewCommand(m) })
	Register(r, func(m *agentv1.FileModule) (Module, error) { return NewFile(m) })
	return r
}
