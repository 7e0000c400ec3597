package etcd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/kthw/kthw/proto/kthw/agent/v1/etcdsnap"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kthw/kthw/internal/etcdtest"
)

// member starts a real etcd with a kubeadm-style PKI under a temporary
// root and returns the root, the member and an endpoint that relies on
// kubeadm's default certificate paths under that root.
func member(t *testing.T) (string, *etcdtest.Member, Endpoint) {
	t.Helper()
	root := t.TempDir()
	p, err := etcdtest.NewPKI(root, "cp-1")
	if err != nil {
		t.Fatal(err)
	}
	m := etcdtest.Start(t, p, etcdtest.Options{Name: "cp-1"})
	return root, m, Endpoint{URL: m.ClientURL, Root: root}
}

func put(t *testing.T, m *etcdtest.Member, kv ...string) int64 {
	t.Helper()
	c := m.MustClient(t)
	var rev int64
	for i := 0; i+1 < len(kv); i += 2 {
		r, err := c.Put(context.Background(), kv[i], kv[i+1])
		if err != nil {
			t.Fatal(err)
		}
		rev = r.Header.Revision
	}
	return rev
}

// clock returns a clock that advances a second per call.
func clock() func() time.Time {
	t := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	return func() time.Time {
		t = t.Add(time.Second)
		return t
	}
}

func TestSaveVerifyList(t *testing.T) {
	root, m, ep := member(t)
	rev := put(t, m, "/registry/a", "1", "/registry/b", "2")
	var progress []int64
	start := time.Now()
	saved, err := Save(context.Background(), SaveOptions{
		Endpoint: ep, Root: root, Node: "cp-1", Now: clock(),
		Progress: func(done, total int64) { progress = append(progress, done) },
	})
	if err != nil {
		t.Fatalf("save: %v", err)
	}
	t.Logf("saved %s (%d bytes) in %s", saved.Path, saved.Manifest.GetSize(), time.Since(start))
	if saved.Path != "/var/lib/kthw/etcd-snapshots/etcd-snapshot-20260102T150406Z.db" {
		t.Errorf("path %s", saved.Path)
	}
	full := filepath.Join(root, saved.Path)
	fi, err := os.Stat(full)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("snapshot mode %v, want 0600", fi.Mode())
	}
	for _, p := range []string{etcdsnap.ManifestPath(full)} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", p, fi.Mode(), err)
		}
	}
	if di, _ := os.Stat(filepath.Dir(full)); di.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v, want 0700", di.Mode())
	}
	b, _ := os.ReadFile(full)
	sum := sha256.Sum256(b)
	man := saved.Manifest
	if man.GetSha256() != hex.EncodeToString(sum[:]) || man.GetSize() != int64(len(b)) {
		t.Errorf("manifest sha256/size %s/%d, file %x/%d", man.GetSha256(), man.GetSize(), sum, len(b))
	}
	if man.GetRevision() != rev || man.GetMemberName() != "cp-1" || man.GetEtcdVersion() != "3.6.16" ||
		man.GetStorageVersion() == "" || man.GetNode() != "cp-1" || man.GetEndpoint() != m.ClientURL ||
		man.GetTime() != "2026-01-02T15:04:06Z" || man.GetMemberId() == "" || man.GetClusterId() == "" {
		t.Errorf("manifest %v (revision want %d)", man, rev)
	}
	if len(progress) == 0 || progress[len(progress)-1] != man.GetSize() {
		t.Errorf("progress %v", progress)
	}
	onDisk, err := etcdsnap.ReadManifest(etcdsnap.ManifestPath(full))
	if err != nil || onDisk.GetSha256() != man.GetSha256() || onDisk.GetRevision() != rev {
		t.Errorf("manifest on disk %v %v", onDisk, err)
	}
	v, err := Verify(full)
	if err != nil || v.Manifest == nil || v.SHA256 != man.GetSha256() {
		t.Fatalf("verify: %v %v", v, err)
	}
	list, err := List(root, DefaultDir)
	if err != nil || len(list) != 1 || list[0].GetPath() != saved.Path || list[0].GetManifest().GetRevision() != rev {
		t.Fatalf("list %v %v", list, err)
	}
	assertOnly(t, filepath.Dir(full), filepath.Base(full), filepath.Base(etcdsnap.ManifestPath(full)))
}

// assertOnly checks that dir holds exactly names (and the lock file).
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		if e.Name() != lockFile {
			got = append(got, e.Name())
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(names) {
		t.Errorf("%s holds %v, want %v", dir, got, names)
	}
}

func TestSaveFallsBackToServerCert(t *testing.T) {
	root, m, ep := member(t)
	put(t, m, "k", "v")
	for _, f := range []string{etcdtest.HealthcheckClientCert, etcdtest.HealthcheckClientKey} {
		os.Remove(filepath.Join(root, "etc/kubernetes/pki", f))
	}
	if got := ep.WithDefaults(); got.Cert != "/etc/kubernetes/pki/etcd/server.crt" || got.Key != "/etc/kubernetes/pki/etcd/server.key" {
		t.Fatalf("defaults %+v", got)
	}
	if _, err := Save(context.Background(), SaveOptions{Endpoint: ep, Root: root}); err != nil {
		t.Fatal(err)
	}
}

func TestRetention(t *testing.T) {
	root, m, ep := member(t)
	now := clock()
	dir := filepath.Join(root, DefaultDir)
	var kept []string
	for i := 0; i < 4; i++ {
		put(t, m, "k", fmt.Sprint(i))
		s, err := Save(context.Background(), SaveOptions{Endpoint: ep, Root: root, Keep: 2, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		kept = append(kept, filepath.Base(s.Path))
		if i == 0 {
			// A snapshot copied in by hand is never pruned.
			b, _ := os.ReadFile(filepath.Join(root, s.Path))
			mine := filepath.Join(dir, "mine.db")
			os.WriteFile(mine, b, 0o600)
			old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
			os.Chtimes(mine, old, old)
		}
		if i >= 2 && len(s.Pruned) != 1 {
			t.Errorf("run %d pruned %v", i, s.Pruned)
		}
	}
	assertOnly(t, dir, kept[2], kept[2]+".json", kept[3], kept[3]+".json", "mine.db")
	list, _ := List(root, DefaultDir)
	if len(list) != 3 || filepath.Base(list[0].GetPath()) != kept[3] || filepath.Base(list[1].GetPath()) != kept[2] || filepath.Base(list[2].GetPath()) != "mine.db" {
		t.Errorf("list order %v", list)
	}
	// Two snapshots in the same second get distinct names.
	same := func() time.Time { return time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC) }
	a, err1 := Save(context.Background(), SaveOptions{Endpoint: ep, Root: root, Now: same})
	b, err2 := Save(context.Background(), SaveOptions{Endpoint: ep, Root: root, Now: same})
	if err1 != nil || err2 != nil || a.Path == b.Path || !strings.HasSuffix(b.Path, "-2.db") {
		t.Errorf("same second: %v %v %v %v", a, b, err1, err2)
	}
}

func TestVerifyRefusesDamage(t *testing.T) {
	root, m, ep := member(t)
	put(t, m, "k", strings.Repeat("v", 10000))
	s, err := Save(context.Background(), SaveOptions{Endpoint: ep, Root: root})
	if err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(filepath.Join(root, s.Path))
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)/2] ^= 0xff
	for _, c := range []struct {
		name string
		data []byte
		want error
		msg  string
	}{
		{"truncated.db", good[:len(good)-100], ErrNoTrailer, "truncated or not an etcd snapshot"},
		{"short.db", good[:len(good)-512], ErrTrailerMismatch, "is corrupted"},
		{"flipped.db", flipped, ErrTrailerMismatch, "is corrupted"},
		{"empty.db", nil, ErrNoTrailer, "size 0"},
	} {
		_, err := Verify(write(c.name, c.data))
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v, want %v (%q)", c.name, err, c.want, c.msg)
		} else {
			t.Logf("%s: %v", c.name, err)
		}
	}
	// Intact, but not what the manifest says.
	p := write("other.db", good)
	man, _ := os.ReadFile(etcdsnap.ManifestPath(filepath.Join(root, s.Path)))
	write("other.db.json", []byte(strings.Replace(string(man), s.Manifest.GetSha256(), strings.Repeat("0", 64), 1)))
	if _, err := Verify(p); !errors.Is(err, ErrManifestMismatch) {
		t.Errorf("manifest mismatch: %v", err)
	} else {
		t.Logf("other.db: %v", err)
	}
	if _, err := Verify(filepath.Join(dir, "missing.db")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing: %v", err)
	}
}

func TestSaveBadInput(t *testing.T) {
	root, m, ep := member(t)
	put(t, m, "k", "v")
	// Another CA's certificates, under the same root.
	if _, err := etcdtest.NewPKI(filepath.Join(root, "other"), "other"); err != nil {
		t.Fatal(err)
	}
	closed, _ := etcdtest.FreePort()
	pki, oth := "/etc/kubernetes/pki/etcd", "/other/etc/kubernetes/pki/etcd"
	for _, c := range []struct {
		name string
		ep   Endpoint
		want error
		msg  string
	}{
		{"wrong endpoint", Endpoint{URL: fmt.Sprintf("https://127.0.0.1:%d", closed)}, ErrUnreachable, "connection refused"},
		{"not a URL", Endpoint{URL: "127.0.0.1:2379"}, nil, "is not an http(s) URL"},
		{"wrong CA", Endpoint{URL: ep.URL, CACert: filepath.Join(oth, "ca.crt"), Cert: filepath.Join(pki, "healthcheck-client.crt"), Key: filepath.Join(pki, "healthcheck-client.key")},
			ErrTLS, "not signed by the CA"},
		{"untrusted client cert", Endpoint{URL: ep.URL, CACert: filepath.Join(pki, "ca.crt"), Cert: filepath.Join(oth, "healthcheck-client.crt"), Key: filepath.Join(oth, "healthcheck-client.key")},
			ErrTLS, "refused the client certificate"},
		{"missing cert", Endpoint{URL: ep.URL, CACert: filepath.Join(pki, "ca.crt"), Cert: "/nonexistent.crt", Key: "/nonexistent.key"},
			ErrTLS, "no such file"},
		{"key of another cert", Endpoint{URL: ep.URL, CACert: filepath.Join(pki, "ca.crt"), Cert: filepath.Join(pki, "healthcheck-client.crt"), Key: filepath.Join(pki, "server.key")},
			ErrTLS, "private key does not match"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := "/" + strings.ReplaceAll(c.name, " ", "-")
			start := time.Now()
			_, err := Save(context.Background(), SaveOptions{Endpoint: c.ep, Root: root, Dir: dir})
			if err == nil || (c.want != nil && !errors.Is(err, c.want)) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %v, want %v with %q", err, c.want, c.msg)
			}
			t.Logf("%s (%s)", err, time.Since(start).Round(time.Millisecond))
			if time.Since(start) > 3*time.Second {
				t.Errorf("took %s: bad input should fail fast", time.Since(start))
			}
			assertOnly(t, filepath.Join(root, dir))
		})
	}
	t.Run("dir is a file", func(t *testing.T) {
		os.WriteFile(filepath.Join(root, "file"), nil, 0o600)
		_, err := Save(context.Background(), SaveOptions{Endpoint: ep, Root: root, Dir: "/file/snaps"})
		if err == nil || !strings.Contains(err.Error(), "not a directory") {
			t.Fatalf("got %v", err)
		}
		t.Log(err)
	})
	t.Run("canceled", func(t *testing.T) {
		dir := "/canceled"
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := Save(ctx, SaveOptions{Endpoint: ep, Root: root, Dir: dir}); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v", err)
		}
		assertOnly(t, filepath.Join(root, dir))
	})
	t.Run("busy", func(t *testing.T) {
		dir := filepath.Join(root, "busy")
		os.MkdirAll(dir, 0o700)
		unlock, err := lockDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer unlock()
		if _, err := Save(context.Background(), SaveOptions{Endpoint: ep, Root: root, Dir: "/busy"}); !errors.Is(err, ErrBusy) {
			t.Fatalf("got %v", err)
		}
	})
}

// TestSaveNoSpace fills a tiny tmpfs: the error says so and no partial
// file is left.
func TestSaveNoSpace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	root, m, ep := member(t)
	c := m.MustClient(t)
	if _, err := etcdtest.Fill(context.Background(), c, "/big/", 40, 100<<10); err != nil {
		t.Fatal(err)
	}
	small := filepath.Join(root, "small")
	os.Mkdir(small, 0o700)
	if err := unix.Mount("tmpfs", small, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=1m,mode=0700"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(small, 0); err != nil {
			unix.Unmount(small, unix.MNT_DETACH)
		}
	})
	_, err := Save(context.Background(), SaveOptions{Endpoint: ep, Root: root, Dir: "/small"})
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "no space left on device") || !strings.Contains(err.Error(), ".part") {
		t.Fatalf("got %v, want no space left on device", err)
	}
	t.Log(err)
	assertOnly(t, small)
}

func TestStatus(t *testing.T) {
	root, m, ep := member(t)
	rev := put(t, m, "a", "1")
	st, err := Status(context.Background(), ep)
	if err != nil {
		t.Fatal(err)
	}
	_ = root
	if !st.Healthy || len(st.Members) != 1 {
		t.Fatalf("status %+v", st)
	}
	ms := st.Members[0]
	if !ms.Leader || !ms.Healthy || ms.Name != "cp-1" || ms.Revision != rev || ms.DBSize <= 0 || ms.Version != "3.6.16" || st.LeaderID != ms.ID {
		t.Errorf("member %+v", ms)
	}
	m.Stop()
	if _, err := Status(context.Background(), ep); !errors.Is(err, ErrUnreachable) {
		t.Errorf("stopped member: %v", err)
	}
}
