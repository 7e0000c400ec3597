package action

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"github.com/kthw/kthw/proto/kthw/agent/v1/etcdsnap"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kthw/kthw/controller/config"
	"github.com/kthw/kthw/controller/etcd"
	"github.com/kthw/kthw/controller/internal/agentbuild"
	"github.com/kthw/kthw/controller/internal/labtest"
	"github.com/kthw/kthw/controller/node"
	"github.com/kthw/kthw/controller/nodeprep"
	"github.com/kthw/kthw/controller/phase"
	"github.com/kthw/kthw/controller/provider/static"
	"github.com/kthw/kthw/internal/etcdtest"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// etcdLab is a lab node that runs Debian's etcd (3.4) the way kubeadm runs
// its stacked etcd: kubeadm's PKI under /etc/kubernetes/pki, data in
// /var/lib/etcd, https on 127.0.0.1:2379 and the node address with client
// certificates, and kubeadm's static-pod manifests in
// /etc/kubernetes/manifests (no kubelet runs them: the test plays the
// kubelet where it matters).
type etcdLab struct {
	c    *labtest.Cluster
	nd   *labtest.Node
	pki  *etcdtest.PKI
	opts ClusterOptions
}

func startEtcdLab(t testing.TB) *etcdLab {
	t.Helper()
	c := labtest.Start(t, 1)
	nd := c.Nodes[0]
	ip := nd.Address.String()
	start := time.Now()
	c.Exec(t, nd, "timeout 300 apt-get -q update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends etcd-server >/dev/null && systemctl stop etcd && rm -rf /var/lib/etcd/*")
	t.Logf("apt-get install etcd-server: %s", time.Since(start).Round(time.Millisecond))
	pki, err := etcdtest.NewPKI(t.TempDir(), nd.Name, net.ParseIP(ip))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	put := func(path string, content []byte, mode uint32) {
		t.Helper()
		if _, err := node.RunModule(ctx, nd.Agent, &agentv1.RunModuleRequest{Module: &agentv1.RunModuleRequest_File{File: &agentv1.FileModule{
			Path: path, Source: &agentv1.FileModule_Content{Content: content}, Mode: mode, MakeParents: true,
		}}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{etcdtest.CACert, etcdtest.CAKey, etcdtest.ServerCert, etcdtest.ServerKey, etcdtest.PeerCert, etcdtest.PeerKey,
		etcdtest.HealthcheckClientCert, etcdtest.HealthcheckClientKey, etcdtest.APIServerEtcdClientCert, etcdtest.APIServerEtcdClientKey} {
		b, err := os.ReadFile(pki.Path(f))
		if err != nil {
			t.Fatal(err)
		}
		mode := uint32(0o644)
		if strings.HasSuffix(f, ".key") {
			mode = 0o600
		}
		put("/etc/kubernetes/pki/"+f, b, mode)
	}
	for _, f := range []string{"etcd.yaml", "kube-apiserver.yaml"} {
		b, err := os.ReadFile(filepath.Join("../etcd/testdata/kubeadm-v1.34.4", f))
		if err != nil {
			t.Fatal(err)
		}
		b = []byte(strings.NewReplacer("cp-1", nd.Name, "10.200.0.11", ip).Replace(string(b)))
		put("/etc/kubernetes/manifests/"+f, b, 0o600)
	}
	pk := "/etc/kubernetes/pki/etcd/"
	env := strings.Join([]string{
		"ETCD_NAME=" + nd.Name,
		"ETCD_DATA_DIR=/var/lib/etcd",
		"ETCD_LISTEN_CLIENT_URLS=https://127.0.0.1:2379,https://" + ip + ":2379",
		"ETCD_ADVERTISE_CLIENT_URLS=https://" + ip + ":2379",
		"ETCD_LISTEN_PEER_URLS=https://" + ip + ":2380",
		"ETCD_INITIAL_ADVERTISE_PEER_URLS=https://" + ip + ":2380",
		"ETCD_INITIAL_CLUSTER=" + nd.Name + "=https://" + ip + ":2380",
		"ETCD_CLIENT_CERT_AUTH=true",
		"ETCD_CERT_FILE=" + pk + "server.crt", "ETCD_KEY_FILE=" + pk + "server.key", "ETCD_TRUSTED_CA_FILE=" + pk + "ca.crt",
		"ETCD_PEER_CLIENT_CERT_AUTH=true",
		"ETCD_PEER_CERT_FILE=" + pk + "peer.crt", "ETCD_PEER_KEY_FILE=" + pk + "peer.key", "ETCD_PEER_TRUSTED_CA_FILE=" + pk + "ca.crt",
		"ETCD_SNAPSHOT_COUNT=10000",
	}, "\n") + "\n"
	put("/etc/default/etcd", []byte(env), 0o644)
	// kubeadm's etcd runs as root (it reads the root-only keys).
	put("/etc/systemd/system/etcd.service.d/kthw-test.conf", []byte("[Service]\nUser=root\n"), 0o644)
	c.Exec(t, nd, "systemctl daemon-reload && systemctl start etcd")

	cl := &config.Cluster{
		Name: "etcdlab", Profile: "debian",
		Provider: config.Provider{Type: config.ProviderStatic, Static: &config.StaticProvider{Hosts: []config.StaticHost{
			{Name: nd.Name, Address: ip, User: "root", IdentityFile: c.Workspace().KeyPath()},
		}}},
		Network: config.Network{NodeCIDR: netip.PrefixFrom(nd.Address, 24).Masked().String()},
		Pools:   []config.NodePool{{Names: []string{nd.Name}, Role: config.RoleControlPlane, Addresses: []string{ip}}},
	}
	cl.SetDefaults()
	if err := cl.Validate(nil); err != nil {
		t.Fatal(err)
	}
	p, err := static.New(cl)
	if err != nil {
		t.Fatal(err)
	}
	return &etcdLab{c: c, nd: nd, pki: pki, opts: ClusterOptions{
		Cluster: cl, Workspace: c.Workspace(), Provider: p,
		AgentBinary: agentbuild.Build(t, agentbuild.Variant{Version: "labtest"}), ControllerVersion: "labtest",
	}}
}

// client reaches the node's etcd from the host over the lab bridge with
// kubeadm's healthcheck client certificate.
func (l *etcdLab) client(t testing.TB) *clientv3.Client {
	t.Helper()
	tc, err := l.pki.ClientTLS(etcdtest.HealthcheckClientCert, etcdtest.HealthcheckClientKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{"https://" + l.nd.Address.String() + ":2379"}, TLS: tc, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func sha256File(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestLabEtcd: on a lab node with Debian's etcd laid out as kubeadm's,
// the scheduled snapshot timer works, a node-local snapshot taken through
// the agent module and pulled back has the same sha256 on both sides, and
// a restore through the kubeadm procedure brings back the snapshot's keys
// with the revision bumped.
func TestLabEtcd(t *testing.T) {
	l := startEtcdLab(t)
	ctx := context.Background()
	nd := l.nd
	cli := l.client(t)
	for i := 0; i < 200; i++ {
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/configmaps/default/cm%03d", i), strings.Repeat("x", 1000)); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("scheduled", func(t *testing.T) {
		s := &config.EtcdSnapshots{Schedule: "hourly", Keep: 2, Dir: "/var/lib/kthw/scheduled"}
		pn := &phase.Node{Name: nd.Name, Role: config.RoleControlPlane, Agent: nd.Agent}
		rep := phase.Run(ctx, pn, nodeprep.EtcdSnapshotSteps(s, nd.Push.RemotePath), nil)
		if rep.Err != nil || !rep.Changed {
			t.Fatalf("steps: %+v", rep)
		}
		if again := phase.Run(ctx, pn, nodeprep.EtcdSnapshotSteps(s, nd.Push.RemotePath), nil); again.Err != nil || again.Changed {
			t.Fatalf("second run changed: %+v", again)
		}
		if out := l.c.Exec(t, nd, "systemctl is-enabled kthw-etcd-snapshot.timer; systemctl is-active kthw-etcd-snapshot.timer"); out != "enabled\nactive\n" {
			t.Fatalf("timer: %q", out)
		}
		for i := 0; i < 3; i++ {
			l.c.Exec(t, nd, "systemctl start kthw-etcd-snapshot.service")
		}
		out := l.c.Exec(t, nd, "ls /var/lib/kthw/scheduled; stat -c %a /var/lib/kthw/scheduled; journalctl -u kthw-etcd-snapshot.service -o cat | grep saved | tail -1")
		t.Logf("scheduled snapshots:\n%s", out)
		if strings.Count(out, ".db\n") != 2 || strings.Count(out, ".db.json\n") != 2 || !strings.Contains(out, "\n700\n") {
			t.Fatalf("after 3 runs with keep 2: %s", out)
		}
	})

	var snap *EtcdSnapshotReport
	t.Run("snapshot and pull", func(t *testing.T) {
		rep, err := EtcdSnapshot(ctx, l.opts, EtcdSnapshotOptions{})
		if err != nil {
			t.Fatal(err)
		}
		snap = rep
		m := rep.Manifest
		t.Logf("%s: %s revision %d, %d bytes, etcd %s; snapshot %s, pull %s", rep.Node, rep.RemotePath, m.GetRevision(), m.GetSize(),
			m.GetEtcdVersion(), rep.SnapshotTook, rep.PullTook)
		remote := strings.Fields(l.c.Exec(t, nd, "sha256sum "+rep.RemotePath))[0]
		local := sha256File(t, rep.LocalPath)
		if remote != m.GetSha256() || local != m.GetSha256() {
			t.Fatalf("sha256 node %s, local %s, manifest %s", remote, local, m.GetSha256())
		}
		if !strings.HasPrefix(m.GetEtcdVersion(), "3.4.") || m.GetStorageVersion() != "" || m.GetMemberName() != nd.Name || m.GetRevision() < 200 {
			t.Errorf("manifest %v", m)
		}
		if fi, _ := os.Stat(rep.LocalPath); fi.Mode().Perm() != 0o600 {
			t.Errorf("local mode %v", fi.Mode())
		}
		if fi, _ := os.Stat(etcdsnap.ManifestPath(rep.LocalPath)); fi.Mode().Perm() != 0o600 {
			t.Errorf("local manifest mode %v", fi.Mode())
		}
		if !strings.HasPrefix(rep.LocalPath, filepath.Join(l.opts.Workspace.EtcdSnapshotsPath(), nd.Name)+"/") {
			t.Errorf("local path %s", rep.LocalPath)
		}
		if out := l.c.Exec(t, nd, "stat -c %a "+rep.RemotePath+" "+rep.RemotePath+".json /var/lib/kthw/etcd-snapshots"); out != "600\n600\n700\n" {
			t.Errorf("node modes %q", out)
		}
		local2, nodes, err := EtcdSnapshots(ctx, l.opts, "", "", false, 15*time.Second)
		if err != nil || len(local2) != 1 || len(nodes) != 1 || len(nodes[0].Snapshots) != 1 || nodes[0].Snapshots[0].GetManifest().GetSha256() != m.GetSha256() {
			t.Fatalf("snapshots: %v %v %v", local2, nodes, err)
		}
	})
	if snap == nil {
		t.Fatal("no snapshot")
	}

	t.Run("restore", func(t *testing.T) {
		// Writes after the snapshot are lost by the restore.
		if _, err := cli.Put(ctx, "/registry/after-snapshot", "lost"); err != nil {
			t.Fatal(err)
		}
		// Not a kubeadm etcd node: refused with a clear message.
		l.c.Exec(t, nd, "mv /etc/kubernetes/manifests/etcd.yaml /root/")
		_, err := EtcdRestore(ctx, l.opts, EtcdRestoreOptions{From: snap.LocalPath})
		if err == nil || !strings.Contains(err.Error(), "has no /etc/kubernetes/manifests/etcd.yaml: is it a kubeadm control-plane node") {
			t.Fatalf("without etcd.yaml: %v", err)
		}
		l.c.Exec(t, nd, "mv /root/etcd.yaml /etc/kubernetes/manifests/")
		before := l.c.Exec(t, nd, "sha256sum /etc/kubernetes/manifests/etcd.yaml /etc/kubernetes/manifests/kube-apiserver.yaml")
		dry := l.opts
		dry.DryRun = true
		rep, err := EtcdRestore(ctx, dry, EtcdRestoreOptions{From: snap.LocalPath})
		if err != nil || !rep.Changed || !strings.Contains(rep.Diff, "+      path: "+rep.DataDir) {
			t.Fatalf("dry run: %+v %v", rep, err)
		}
		if after := l.c.Exec(t, nd, "sha256sum /etc/kubernetes/manifests/etcd.yaml /etc/kubernetes/manifests/kube-apiserver.yaml; ls /var/lib"); !strings.HasPrefix(after, before) || strings.Contains(after, "etcd-restore") {
			t.Fatalf("the dry run changed the node:\n%s", after)
		}
		// The kubelet's part: stop etcd once its manifest is gone.
		l.c.Exec(t, nd, `systemd-run --collect --unit kthw-fake-kubelet sh -c 'while [ -e /etc/kubernetes/manifests/etcd.yaml ]; do sleep 0.1; done; systemctl stop etcd'`)
		rep, err = EtcdRestore(ctx, l.opts, EtcdRestoreOptions{From: snap.LocalPath})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("restored into %s: local restore %s, pack %s (%d bytes), upload %s, swap %s", rep.DataDir, rep.RestoreTook, rep.PackTook, rep.ArchiveBytes, rep.UploadTook, rep.SwapTook)
		out := l.c.Exec(t, nd, "grep -A1 -- '- hostPath:' /etc/kubernetes/manifests/etcd.yaml | grep path:; ls /etc/kubernetes/manifests "+rep.HoldingDir+"; ls -d /var/lib/etcd/member "+rep.DataDir+"/member; stat -c %a "+rep.DataDir)
		t.Logf("node after the restore:\n%s", out)
		for _, want := range []string{"path: " + rep.DataDir + "\n", "etcd.yaml\nkube-apiserver.yaml\n", "etcd.yaml.orig\n", "/var/lib/etcd/member\n", "\n700\n"} {
			if !strings.Contains(out, want) {
				t.Errorf("node after the restore lacks %q", want)
			}
		}
		// The kubelet's part: start etcd from the manifest's new hostPath.
		l.c.Exec(t, nd, "sed -i 's|^ETCD_DATA_DIR=.*|ETCD_DATA_DIR="+rep.DataDir+"|' /etc/default/etcd && systemctl start etcd")
		cli2 := l.client(t)
		resp, err := cli2.Get(ctx, "/registry/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatalf("etcd %s on the restored data directory: %v\n%s", snap.Manifest.GetEtcdVersion(), err, l.c.Exec(t, nd, "journalctl -u etcd -o cat | tail -20"))
		}
		if resp.Count != 200 || resp.Header.Revision != snap.Manifest.GetRevision()+DefaultRevisionBumpForTest {
			t.Errorf("restored: %d keys at revision %d, want 200 at %d", resp.Count, resp.Header.Revision, snap.Manifest.GetRevision()+DefaultRevisionBumpForTest)
		}
		if _, err := cli2.Put(ctx, "/registry/after-restore", "ok"); err != nil {
			t.Errorf("write after restore: %v", err)
		}
		// Again: nothing to do.
		again, err := EtcdRestore(ctx, l.opts, EtcdRestoreOptions{From: snap.LocalPath, DataDir: rep.DataDir})
		if err != nil || again.Changed {
			t.Errorf("second restore: %+v %v", again, err)
		}
	})
}

// DefaultRevisionBumpForTest is etcd.DefaultRevisionBump as an int64.
const DefaultRevisionBumpForTest = int64(etcd.DefaultRevisionBump)
