package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
)

// Sentinel errors; match them with errors.Is.
var (
	// ErrNotFound: no node of that name exists on disk.
	ErrNotFound = errors.New("lab node not found")
	// ErrNotRunning: the operation needs a running node.
	ErrNotRunning = errors.New("lab node not running")
	// ErrNetworkInUse: the bridge still has nodes.
	ErrNetworkInUse = errors.New("lab network in use")
	// ErrNoNetwork: the bridge does not exist (call EnsureNetwork).
	ErrNoNetwork = errors.New("lab network missing")
)

// Lab is the lab substrate rooted at Config.Dir. Its methods are safe for concurrent use;
// operations on one node are serialized by a lock file in the node's directory, so separate
// processes may share a lab too.
type Lab struct {
	cfg Config
	log *slog.Logger
}

// New returns the lab for cfg (defaults filled in). It touches nothing on the host.
func New(cfg Config) (*Lab, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("lab config: %w", err)
	}
	cfg.Dir = filepath.Clean(cfg.Dir)
	cfg.ImageDir = filepath.Clean(cfg.ImageDir)
	return &Lab{cfg: cfg, log: cfg.Logger}, nil
}

// Config returns the lab's configuration with defaults filled in.
func (l *Lab) Config() Config { return l.cfg }

// Prepare makes everything nodes need: the cached root filesystem, the bridge and the apt
// proxy. Each step is a no-op when already done.
func (l *Lab) Prepare(ctx context.Context) (Image, error) {
	img, err := l.EnsureImage(ctx)
	if err != nil {
		return Image{}, err
	}
	if err := l.EnsureNetwork(ctx); err != nil {
		return Image{}, err
	}
	if err := l.EnsureProxy(ctx); err != nil {
		return Image{}, err
	}
	return img, nil
}

// Teardown destroys every node of the lab, stops the proxy and removes the bridge. The cached
// root filesystems stay. It carries on past failures and returns all of them.
func (l *Lab) Teardown(ctx context.Context) error {
	var errs []error
	nodes, err := l.List(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	for _, n := range nodes {
		if err := l.Destroy(ctx, n.Name); err != nil {
			errs = append(errs, err)
		}
	}
	if len(nodes) == 0 {
		if err := l.releaseNodesDir(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := l.StopProxy(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := l.RemoveNetwork(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (l *Lab) nodesDir() string           { return filepath.Join(l.cfg.Dir, "nodes") }
func (l *Lab) nodeDir(name string) string { return filepath.Join(l.nodesDir(), name) }
func (l *Lab) proxyDir() string           { return filepath.Join(l.cfg.Dir, "proxy") }
