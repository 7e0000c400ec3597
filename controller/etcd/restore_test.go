package etcd

import (
	"context"
	"errors"
	"fmt"
	"github.com/kthw/kthw/proto/kthw/agent/v1/etcdsnap"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/snapshot"
	"go.uber.org/zap"

	"github.com/kthw/kthw/internal/etcdtest"
)

// saveSnapshot takes a snapshot with etcd's own client/v3/snapshot, so
// that the restore is tested against etcd's format, not ours.
func saveSnapshot(t *testing.T, m *etcdtest.Member, path string) {
	t.Helper()
	tc, err := m.PKI.ClientTLS(etcdtest.HealthcheckClientCert, etcdtest.HealthcheckClientKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snapshot.SaveWithVersion(context.Background(), zap.NewNop(), clientv3.Config{
		Endpoints: []string{m.ClientURL}, TLS: tc, DialTimeout: 5 * time.Second,
	}, path); err != nil {
		t.Fatal(err)
	}
}

// TestRestoreRoundTrip: write keys, snapshot, wipe, restore with etcdutl's
// library, start etcd on the restored directory: keys and revision are
// back (bumped and compacted as asked).
func TestRestoreRoundTrip(t *testing.T) {
	for _, bump := range []uint64{0, DefaultRevisionBump} {
		t.Run(fmt.Sprintf("bump=%d", bump), func(t *testing.T) {
			root := t.TempDir()
			p, err := etcdtest.NewPKI(root, "cp-1")
			if err != nil {
				t.Fatal(err)
			}
			m := etcdtest.Start(t, p, etcdtest.Options{Name: "cp-1"})
			c := m.MustClient(t)
			ctx := context.Background()
			for i := 0; i < 50; i++ {
				if _, err := c.Put(ctx, fmt.Sprintf("/registry/pods/default/p%02d", i), fmt.Sprint("v", i)); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := c.Put(ctx, "/registry/pods/default/p00", "v0-updated"); err != nil {
				t.Fatal(err)
			}
			del, err := c.Delete(ctx, "/registry/pods/default/p49")
			if err != nil {
				t.Fatal(err)
			}
			rev := del.Header.Revision
			snap := filepath.Join(t.TempDir(), "snap.db")
			saveSnapshot(t, m, snap)

			// Lose the member and its data.
			m.Stop()
			if err := os.RemoveAll(m.DataDir); err != nil {
				t.Fatal(err)
			}
			dataDir := filepath.Join(t.TempDir(), "restored")
			start := time.Now()
			r, err := RestoreDataDir(RestoreOptions{Snapshot: snap, DataDir: dataDir,
				Member: Member{Name: "cp-1", PeerURLs: []string{m.PeerURL}}, RevisionBump: bump})
			if err != nil {
				t.Fatalf("restore: %v", err)
			}
			t.Logf("restored %d bytes in %s", r.Verified.Size, time.Since(start))
			assertNoStaging(t, filepath.Dir(dataDir))

			m2 := etcdtest.Start(t, p, etcdtest.Options{Name: "cp-1", DataDir: dataDir, PeerURL: m.PeerURL})
			c2 := m2.MustClient(t)
			resp, err := c2.Get(ctx, "/registry/pods/", clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Kvs) != 49 || string(resp.Kvs[0].Value) != "v0-updated" {
				t.Fatalf("after restore: %d keys, first %s", len(resp.Kvs), resp.Kvs[0].Value)
			}
			if got, want := resp.Header.Revision, rev+int64(bump); got != want {
				t.Errorf("revision after restore %d, want %d", got, want)
			}
			_, err = c2.Get(ctx, "/registry/pods/default/p01", clientv3.WithRev(rev))
			switch {
			case bump > 0 && (err == nil || !strings.Contains(err.Error(), "compacted")):
				t.Errorf("read at the old revision after a bump: %v, want compacted", err)
			case bump == 0 && err != nil:
				t.Errorf("read at the old revision: %v", err)
			}
			// The restored member writes on.
			if _, err := c2.Put(ctx, "/after", "restore"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func assertNoStaging(t *testing.T, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".part-") {
			t.Errorf("staging directory %s left behind", e.Name())
		}
	}
}

func TestRestoreRefusesDamage(t *testing.T) {
	root := t.TempDir()
	p, _ := etcdtest.NewPKI(root, "cp-1")
	m := etcdtest.Start(t, p, etcdtest.Options{Name: "cp-1"})
	m.MustClient(t).Put(context.Background(), "k", strings.Repeat("v", 5000))
	dir := t.TempDir()
	snap := filepath.Join(dir, "snap.db")
	saveSnapshot(t, m, snap)
	good, _ := os.ReadFile(snap)
	flipped := append([]byte(nil), good...)
	flipped[100] ^= 1
	member := Member{Name: "cp-1", PeerURLs: []string{"http://127.0.0.1:2380"}}
	for _, c := range []struct {
		name string
		data []byte
		want error
	}{
		{"truncated", good[:len(good)-4096], ErrTrailerMismatch},
		{"cut", good[:len(good)-10], ErrNoTrailer},
		{"corrupted", flipped, ErrTrailerMismatch},
	} {
		f := filepath.Join(dir, c.name+".db")
		os.WriteFile(f, c.data, 0o600)
		out := filepath.Join(dir, c.name+"-data")
		_, err := RestoreDataDir(RestoreOptions{Snapshot: f, DataDir: out, Member: member})
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), "refusing to restore") {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
			continue
		}
		t.Logf("%s: %v", c.name, err)
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: data directory created", c.name)
		}
	}
	// A manifest that disagrees is refused too.
	os.WriteFile(etcdsnap.ManifestPath(snap), []byte(`{"name":"snap.db","size":"1","sha256":"00"}`), 0o600)
	if _, err := RestoreDataDir(RestoreOptions{Snapshot: snap, DataDir: filepath.Join(dir, "m"), Member: member}); !errors.Is(err, ErrManifestMismatch) {
		t.Errorf("manifest mismatch: %v", err)
	}
	os.Remove(etcdsnap.ManifestPath(snap))
	// An existing data directory is never overwritten.
	os.Mkdir(filepath.Join(dir, "exists"), 0o700)
	if _, err := RestoreDataDir(RestoreOptions{Snapshot: snap, DataDir: filepath.Join(dir, "exists"), Member: member}); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Errorf("existing data dir: %v", err)
	}
	if _, err := RestoreDataDir(RestoreOptions{Snapshot: filepath.Join(dir, "missing.db"), DataDir: filepath.Join(dir, "x"), Member: member}); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing snapshot: %v", err)
	}
	assertNoStaging(t, dir)
}
