package etcd

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kthw/kthw/internal/etcdtest"
)

// kubeadmNode lays out a kubeadm control-plane node under a temporary
// root: the static-pod manifests kubeadm v1.34.4 wrote (testdata) and an
// old data directory.
func kubeadmNode(t *testing.T, root string) (etcdYAML []byte) {
	t.Helper()
	mdir := filepath.Join(root, DefaultManifestDir)
	os.MkdirAll(mdir, 0o755)
	for _, f := range []string{EtcdManifest, APIServerManifest} {
		b, err := os.ReadFile(filepath.Join("testdata/kubeadm-v1.34.4", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(mdir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(mdir, "kube-scheduler.yaml"), []byte("kind: Pod\n"), 0o600)
	os.MkdirAll(filepath.Join(root, "var/lib/etcd/member"), 0o700)
	b, _ := os.ReadFile(filepath.Join(mdir, EtcdManifest))
	return b
}

// closedAddr is an address nothing listens on: etcd "stopped".
func closedAddr(t *testing.T) string {
	p, err := etcdtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", p)
}

// TestRestoreKubeadmFlow runs the node half of a kubeadm restore under a
// temporary root with real data: keys written to a real etcd, a snapshot
// saved by Save, the data lost, the snapshot restored with etcdutl's
// library into an archive as the controller makes it, then ApplyRestore:
// the manifests move out and back, the etcd manifest points at the new
// directory, and an etcd started on that directory has the keys and the
// bumped revision.
func TestRestoreKubeadmFlow(t *testing.T) {
	root, m, ep := member(t)
	c := m.MustClient(t)
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		if _, err := c.Put(ctx, fmt.Sprintf("/registry/configmaps/default/c%02d", i), fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	rev := put(t, m, "/registry/namespaces/kthw", "ns")
	saved, err := Save(ctx, SaveOptions{Endpoint: ep, Root: root})
	if err != nil {
		t.Fatal(err)
	}
	m.Stop()
	os.RemoveAll(m.DataDir)

	// The controller's half: restore with etcdutl, pack.
	work := t.TempDir()
	restored := filepath.Join(work, "data")
	const bump = 1_000_000_000
	if err := etcdtest.Restore(filepath.Join(root, saved.Path), restored, "cp-1", m.PeerURL, bump); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(work, "data.tar.gz")
	f, _ := os.Create(archive)
	if err := etcdtest.TarGz(restored, f); err != nil {
		t.Fatal(err)
	}
	f.Close()

	old := kubeadmNode(t, root)
	const newDir = "/var/lib/etcd-restore-20260102T150405Z"
	newYAML := bytes.Replace(old, []byte("      path: /var/lib/etcd\n"), []byte("      path: "+newDir+"\n"), 1)
	o := RestoreOptions{
		Root: root, Archive: archive, DataDir: newDir,
		HoldingDir:   "/etc/kubernetes/kthw-etcd-restore-20260102T150405Z",
		EtcdManifest: newYAML, EtcdManifestSHA256: sha256Hex(old),
		WatchAddr: closedAddr(t),
	}
	var logs []string
	o.Log = func(s string) { logs = append(logs, s) }
	plan, err := PlanRestore(o)
	if err != nil || plan.Done || !strings.Contains(plan.Diff, "+      path: "+newDir) {
		t.Fatalf("plan %+v %v", plan, err)
	}
	if exists(filepath.Join(root, newDir)) {
		t.Fatal("plan changed the node")
	}
	t.Logf("plan:\n%s", plan.Diff)
	if _, err := ApplyRestore(ctx, o); err != nil {
		t.Fatal(err)
	}
	t.Logf("log:\n%s", strings.Join(logs, "\n"))
	mdir := filepath.Join(root, DefaultManifestDir)
	if b, _ := os.ReadFile(filepath.Join(mdir, EtcdManifest)); !bytes.Equal(b, newYAML) {
		t.Errorf("etcd.yaml is not the new manifest:\n%s", b)
	}
	if fi, _ := os.Stat(filepath.Join(mdir, EtcdManifest)); fi.Mode().Perm() != 0o600 {
		t.Errorf("etcd.yaml mode %v", fi.Mode())
	}
	api, _ := os.ReadFile("testdata/kubeadm-v1.34.4/kube-apiserver.yaml")
	if b, _ := os.ReadFile(filepath.Join(mdir, APIServerManifest)); !bytes.Equal(b, api) {
		t.Error("kube-apiserver.yaml changed or missing")
	}
	if b, _ := os.ReadFile(filepath.Join(root, o.HoldingDir, EtcdManifest+origSuffix)); !bytes.Equal(b, old) {
		t.Error("the original etcd.yaml is not kept")
	}
	if entries, _ := os.ReadDir(filepath.Join(root, o.HoldingDir)); len(entries) != 1 {
		t.Errorf("holding dir holds %v", entries)
	}
	if !exists(filepath.Join(root, "var/lib/etcd/member")) {
		t.Error("the old data directory is gone")
	}
	if fi, err := os.Stat(filepath.Join(root, newDir)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("new data dir: %v %v", fi, err)
	}
	// Again: nothing to do.
	if plan, err := ApplyRestore(ctx, o); err != nil || !plan.Done {
		t.Errorf("second run: %+v %v", plan, err)
	}
	// Start etcd from the new data directory, as the kubelet would.
	m2 := etcdtest.Start(t, m.PKI, etcdtest.Options{Name: "cp-1", DataDir: filepath.Join(root, newDir), PeerURL: m.PeerURL})
	c2 := m2.MustClient(t)
	resp, err := c2.Get(ctx, "/registry/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 21 || resp.Header.Revision != rev+bump {
		t.Fatalf("restored etcd: %d keys at revision %d, want 21 at %d", len(resp.Kvs), resp.Header.Revision, rev+bump)
	}
}

// restoreFixture makes a node and an archive (of a tiny fake data dir)
// for the failure paths, which do not need a real etcd.
func restoreFixture(t *testing.T) (RestoreOptions, []byte) {
	t.Helper()
	root := t.TempDir()
	old := kubeadmNode(t, root)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "member/", Mode: 0o700})
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "member/snap/db", Mode: 0o600, Size: 3})
	tw.Write([]byte("abc"))
	tw.Close()
	zw.Close()
	archive := filepath.Join(t.TempDir(), "a.tar.gz")
	os.WriteFile(archive, buf.Bytes(), 0o600)
	return RestoreOptions{
		Root: root, Archive: archive, DataDir: "/var/lib/etcd-new",
		EtcdManifest:       bytes.Replace(old, []byte("path: /var/lib/etcd\n"), []byte("path: /var/lib/etcd-new\n"), 1),
		EtcdManifestSHA256: sha256Hex(old), WatchAddr: closedAddr(t),
	}, old
}

func TestRestoreRefusals(t *testing.T) {
	t.Run("manifest changed", func(t *testing.T) {
		o, _ := restoreFixture(t)
		o.EtcdManifestSHA256 = strings.Repeat("a", 64)
		if _, err := ApplyRestore(context.Background(), o); !errors.Is(err, ErrManifestChanged) {
			t.Fatalf("got %v", err)
		} else {
			t.Log(err)
		}
		if exists(filepath.Join(o.Root, o.DataDir)) {
			t.Error("data dir created")
		}
	})
	t.Run("no kubeadm etcd", func(t *testing.T) {
		o, _ := restoreFixture(t)
		os.Remove(filepath.Join(o.Root, DefaultManifestDir, EtcdManifest))
		_, err := ApplyRestore(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), "is this a kubeadm control-plane node") {
			t.Fatalf("got %v", err)
		}
		t.Log(err)
	})
	t.Run("data dir exists", func(t *testing.T) {
		o, _ := restoreFixture(t)
		os.MkdirAll(filepath.Join(o.Root, o.DataDir), 0o700)
		if _, err := ApplyRestore(context.Background(), o); err == nil || !strings.Contains(err.Error(), "exists already") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("missing parent of the data dir", func(t *testing.T) {
		o, _ := restoreFixture(t)
		o.DataDir = "/nonexistent/etcd"
		o.EtcdManifest = []byte("x")
		_, err := ApplyRestore(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), "parent of data directory /nonexistent/etcd is missing") {
			t.Fatalf("got %v", err)
		}
		t.Log(err)
	})
	t.Run("bad archive", func(t *testing.T) {
		o, old := restoreFixture(t)
		os.WriteFile(o.Archive, []byte("not gzip"), 0o600)
		if _, err := ApplyRestore(context.Background(), o); err == nil {
			t.Fatal("bad archive accepted")
		}
		assertUntouched(t, o, old)
	})
	t.Run("etcd does not stop", func(t *testing.T) {
		o, old := restoreFixture(t)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		o.WatchAddr, o.StopTimeout = l.Addr().String(), time.Second
		_, err = ApplyRestore(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), "still listens") || !strings.Contains(err.Error(), "nothing changed") {
			t.Fatalf("got %v", err)
		}
		t.Log(err)
		assertUntouched(t, o, old)
	})
	t.Run("canceled while etcd runs", func(t *testing.T) {
		o, old := restoreFixture(t)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		o.WatchAddr = l.Addr().String()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err = ApplyRestore(ctx, o)
		if !errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "still listens") || !strings.Contains(err.Error(), "nothing changed") {
			t.Fatalf("got %v", err)
		}
		t.Log(err)
		assertUntouched(t, o, old)
	})
	t.Run("resume", func(t *testing.T) {
		o, _ := restoreFixture(t)
		// An earlier run died after moving the manifests out.
		hold := filepath.Join(o.Root, "etc/kubernetes/kthw-etcd-restore")
		os.MkdirAll(hold, 0o700)
		for _, f := range []string{EtcdManifest, APIServerManifest} {
			os.Rename(filepath.Join(o.Root, DefaultManifestDir, f), filepath.Join(hold, f))
		}
		plan, err := ApplyRestore(context.Background(), o)
		if err != nil || !plan.Resume {
			t.Fatalf("resume: %+v %v", plan, err)
		}
		b, _ := os.ReadFile(filepath.Join(o.Root, DefaultManifestDir, EtcdManifest))
		if !bytes.Equal(b, o.EtcdManifest) || !exists(filepath.Join(o.Root, DefaultManifestDir, APIServerManifest)) {
			t.Error("manifests not back after resume")
		}
	})
}

// assertUntouched checks that a failed restore left the node as it was.
func assertUntouched(t *testing.T, o RestoreOptions, old []byte) {
	t.Helper()
	mdir := filepath.Join(o.Root, DefaultManifestDir)
	if b, _ := os.ReadFile(filepath.Join(mdir, EtcdManifest)); !bytes.Equal(b, old) {
		t.Error("etcd.yaml not as it was")
	}
	if !exists(filepath.Join(mdir, APIServerManifest)) {
		t.Error("kube-apiserver.yaml not back")
	}
	entries, _ := os.ReadDir(filepath.Join(o.Root, "var/lib"))
	for _, e := range entries {
		if e.Name() != "etcd" {
			t.Errorf("left behind: /var/lib/%s", e.Name())
		}
	}
}

func TestExtractRefuses(t *testing.T) {
	for name, h := range map[string]*tar.Header{
		"escape":   {Typeflag: tar.TypeReg, Name: "../evil", Size: 1},
		"absolute": {Typeflag: tar.TypeReg, Name: "/etc/evil", Size: 1},
		"symlink":  {Typeflag: tar.TypeSymlink, Name: "link", Linkname: "/etc/shadow"},
	} {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		tw := tar.NewWriter(zw)
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "ok", Size: 1})
		tw.Write([]byte("x"))
		tw.WriteHeader(h)
		if h.Size > 0 {
			tw.Write([]byte("x"))
		}
		tw.Close()
		zw.Close()
		parent := t.TempDir()
		dir := filepath.Join(parent, "data")
		if _, _, err := Extract(&buf, dir); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
		if entries, _ := os.ReadDir(parent); len(entries) != 0 {
			t.Errorf("%s: left %v", name, entries)
		}
	}
}
