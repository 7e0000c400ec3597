package action

import (
	"context"
	"github.com/kthw/kthw/proto/kthw/agent/v1/etcdsnap"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kthw/kthw/internal/etcdtest"
)

// BenchmarkLabEtcd100MB measures the etcd verbs on a lab node whose
// Debian etcd holds about 100 MB of random values (1000 keys of 100 kB):
// the node-local snapshot through the agent module, its pull-back over
// SSH into the workspace, and the restore (etcdutl's library here, pack,
// upload, swap on the node), then etcd started on the restored directory.
// It is not a timed test; it reports figures:
//
//	go test -run '^$' -bench LabEtcd100MB -benchtime 1x ./controller/action
func BenchmarkLabEtcd100MB(b *testing.B) {
	l := startEtcdLab(b)
	ctx := context.Background()
	cli := l.client(b)
	start := time.Now()
	rev, err := etcdtest.Fill(ctx, cli, "/registry/bench/", 1000, 100_000)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("filled 100 MB in %s, revision %d", time.Since(start).Round(time.Millisecond), rev)
	var snap *EtcdSnapshotReport
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rep, err := EtcdSnapshot(ctx, l.opts, EtcdSnapshotOptions{})
		if err != nil {
			b.Fatal(err)
		}
		snap = rep
		if i < b.N-1 {
			os.Remove(rep.LocalPath)
			os.Remove(etcdsnap.ManifestPath(rep.LocalPath))
		}
	}
	b.StopTimer()
	size := float64(snap.Manifest.GetSize())
	b.ReportMetric(size/1e6, "MB")
	b.ReportMetric(snap.SnapshotTook.Seconds(), "snapshot-s")
	b.ReportMetric(size/1e6/snap.SnapshotTook.Seconds(), "snapshot-MB/s")
	b.ReportMetric(snap.PullTook.Seconds(), "pull-s")
	b.ReportMetric(size/1e6/snap.PullTook.Seconds(), "pull-MB/s")
	b.Logf("snapshot %s: %.1f MB in %s (%.0f MB/s); pull-back %s (%.0f MB/s)", snap.RemotePath, size/1e6,
		snap.SnapshotTook.Round(time.Millisecond), size/1e6/snap.SnapshotTook.Seconds(), snap.PullTook.Round(time.Millisecond), size/1e6/snap.PullTook.Seconds())

	// Restore: the kubelet's part is played by a unit that stops etcd
	// when its manifest leaves, and by the benchmark that starts it again.
	l.c.Exec(b, l.nd, `systemd-run --collect --unit kthw-fake-kubelet sh -c 'while [ -e /etc/kubernetes/manifests/etcd.yaml ]; do sleep 0.1; done; systemctl stop etcd'`)
	start = time.Now()
	rep, err := EtcdRestore(ctx, l.opts, EtcdRestoreOptions{From: snap.LocalPath})
	if err != nil {
		b.Fatal(err)
	}
	total := time.Since(start)
	l.c.Exec(b, l.nd, "sed -i 's|^ETCD_DATA_DIR=.*|ETCD_DATA_DIR="+rep.DataDir+"|' /etc/default/etcd && systemctl start etcd")
	up := time.Since(start)
	resp, err := l.client(b).Get(ctx, "/registry/bench/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 1000 {
		b.Fatalf("after restore: %v %v", resp, err)
	}
	b.ReportMetric(rep.RestoreTook.Seconds(), "restore-local-s")
	b.ReportMetric(total.Seconds(), "restore-total-s")
	b.Logf("restore: etcdutl %s, pack %s (%.1f MB archive), upload %s, swap on the node %s; total %s; etcd serving again after %s",
		rep.RestoreTook.Round(time.Millisecond), rep.PackTook.Round(time.Millisecond), float64(rep.ArchiveBytes)/1e6,
		rep.UploadTook.Round(time.Millisecond), rep.SwapTook.Round(time.Millisecond), total.Round(time.Millisecond), up.Round(time.Millisecond))
	// The data directory etcdutl made, for the record.
	b.Logf("restored data directory:\n%s", l.c.Exec(b, l.nd, "cd "+rep.DataDir+" && find . -type f -printf '%12s %p\\n'"))
}
