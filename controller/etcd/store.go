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

// Store is the workspace's directory of snapshots pulled back from nodes,
// one subdirectory per node: <Dir>/<node>/<snapshot> and <snapshot>.json.
// Directories are 0700, files 0600.
type Store struct{ Dir string }

// Local is a snapshot in the store.
type Local struct {
	Node string
	Path string
	Size int64
	// Manifest is nil when the snapshot has none; ManifestError says why.
	Manifest      *agentv1.EtcdSnapshotManifest
	ManifestError string
	ModTime       time.Time
}

// NodeDir returns (creating it) the directory of node's snapshots.
func (s Store) NodeDir(node string) (string, error) {
	if !safeName(node) {
		return "", fmt.Errorf("snapshot store: bad node name %q", node)
	}
	d := filepath.Join(s.Dir, node)
	if err := os.MkdirAll(d, 0o700); err != nil {
		return "", fmt.Errorf("snapshot store: %w", err)
	}
	// MkdirAll leaves an existing directory's mode alone; the store's
	// own directories are private.
	for _, p := range []string{s.Dir, d} {
		if err := os.Chmod(p, 0o700); err != nil {
			return "", fmt.Errorf("snapshot store: %w", err)
		}
	}
	return d, nil
}

// Path returns where node's snapshot name is kept.
func (s Store) Path(node, name string) (string, error) {
	if !safeName(name) || !strings.HasSuffix(name, ".db") {
		return "", fmt.Errorf("snapshot store: bad snapshot name %q", name)
	}
	d, err := s.NodeDir(node)
	if err != nil {
		return "", err
	}
	return filepath.Join(d, name), nil
}

// WriteManifest writes m next to the snapshot at path (0600, atomically).
func (s Store) WriteManifest(path string, m *agentv1.EtcdSnapshotManifest) error {
	p := etcdsnap.ManifestPath(path)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, etcdsnap.MarshalManifest(m), 0o600); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write manifest: %w", err)
	}
	return nil
}

// List returns the store's snapshots, newest first.
func (s Store) List() ([]Local, error) {
	nodes, err := os.ReadDir(s.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	var out []Local
	for _, n := range nodes {
		if !n.IsDir() {
			continue
		}
		files, err := os.ReadDir(filepath.Join(s.Dir, n.Name()))
		if err != nil {
			return nil, fmt.Errorf("list snapshots: %w", err)
		}
		for _, f := range files {
			if !f.Type().IsRegular() || !strings.HasSuffix(f.Name(), ".db") {
				continue
			}
			fi, err := f.Info()
			if err != nil {
				continue
			}
			l := Local{Node: n.Name(), Path: filepath.Join(s.Dir, n.Name(), f.Name()), Size: fi.Size(), ModTime: fi.ModTime()}
			m, err := etcdsnap.ReadManifest(etcdsnap.ManifestPath(l.Path))
			switch {
			case err == nil:
				l.Manifest = m
				if t, err := time.Parse(time.RFC3339Nano, m.GetTime()); err == nil {
					l.ModTime = t
				}
			case errors.Is(err, fs.ErrNotExist):
				l.ManifestError = "no manifest"
			default:
				l.ManifestError = err.Error()
			}
			out = append(out, l)
		}
	}
	slices.SortStableFunc(out, func(a, b Local) int {
		if c := b.ModTime.Compare(a.ModTime); c != 0 {
			return c
		}
		return strings.Compare(a.Path, b.Path)
	})
	return out, nil
}

func safeName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\x00") && !strings.HasPrefix(s, ".")
}
