package etcd

import (
	"errors"
	"fmt"
	"github.com/kthw/kthw/proto/kthw/agent/v1/etcdsnap"
	"io/fs"
	"os"
	"path/filepath"
)

// Prune keeps the newest keep snapshots kthw made in dir (a node path
// under root) and removes the older ones with their manifests; keep <= 0
// keeps all. Files kthw did not name (a snapshot copied in by hand) are
// never removed. It returns the removed snapshots' paths.
func Prune(root, dir string, keep int) ([]string, error) {
	if keep <= 0 {
		return nil, nil
	}
	all, err := List(root, dir)
	if err != nil {
		return nil, err
	}
	var removed []string
	kept := 0
	for _, f := range all {
		if !isSnapshotName(filepath.Base(f.GetPath())) {
			continue
		}
		if kept < keep {
			kept++
			continue
		}
		full := filepath.Join(root, f.GetPath())
		if err := os.Remove(full); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, fmt.Errorf("prune snapshot: %w", err)
		}
		if err := os.Remove(etcdsnap.ManifestPath(full)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, fmt.Errorf("prune snapshot manifest: %w", err)
		}
		removed = append(removed, f.GetPath())
	}
	if len(removed) > 0 {
		if err := syncDir(filepath.Join(root, dir)); err != nil {
			return removed, fmt.Errorf("prune snapshots: %w", err)
		}
	}
	return removed, nil
}
