package action

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/kthw/kthw/controller/config"
	"github.com/kthw/kthw/controller/node"
	"github.com/kthw/kthw/controller/progress"
	"github.com/kthw/kthw/controller/provider"
)

// This file holds what the etcd verbs share: picking the control-plane
// node and connecting to its agent. etcd_snapshot.go and etcd_restore.go
// hold the verbs.

// Defaults on the nodes: kubeadm's and kthw's paths.
const (
	// NodeSnapshotDir is where nodes keep etcd snapshots when the
	// cluster file does not say: the default of etcd.snapshots.dir.
	NodeSnapshotDir = config.DefaultEtcdSnapshotDir
	// NodeManifestDir is the kubelet's static-pod directory.
	NodeManifestDir = "/etc/kubernetes/manifests"
)

// controlPlane returns the control-plane node named name, or the first
// one when name is empty.
func controlPlane(cl *config.Cluster, name string) (config.NodeSpec, error) {
	specs, err := cl.Nodes()
	if err != nil {
		return config.NodeSpec{}, err
	}
	for _, s := range specs {
		switch {
		case name == "" && s.Role == config.RoleControlPlane:
			return s, nil
		case name != "" && s.Name == name:
			if s.Role != config.RoleControlPlane {
				return s, fmt.Errorf("node %s is a %s node: etcd runs on the control-plane nodes", name, s.Role)
			}
			return s, nil
		}
	}
	if name != "" {
		return config.NodeSpec{}, fmt.Errorf("cluster %s has no node %s", cl.Name, name)
	}
	return config.NodeSpec{}, fmt.Errorf("cluster %s has no control-plane node", cl.Name)
}

// snapshotDir is the nodes' snapshot directory: dir when given, else the
// cluster file's etcd.snapshots.dir, else NodeSnapshotDir.
func snapshotDir(cl *config.Cluster, dir string) string {
	if dir == "" && cl.Etcd.Snapshots != nil {
		dir = cl.Etcd.Snapshots.Dir
	}
	if dir == "" {
		dir = NodeSnapshotDir
	}
	return dir
}

// controlPlanes returns every control-plane node (name "") or the one named.
func controlPlanes(cl *config.Cluster, name string) ([]config.NodeSpec, error) {
	if name != "" {
		s, err := controlPlane(cl, name)
		return []config.NodeSpec{s}, err
	}
	specs, err := cl.Nodes()
	if err != nil {
		return nil, err
	}
	var out []config.NodeSpec
	for _, s := range specs {
		if s.Role == config.RoleControlPlane {
			out = append(out, s)
		}
	}
	return out, nil
}

// connect observes spec's node and connects to its agent. It returns the
// provider's view of the node whenever Observe answered.
func (o *ClusterOptions) connect(ctx context.Context, spec config.NodeSpec) (provider.Node, *node.Conn, error) {
	n, err := o.Provider.Observe(ctx, spec)
	if err != nil {
		return n, nil, err
	}
	if n.State != provider.StateRunning && n.State != provider.StateUnknown {
		return n, nil, fmt.Errorf("node %s is %s", spec.Name, n.State)
	}
	t, opts, err := o.nodeOptions(n)
	if err != nil {
		return n, nil, err
	}
	conn, err := node.Connect(ctx, t, opts)
	return n, conn, err
}

// transferProgress turns byte counts into progress events, at most a few
// per second, with the rate so far.
type transferProgress struct {
	o          *ClusterOptions
	node, step string
	verb       string
	start      time.Time
	mu         sync.Mutex
	last       time.Time
}

func (o *ClusterOptions) newTransferProgress(node, step, verb string) *transferProgress {
	return &transferProgress{o: o, node: node, step: step, verb: verb, start: time.Now()}
}

func (p *transferProgress) update(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if now.Sub(p.last) < 500*time.Millisecond && done != total {
		return
	}
	p.last = now
	p.o.emit(p.node, p.step, progress.Info, fmt.Sprintf("%s %s of %s (%s/s)", p.verb, mb(done), mb(total), mb(rate(done, now.Sub(p.start)))), 0)
}

// mb formats bytes in MB (10^6), as transfer rates usually are.
func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

func rate(n int64, d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64(float64(n) / d.Seconds())
}
