package state

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Meta describes the cluster a workspace belongs to.
type Meta struct {
	// ClusterName is the cluster file's name.
	ClusterName string `json:"clusterName"`
	// ConfigHash identifies the cluster file last applied, e.g.
	// "sha256:<hex>" of its canonical form; a changed hash tells a resumed
	// run that the journal may be stale.
	ConfigHash string `json:"configHash,omitempty"`
	// UpdatedAt is when Meta was last stored; set by the Store.
	UpdatedAt time.Time `json:"updatedAt"`
}

// SetMeta stores m, setting its UpdatedAt.
func (s *Store) SetMeta(ctx context.Context, m Meta) error {
	if m.ClusterName == "" {
		return fmt.Errorf("set meta: %w: no cluster name", ErrInvalid)
	}
	m.UpdatedAt = s.now().UTC()
	data, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode meta: %w", err)
	}
	err = s.update(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyCluster, data)
	})
	if err != nil {
		return fmt.Errorf("set meta: %w", err)
	}
	return nil
}

// GetMeta returns the stored Meta, or an error matching ErrNotFound for a
// new workspace.
func (s *Store) GetMeta(ctx context.Context) (Meta, error) {
	var m Meta
	err := s.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketMeta).Get(keyCluster)
		if v == nil {
			return ErrNotFound
		}
		return json.Unmarshal(v, &m)
	})
	if err != nil {
		return Meta{}, fmt.Errorf("get meta: %w", err)
	}
	return m, nil
}
