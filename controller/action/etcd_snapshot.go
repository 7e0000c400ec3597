package action

import (
	"context"
	"errors"
	"fmt"
	"github.com/kthw/kthw/proto/kthw/agent/v1/etcdsnap"
	"os"
	"path"
	"time"

	"github.com/kthw/kthw/controller/etcd"
	"github.com/kthw/kthw/controller/fanout"
	"github.com/kthw/kthw/controller/node"
	"github.com/kthw/kthw/controller/progress"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// EtcdSnapshotOptions configure EtcdSnapshot.
type EtcdSnapshotOptions struct {
	// Node is the control-plane node to snapshot; "" means the first.
	Node string
	// Dir is the node's snapshot directory; default the cluster file's
	// etcd.snapshots.dir, else NodeSnapshotDir.
	Dir string
	// Keep is the node's retention; 0 means the cluster file's
	// etcd.snapshots.keep, else all are kept.
	Keep int
	// Endpoint overrides kubeadm's endpoint and certificates.
	Endpoint *agentv1.EtcdEndpoint
	// NoPull leaves the snapshot on the node only.
	NoPull bool
	// Timeout bounds the whole operation; default 30 minutes.
	Timeout time.Duration
}

// EtcdSnapshotReport is the outcome of EtcdSnapshot.
type EtcdSnapshotReport struct {
	Node     string
	Manifest *agentv1.EtcdSnapshotManifest
	// RemotePath is the snapshot on the node, LocalPath its copy in the
	// workspace ("" with NoPull).
	RemotePath, LocalPath string
	// SnapshotTook is the node-local snapshot, PullTook the pull-back.
	SnapshotTook, PullTook time.Duration
}

// EtcdSnapshot has a control-plane node's agent save a node-local etcd
// snapshot (the etcd snapshot module: etcd's own discipline, manifest,
// retention) and pulls it back into the workspace's snapshot store,
// checked against the manifest's sha256 while it streams and against
// etcd's trailer once it is there.
func EtcdSnapshot(ctx context.Context, o ClusterOptions, so EtcdSnapshotOptions) (*EtcdSnapshotReport, error) {
	o.setDefaults()
	if so.Timeout == 0 {
		so.Timeout = 30 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, so.Timeout)
	defer cancel()
	spec, err := controlPlane(o.Cluster, so.Node)
	if err != nil {
		return nil, err
	}
	so.Dir = snapshotDir(o.Cluster, so.Dir)
	if s := o.Cluster.Etcd.Snapshots; s != nil && so.Keep == 0 {
		so.Keep = s.Keep
	}
	rep := &EtcdSnapshotReport{Node: spec.Name}
	o.emit(spec.Name, "connect", progress.Started, "", 0)
	began := time.Now()
	_, conn, err := o.connect(ctx, spec)
	if err != nil {
		o.emit(spec.Name, "connect", progress.Failed, err.Error(), time.Since(began))
		return rep, err
	}
	defer conn.Close()
	o.emit(spec.Name, "connect", progress.Done, "", time.Since(began))

	o.emit(spec.Name, "etcd/snapshot", progress.Started, "", 0)
	began = time.Now()
	snapProgress := o.newTransferProgress(spec.Name, "etcd/snapshot", "saved")
	res, err := node.RunModule(ctx, conn.Agent, &agentv1.RunModuleRequest{
		Name: "etcd snapshot",
		Module: &agentv1.RunModuleRequest_EtcdSnapshot{EtcdSnapshot: &agentv1.EtcdSnapshotModule{
			Endpoint: so.Endpoint, Dir: so.Dir, Keep: int32(so.Keep),
		}},
	}, func(ev *agentv1.RunModuleEvent) {
		if p := ev.GetProgress(); p != nil {
			snapProgress.update(p.GetDone(), p.GetTotal())
		}
	})
	rep.SnapshotTook = time.Since(began)
	if err != nil {
		o.emit(spec.Name, "etcd/snapshot", progress.Failed, err.Error(), rep.SnapshotTook)
		return rep, err
	}
	m := res.GetEtcdSnapshot()
	if m == nil {
		err := errors.New("etcd snapshot: the agent reported no manifest")
		o.emit(spec.Name, "etcd/snapshot", progress.Failed, err.Error(), rep.SnapshotTook)
		return rep, err
	}
	rep.Manifest, rep.RemotePath = m, path.Join(so.Dir, m.GetName())
	o.emit(spec.Name, "etcd/snapshot", progress.Changed, fmt.Sprintf("%s: revision %d, %s", rep.RemotePath, m.GetRevision(), mb(m.GetSize())), rep.SnapshotTook)
	if so.NoPull {
		return rep, nil
	}

	o.emit(spec.Name, "etcd/pull", progress.Started, "", 0)
	began = time.Now()
	local, err := pullSnapshot(ctx, o, conn, spec.Name, rep.RemotePath, m)
	rep.PullTook = time.Since(began)
	if err != nil {
		o.emit(spec.Name, "etcd/pull", progress.Failed, err.Error(), rep.PullTook)
		return rep, err
	}
	rep.LocalPath = local
	o.emit(spec.Name, "etcd/pull", progress.Done, fmt.Sprintf("%s (%s/s)", local, mb(rate(m.GetSize(), rep.PullTook))), rep.PullTook)
	return rep, nil
}

// pullSnapshot downloads a node's snapshot into the workspace store and
// verifies it there.
func pullSnapshot(ctx context.Context, o ClusterOptions, conn *node.Conn, nodeName, remote string, m *agentv1.EtcdSnapshotManifest) (string, error) {
	store := etcd.Store{Dir: o.Workspace.EtcdSnapshotsPath()}
	local, err := store.Path(nodeName, m.GetName())
	if err != nil {
		return "", err
	}
	if _, err := os.Lstat(local); err == nil {
		return "", fmt.Errorf("pull snapshot: %s exists already", local)
	}
	p := o.newTransferProgress(nodeName, "etcd/pull", "pulled")
	if _, err := node.DownloadFile(ctx, conn.Agent, remote, local, 0o600, m.GetSha256(), p.update); err != nil {
		return "", fmt.Errorf("pull snapshot: %w", err)
	}
	if err := store.WriteManifest(local, m); err != nil {
		os.Remove(local)
		return "", fmt.Errorf("pull snapshot: %w", err)
	}
	if _, err := etcdsnap.Verify(local); err != nil {
		os.Remove(local)
		os.Remove(etcdsnap.ManifestPath(local))
		return "", fmt.Errorf("pull snapshot: %w", err)
	}
	return local, nil
}

// NodeSnapshots is one node's answer to EtcdSnapshots.
type NodeSnapshots struct {
	Node      string
	Dir       string
	Snapshots []*agentv1.EtcdSnapshotFile
	Err       error
}

// EtcdSnapshots lists the snapshots in the workspace and, unless
// localOnly, those on the control-plane nodes (all, or the one named). A
// node that does not answer carries its error; the others still answer.
func EtcdSnapshots(ctx context.Context, o ClusterOptions, nodeName, dir string, localOnly bool, timeout time.Duration) ([]etcd.Local, []NodeSnapshots, error) {
	o.setDefaults()
	local, err := etcd.Store{Dir: o.Workspace.EtcdSnapshotsPath()}.List()
	if err != nil {
		return nil, nil, err
	}
	if localOnly {
		return local, nil, nil
	}
	specs, err := controlPlanes(o.Cluster, nodeName)
	if err != nil {
		return local, nil, err
	}
	dir = snapshotDir(o.Cluster, dir)
	out := fanout.Each(ctx, len(specs), o.Concurrency, func(ctx context.Context, i int) (NodeSnapshots, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		ns := NodeSnapshots{Node: specs[i].Name, Dir: dir}
		_, conn, err := o.connect(ctx, specs[i])
		if err != nil {
			return ns, err
		}
		defer conn.Close()
		resp, err := conn.Agent.ListEtcdSnapshots(ctx, &agentv1.ListEtcdSnapshotsRequest{Dir: dir})
		if err != nil {
			return ns, fmt.Errorf("list snapshots on %s: %w", specs[i].Name, err)
		}
		ns.Snapshots = resp.GetSnapshots()
		return ns, nil
	})
	nodes := make([]NodeSnapshots, len(out))
	failed := 0
	for i, r := range out {
		nodes[i] = r.Value
		nodes[i].Node, nodes[i].Dir = specs[i].Name, dir
		if r.Err != nil {
			nodes[i].Err = r.Err
			failed++
		}
	}
	if failed > 0 {
		return local, nodes, fmt.Errorf("%d of %d %w", failed, len(nodes), errFailedNodes)
	}
	return local, nodes, nil
}
