package module

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/kthw/kthw/agent/etcd"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

var _ Module = (*EtcdSnapshot)(nil)

// EtcdSnapshot saves a snapshot of the node's etcd member into a directory
// of the node (package etcd does the work) and keeps the newest Keep. Check
// asks etcd what it would save; Apply always saves a new snapshot, and its
// result's Output is the snapshot's manifest.
type EtcdSnapshot struct {
	endpoint *agentv1.EtcdEndpoint
	dir      string
	keep     int
}

// NewEtcdSnapshot validates m and returns the module that carries it out.
func NewEtcdSnapshot(m *agentv1.EtcdSnapshotModule) (*EtcdSnapshot, error) {
	dir := m.GetDir()
	if dir == "" {
		dir = etcd.DefaultDir
	}
	if !filepath.IsAbs(dir) || filepath.Clean(dir) != dir || dir == "/" {
		return nil, fmt.Errorf("%w: dir %q is not an absolute, clean directory", ErrInvalid, dir)
	}
	if m.GetKeep() < 0 {
		return nil, fmt.Errorf("%w: keep %d is negative", ErrInvalid, m.GetKeep())
	}
	if m.GetEndpoint().GetDialTimeoutSeconds() < 0 {
		return nil, fmt.Errorf("%w: dial_timeout_seconds is negative", ErrInvalid)
	}
	return &EtcdSnapshot{endpoint: m.GetEndpoint(), dir: dir, keep: int(m.GetKeep())}, nil
}

// Check reports the snapshot Apply would save.
func (s *EtcdSnapshot) Check(ctx context.Context, env *Env) (Result, error) {
	st, err := etcd.Status(ctx, etcd.FromProto(s.endpoint, env.Root))
	if err != nil {
		return Result{}, err
	}
	var size, rev int64
	for _, m := range st.Members {
		if m.Endpoint == st.Endpoint {
			size, rev = m.DBSize, m.Revision
		}
	}
	keep := "all"
	if s.keep > 0 {
		keep = fmt.Sprint(s.keep)
	}
	return Result{Changed: true, Diff: fmt.Sprintf("save a snapshot of etcd at %s (revision %d, about %d bytes) into %s, keeping %s\n",
		st.Endpoint, rev, size, s.dir, keep)}, nil
}

// Apply saves the snapshot.
func (s *EtcdSnapshot) Apply(ctx context.Context, env *Env) (Result, error) {
	saved, err := etcd.Save(ctx, etcd.SaveOptions{
		Endpoint: etcd.FromProto(s.endpoint, env.Root),
		Dir:      s.dir,
		Keep:     s.keep,
		Root:     env.Root,
		Progress: func(done, total int64) { env.progress(done, total, "bytes") },
	})
	if saved == nil {
		return Result{}, err
	}
	m := saved.Manifest
	env.info(fmt.Sprintf("saved %s: revision %d, %d bytes, sha256 %s, in %s", saved.Path, m.GetRevision(), m.GetSize(), m.GetSha256(), saved.Took.Round(1e6)))
	for _, p := range saved.Pruned {
		env.info("retention removed " + p)
	}
	diff := fmt.Sprintf("saved %s (revision %d, %d bytes)\n", saved.Path, m.GetRevision(), m.GetSize())
	if len(saved.Pruned) > 0 {
		diff += fmt.Sprintf("removed %d older snapshot(s)\n", len(saved.Pruned))
	}
	return Result{Changed: true, Diff: diff, Output: m}, err
}
