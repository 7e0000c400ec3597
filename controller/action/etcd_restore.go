package action

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"github.com/kthw/kthw/proto/kthw/agent/v1/etcdsnap"
	"io"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kthw/kthw/controller/config"
	"github.com/kthw/kthw/controller/etcd"
	"github.com/kthw/kthw/controller/node"
	"github.com/kthw/kthw/controller/progress"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// EtcdRestoreOptions configure EtcdRestore.
type EtcdRestoreOptions struct {
	// From is the snapshot file on this machine. It must verify.
	From string
	// Node is the control-plane node to restore; "" is allowed only when
	// the cluster has one.
	Node string
	// DataDir is the new data directory on the node; default
	// <old hostPath>-restore-<UTC time>, next to the old one.
	DataDir string
	// RevisionBump; default etcd.DefaultRevisionBump. NoRevisionBump
	// turns the bump and mark-compacted off.
	RevisionBump   uint64
	NoRevisionBump bool
	// StopTimeout bounds the wait for the kubelet to stop etcd; default
	// 2 minutes.
	StopTimeout time.Duration
	// ManifestDir is the kubelet's static-pod directory on the node;
	// default NodeManifestDir.
	ManifestDir string
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// EtcdRestoreReport is the outcome of EtcdRestore.
type EtcdRestoreReport struct {
	Node     string
	Snapshot *etcdsnap.Verified
	// Member is the member the data directory was restored for.
	Member etcd.Member
	// OldDataDir is the hostPath the etcd manifest had; DataDir the new one.
	OldDataDir, DataDir string
	// HoldingDir keeps the original etcd manifest (etcd.yaml.orig).
	HoldingDir   string
	RevisionBump uint64
	// Diff is what the node's module did (or, in a dry run, would do).
	Diff    string
	Changed bool
	// Timings: the local restore with etcdutl, packing, the upload, and
	// the node's swap.
	RestoreTook, PackTook, UploadTook, SwapTook time.Duration
	// ArchiveBytes is the size of the packed data directory sent.
	ArchiveBytes int64
}

// EtcdRestore restores a kubeadm stacked etcd from a snapshot: the
// snapshot must verify (etcd's trailer, its manifest when it has one); the
// node's etcd manifest is read and its member (name, peer URLs) restored
// into a fresh data directory here with etcdutl's library (revision bump
// and mark-compacted); the directory travels as a blob; and the node's
// etcd restore module moves the etcd and kube-apiserver manifests out,
// waits for etcd to stop, puts the data directory in place, points the
// etcd manifest's data hostPath at it and moves the manifests back. The
// old data directory stays on the node. With o.DryRun everything up to the
// node's change runs and the module only reports what it would do.
func EtcdRestore(ctx context.Context, o ClusterOptions, ro EtcdRestoreOptions) (*EtcdRestoreReport, error) {
	o.setDefaults()
	if ro.Now == nil {
		ro.Now = time.Now
	}
	if ro.ManifestDir == "" {
		ro.ManifestDir = NodeManifestDir
	}
	if ro.StopTimeout == 0 {
		ro.StopTimeout = 2 * time.Minute
	}
	bump := ro.RevisionBump
	if bump == 0 {
		bump = etcd.DefaultRevisionBump
	}
	if ro.NoRevisionBump {
		bump = 0
	}
	v, err := etcdsnap.Verify(ro.From)
	if err != nil {
		return nil, fmt.Errorf("refusing to restore: %w", err)
	}
	spec, err := restoreNode(o, ro.Node)
	if err != nil {
		return nil, err
	}
	rep := &EtcdRestoreReport{Node: spec.Name, Snapshot: v, RevisionBump: bump}
	step := func(name string, f func() error) error {
		o.emit(spec.Name, name, progress.Started, "", 0)
		start := time.Now()
		err := f()
		st, msg := progress.Done, ""
		if err != nil {
			st, msg = progress.Failed, err.Error()
		}
		o.emit(spec.Name, name, st, msg, time.Since(start))
		return err
	}
	var conn *node.Conn
	if err := step("connect", func() (err error) { _, conn, err = o.connect(ctx, spec); return err }); err != nil {
		return rep, err
	}
	defer conn.Close()

	manifestPath := path.Join(ro.ManifestDir, "etcd.yaml")
	var raw bytes.Buffer
	var pod *etcd.EtcdPod
	if err := step("etcd/read-manifest", func() error {
		if _, err := node.ReadFile(ctx, conn.Agent, manifestPath, &raw, nil); err != nil {
			if status.Code(err) == codes.NotFound {
				return fmt.Errorf("%s has no %s: is it a kubeadm control-plane node with stacked etcd? (An interrupted restore "+
					"leaves etcd.yaml and kube-apiserver.yaml in %s/kthw-etcd-restore-*/: move them back.)", spec.Name, manifestPath, path.Dir(path.Clean(ro.ManifestDir)))
			}
			return fmt.Errorf("read the etcd manifest of %s: %w", spec.Name, err)
		}
		var err error
		pod, err = etcd.ParseEtcdPod(raw.Bytes())
		return err
	}); err != nil {
		return rep, err
	}
	stamp := ro.Now().UTC().Format("20060102T150405Z")
	rep.Member, rep.OldDataDir = pod.Member, pod.HostPath
	rep.DataDir = ro.DataDir
	if rep.DataDir == "" {
		rep.DataDir = path.Clean(pod.HostPath) + "-restore-" + stamp
	}
	rep.HoldingDir = path.Join(path.Dir(path.Clean(ro.ManifestDir)), "kthw-etcd-restore-"+stamp)
	newManifest, err := pod.WithHostPath(rep.DataDir)
	if err != nil {
		return rep, err
	}

	tmp, err := os.MkdirTemp("", "kthw-etcd-restore-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(tmp)
	dataDir := filepath.Join(tmp, "data")
	if err := step("etcd/restore", func() error {
		start := time.Now()
		_, err := etcd.RestoreDataDir(etcd.RestoreOptions{Snapshot: ro.From, DataDir: dataDir, Member: pod.Member, RevisionBump: bump})
		rep.RestoreTook = time.Since(start)
		return err
	}); err != nil {
		return rep, err
	}
	archive := filepath.Join(tmp, "data.tar.gz")
	var sum string
	if err := step("etcd/pack", func() error {
		start := time.Now()
		f, err := os.OpenFile(archive, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		h := sha256.New()
		if _, err := etcd.PackDir(dataDir, io.MultiWriter(f, h)); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		sum = hex.EncodeToString(h.Sum(nil))
		fi, err := os.Stat(archive)
		if err == nil {
			rep.ArchiveBytes = fi.Size()
		}
		rep.PackTook = time.Since(start)
		return err
	}); err != nil {
		return rep, err
	}
	if err := step("etcd/upload", func() error {
		start := time.Now()
		f, err := os.Open(archive)
		if err != nil {
			return err
		}
		defer f.Close()
		p := o.newTransferProgress(spec.Name, "etcd/upload", "sent")
		_, err = node.UploadBlob(ctx, conn.Agent, f, rep.ArchiveBytes, sum, p.update)
		rep.UploadTook = time.Since(start)
		return err
	}); err != nil {
		return rep, err
	}
	cur := sha256.Sum256(raw.Bytes())
	req := &agentv1.RunModuleRequest{
		Name:      "etcd restore",
		CheckOnly: o.DryRun,
		Module: &agentv1.RunModuleRequest_EtcdRestore{EtcdRestore: &agentv1.EtcdRestoreModule{
			DataBlobSha256:     sum,
			DataDir:            rep.DataDir,
			ManifestDir:        ro.ManifestDir,
			EtcdManifest:       newManifest,
			EtcdManifestSha256: hex.EncodeToString(cur[:]),
			HoldingDir:         rep.HoldingDir,
			Endpoint:           watchAddr(pod.ClientURLs),
			StopTimeoutSeconds: int64(ro.StopTimeout / time.Second),
		}},
	}
	err = step("etcd/swap", func() error {
		start := time.Now()
		res, err := node.RunModule(ctx, conn.Agent, req, func(ev *agentv1.RunModuleEvent) {
			if l := ev.GetLog(); l != nil {
				o.emit(spec.Name, "etcd/swap", progress.Info, l.GetText(), 0)
			}
		})
		rep.SwapTook = time.Since(start)
		rep.Diff, rep.Changed = res.GetDiff(), res.GetChanged()
		return err
	})
	return rep, err
}

// restoreNode picks the node to restore: the named one, or the only
// control-plane node.
func restoreNode(o ClusterOptions, name string) (spec config.NodeSpec, err error) {
	if name != "" {
		return controlPlane(o.Cluster, name)
	}
	all, err := controlPlanes(o.Cluster, "")
	if err != nil {
		return spec, err
	}
	if len(all) != 1 {
		return spec, fmt.Errorf("the cluster has %d control-plane nodes: name the one to restore with --node", len(all))
	}
	return all[0], nil
}

// watchAddr is the address the node watches until etcd stopped: the
// loopback client URL kubeadm configures, else its first client URL.
func watchAddr(clientURLs []string) string {
	first := ""
	for _, s := range clientURLs {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			continue
		}
		host := u.Host
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "2379")
		}
		if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsLoopback() {
			return host
		}
		if first == "" {
			first = host
		}
	}
	if first == "" {
		return "127.0.0.1:2379"
	}
	return first
}
