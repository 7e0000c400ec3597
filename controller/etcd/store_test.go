package etcd

import (
	"github.com/kthw/kthw/proto/kthw/agent/v1/etcdsnap"
	"os"
	"path/filepath"
	"testing"
	"time"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

func TestStore(t *testing.T) {
	s := Store{Dir: filepath.Join(t.TempDir(), "etcd-snapshots")}
	if l, err := s.List(); err != nil || len(l) != 0 {
		t.Fatalf("empty store: %v %v", l, err)
	}
	for _, bad := range [][2]string{{"../x", "a.db"}, {"cp-1", "../a.db"}, {"cp-1", "a.txt"}, {"", "a.db"}, {".hidden", "a.db"}} {
		if _, err := s.Path(bad[0], bad[1]); err == nil {
			t.Errorf("Path(%q, %q) accepted", bad[0], bad[1])
		}
	}
	old, err := s.Path("cp-1", "etcd-snapshot-20260101T000000Z.db")
	if err != nil {
		t.Fatal(err)
	}
	newer, _ := s.Path("cp-2", "etcd-snapshot-20260102T000000Z.db")
	for _, p := range []string{old, newer} {
		os.WriteFile(p, []byte("x"), 0o600)
	}
	when := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	os.Chtimes(old, when, when)
	if err := s.WriteManifest(newer, &agentv1.EtcdSnapshotManifest{Name: filepath.Base(newer), Time: "2026-01-02T00:00:00Z", Revision: 7}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{s.Dir, filepath.Dir(old)} {
		if fi, _ := os.Stat(d); fi.Mode().Perm() != 0o700 {
			t.Errorf("%s mode %v", d, fi.Mode())
		}
	}
	if fi, _ := os.Stat(etcdsnap.ManifestPath(newer)); fi.Mode().Perm() != 0o600 {
		t.Errorf("manifest mode %v", fi.Mode())
	}
	l, err := s.List()
	if err != nil || len(l) != 2 || l[0].Node != "cp-2" || l[0].Manifest.GetRevision() != 7 || l[1].ManifestError != "no manifest" {
		t.Fatalf("list %+v %v", l, err)
	}
}
