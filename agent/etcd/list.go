package etcd

import (
	"errors"
	"fmt"
	"github.com/kthw/kthw/proto/kthw/agent/v1/etcdsnap"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// Snapshot files are named etcd-snapshot-<UTC time>.db, a second one in the
// same second etcd-snapshot-<UTC time>-2.db; the manifest is <name>.json.
const (
	namePrefix = "etcd-snapshot-"
	nameSuffix = ".db"
	timeLayout = "20060102T150405Z"
)

// isSnapshotName reports whether name is a snapshot file kthw made (and so
// may prune).
func isSnapshotName(name string) bool {
	return strings.HasPrefix(name, namePrefix) && strings.HasSuffix(name, nameSuffix)
}

// List returns the snapshots (*.db files) in dir, newest first, with their
// manifests. dir is a path on the node under root. A missing dir holds no
// snapshots.
func List(root, dir string) ([]*agentv1.EtcdSnapshotFile, error) {
	full := filepath.Join(root, dir)
	entries, err := os.ReadDir(full)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	type item struct {
		f *agentv1.EtcdSnapshotFile
		t time.Time
	}
	var items []item
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), nameSuffix) {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		f := &agentv1.EtcdSnapshotFile{
			Path:    filepath.Join(dir, e.Name()),
			Size:    fi.Size(),
			ModTime: fi.ModTime().UTC().Format(time.RFC3339),
		}
		t := fi.ModTime()
		m, err := etcdsnap.ReadManifest(etcdsnap.ManifestPath(filepath.Join(full, e.Name())))
		switch {
		case err == nil:
			f.Manifest = m
			if mt, err := time.Parse(time.RFC3339Nano, m.GetTime()); err == nil {
				t = mt
			}
		case errors.Is(err, fs.ErrNotExist):
			f.ManifestError = "no manifest"
		default:
			f.ManifestError = err.Error()
		}
		items = append(items, item{f, t})
	}
	slices.SortStableFunc(items, func(a, b item) int {
		if c := b.t.Compare(a.t); c != 0 {
			return c
		}
		return strings.Compare(b.f.Path, a.f.Path)
	})
	out := make([]*agentv1.EtcdSnapshotFile, len(items))
	for i, it := range items {
		out[i] = it.f
	}
	return out, nil
}
