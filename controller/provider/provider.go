// Package provider defines how the controller obtains nodes. A provider
// makes (or finds) the machines of a cluster and tells the controller how to
// reach them: address, SSH user and, where it can learn it out of band, the
// host key to pin before the first connection.
//
// The implementations live in subpackages: local (lab nodes on this machine,
// the default), static (machines listed in the cluster file) and proxmox.
package provider

import (
	"context"

	"github.com/kthw/kthw/controller/config"
)

// State is a node's state as the provider sees it.
type State string

// Node states.
const (
	StateRunning State = "running"
	StateStopped State = "stopped"
	// StateCrashed: the provider has the node but it died without being
	// stopped; Ensure recovers it.
	StateCrashed State = "crashed"
	// StateMissing: the provider has no such node.
	StateMissing State = "missing"
	// StateUnknown: the provider cannot tell (a static machine).
	StateUnknown State = "unknown"
)

// Node is a node as the provider made or found it.
type Node struct {
	Name string
	Role config.Role
	// Host is where SSH reaches the node: an IP address or a host name.
	Host string
	Port int
	User string
	// IdentityFile is the SSH key for this node; empty means the
	// workspace key (nodes the provider made authorize it).
	IdentityFile string
	// Jump is a bastion in [user@]host[:port] form, or empty.
	Jump string
	// HostKey is the node's SSH host key in authorized_keys format when
	// the provider knows it out of band; the controller pins it.
	HostKey string
	State   State
	// ID is the provider's own identifier (lab machine name, VMID).
	ID string
}

// Provider makes and finds the nodes of one cluster.
type Provider interface {
	// Name is the provider type, e.g. "local".
	Name() string
	// Prepare makes what every node needs (images, networks, proxies).
	// It is a no-op when that exists.
	Prepare(ctx context.Context, nodes []config.NodeSpec) error
	// Ensure makes the node exist and run: it creates it, adopts an
	// existing one, or recovers a stopped or crashed one. Safe to call
	// for several nodes in parallel.
	Ensure(ctx context.Context, n config.NodeSpec) (Node, error)
	// Observe reports the node without changing anything.
	Observe(ctx context.Context, n config.NodeSpec) (Node, error)
	// Destroy removes the node and everything of it; a node that does not
	// exist counts as destroyed.
	Destroy(ctx context.Context, name string) error
	// Existing lists the names of the nodes of this cluster the provider
	// has, whether or not the controller's state knows them.
	Existing(ctx context.Context) ([]string, error)
	// Teardown removes what Prepare made once no node of any cluster
	// needs it.
	Teardown(ctx context.Context) error
}

// Finding is one prerequisite check of a provider.
type Finding struct {
	Check  string
	OK     bool
	Detail string
	// Fix says what to do when not OK.
	Fix string
}

// Doctor is implemented by providers that can check the controller's
// machine for what they need, without changing anything.
type Doctor interface {
	Doctor(ctx context.Context) []Finding
}
