package state

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/ssh"
)

// Phase is a node's lifecycle intent.
type Phase string

// The node phases. A node is recorded as PhaseCreating before the provider
// is asked to create it and as PhaseDestroying before it is asked to destroy
// it, so a run that dies in between finds the intent and adopts or finishes
// the node instead of leaking or duplicating it.
const (
	PhaseCreating   Phase = "creating"
	PhaseCreated    Phase = "created"
	PhaseDestroying Phase = "destroying"
)

func (p Phase) valid() bool {
	return p == PhaseCreating || p == PhaseCreated || p == PhaseDestroying
}

// Node is what the workspace knows about one node. It holds no secrets.
type Node struct {
	// Name is the node's name, unique in the cluster; the record's key.
	Name string `json:"name"`
	// Role is the node's role, control-plane or worker.
	Role string `json:"role"`
	// Provider is the provider type that made the node (local, static,
	// proxmox).
	Provider string `json:"provider"`
	// ProviderID is the provider's identifier, e.g. a Proxmox VMID; empty
	// until the provider has assigned one.
	ProviderID string `json:"providerID,omitempty"`
	// Phase is the node's lifecycle intent.
	Phase Phase `json:"phase"`
	// Address is the node's address with its network's prefix length.
	Address netip.Prefix `json:"address,omitzero"`
	// HostKey is the node's SSH host public key in authorized_keys format
	// ("ssh-ed25519 AAAA..."), pinned for known_hosts.
	HostKey string `json:"hostKey,omitempty"`
	// PinnedAt is the host:port whose known_hosts entry kthw pinned with
	// HostKey; empty when kthw pinned nothing (the provider learned no key
	// out of band).
	PinnedAt string `json:"pinnedAt,omitempty"`
	// AgentSHA256 is the hex sha256 of the kthw-agent binary on the node.
	AgentSHA256 string `json:"agentSHA256,omitempty"`
	// CreatedAt is when the record was first stored; set by the Store.
	CreatedAt time.Time `json:"createdAt"`
	// UpdatedAt is when the record was last stored; set by the Store.
	UpdatedAt time.Time `json:"updatedAt"`
}

// check returns why n cannot be stored, or nil.
func (n *Node) check() error {
	if n.Name == "" {
		return fmt.Errorf("%w: node without a name", ErrInvalid)
	}
	if !n.Phase.valid() {
		return fmt.Errorf("%w: node %s: unknown phase %q", ErrInvalid, n.Name, n.Phase)
	}
	if n.HostKey != "" {
		if _, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(n.HostKey)); err != nil || len(rest) > 0 {
			return fmt.Errorf("%w: node %s: host key is not one public key in authorized_keys format", ErrInvalid, n.Name)
		}
	}
	if n.AgentSHA256 != "" {
		if b, err := hex.DecodeString(n.AgentSHA256); err != nil || len(b) != 32 {
			return fmt.Errorf("%w: node %s: agent sha256 %q is not 64 hex digits", ErrInvalid, n.Name, n.AgentSHA256)
		}
	}
	return nil
}

// PutNode stores n, replacing any record of the same name. It sets UpdatedAt
// and keeps the stored CreatedAt (or sets it for a new record). The record is
// on disk when PutNode returns.
func (s *Store) PutNode(ctx context.Context, n Node) error {
	err := s.update(ctx, func(tx *bolt.Tx) error {
		return putNode(tx, n, s.now().UTC())
	})
	if err != nil {
		return fmt.Errorf("put node %q: %w", n.Name, err)
	}
	return nil
}

// UpdateNode reads the node called name, lets fn change it and stores it,
// all in one transaction. fn's error aborts the update and is returned
// wrapped. A missing node is ErrNotFound.
func (s *Store) UpdateNode(ctx context.Context, name string, fn func(n *Node) error) error {
	err := s.update(ctx, func(tx *bolt.Tx) error {
		n, err := getNode(tx, name)
		if err != nil {
			return err
		}
		if err := fn(&n); err != nil {
			return err
		}
		if n.Name != name {
			return fmt.Errorf("%w: cannot rename node %s to %s", ErrInvalid, name, n.Name)
		}
		return putNode(tx, n, s.now().UTC())
	})
	if err != nil {
		return fmt.Errorf("update node %q: %w", name, err)
	}
	return nil
}

// GetNode returns the node called name, or an error matching ErrNotFound.
func (s *Store) GetNode(ctx context.Context, name string) (Node, error) {
	var n Node
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var err error
		n, err = getNode(tx, name)
		return err
	})
	if err != nil {
		return Node{}, fmt.Errorf("get node %q: %w", name, err)
	}
	return n, nil
}

// ListNodes returns every node, ordered by name.
func (s *Store) ListNodes(ctx context.Context) ([]Node, error) {
	var out []Node
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketNodes).ForEach(func(k, v []byte) error {
			var n Node
			if err := json.Unmarshal(v, &n); err != nil {
				return fmt.Errorf("decode node %q: %w", k, err)
			}
			out = append(out, n)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return out, nil
}

// DeleteNode removes the node called name. Deleting a missing node is not an
// error.
func (s *Store) DeleteNode(ctx context.Context, name string) error {
	err := s.update(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketNodes).Delete([]byte(name))
	})
	if err != nil {
		return fmt.Errorf("delete node %q: %w", name, err)
	}
	return nil
}

func getNode(tx *bolt.Tx, name string) (Node, error) {
	v := tx.Bucket(bucketNodes).Get([]byte(name))
	if v == nil {
		return Node{}, ErrNotFound
	}
	var n Node
	if err := json.Unmarshal(v, &n); err != nil {
		return Node{}, fmt.Errorf("decode node: %w", err)
	}
	return n, nil
}

func putNode(tx *bolt.Tx, n Node, now time.Time) error {
	if err := n.check(); err != nil {
		return err
	}
	b := tx.Bucket(bucketNodes)
	n.CreatedAt = now
	if v := b.Get([]byte(n.Name)); v != nil {
		var old Node
		if err := json.Unmarshal(v, &old); err == nil && !old.CreatedAt.IsZero() {
			n.CreatedAt = old.CreatedAt
		}
	}
	n.UpdatedAt = now
	data, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("encode node: %w", err)
	}
	return b.Put([]byte(n.Name), data)
}

// ProviderID returns the provider's identifier recorded for the node called
// name; "" when there is none or no such node.
func (s *Store) ProviderID(ctx context.Context, name string) (string, error) {
	n, err := s.GetNode(ctx, name)
	if errors.Is(err, ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return n.ProviderID, nil
}

// SetProviderID records the provider's identifier of the node called name
// (a VMID allocated before the VM is created, say); "" clears it. A node
// without a record is left alone: the cluster verbs record every node's
// intent before its provider makes it.
func (s *Store) SetProviderID(ctx context.Context, name, id string) error {
	err := s.UpdateNode(ctx, name, func(n *Node) error {
		n.ProviderID = id
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// PinnedAddr is the known_hosts address kthw pinned for n, "" for none.
// Records from before PinnedAt was kept name their address at port 22, as
// the providers that pin (local, proxmox) use.
func (n Node) PinnedAddr() string {
	switch {
	case n.PinnedAt != "":
		return n.PinnedAt
	case n.HostKey != "" && n.Address.IsValid():
		return netip.AddrPortFrom(n.Address.Addr(), 22).String()
	}
	return ""
}
