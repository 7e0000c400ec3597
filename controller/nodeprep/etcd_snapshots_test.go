package nodeprep

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/kthw/kthw/controller/config"
	"github.com/kthw/kthw/controller/phase"
)

// TestEtcdSnapshotUnitsGolden renders the scheduled-snapshot units and
// compares them with testdata/TestEtcdSnapshotUnitsGolden/*.
func TestEtcdSnapshotUnitsGolden(t *testing.T) {
	s := &config.EtcdSnapshots{Schedule: "*-*-* 00/6:00:00", Keep: 12, Dir: "/var/lib/kthw/etcd-snapshots"}
	for name, got := range map[string]string{
		EtcdSnapshotService: EtcdSnapshotServiceUnit(s, "/var/lib/kthw/agent/0123abcd/kthw-agent"),
		EtcdSnapshotTimer:   EtcdSnapshotTimerUnit(s),
	} {
		path := filepath.Join("testdata", t.Name(), name)
		if *update {
			os.MkdirAll(filepath.Dir(path), 0o755)
			if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run with -update)", err)
		}
		if got != string(want) {
			t.Errorf("%s differs from %s (run with -update to accept):\n%s", name, path, got)
		}
	}
}

// TestEtcdSnapshotStepsOnlyControlPlane: the steps skip workers and are
// absent without the option.
func TestEtcdSnapshotStepsOnlyControlPlane(t *testing.T) {
	if EtcdSnapshotSteps(nil, "/x") != nil {
		t.Fatal("steps without the option")
	}
	steps := EtcdSnapshotSteps(&config.EtcdSnapshots{Schedule: "hourly", Keep: 1, Dir: "/d"}, "/x")
	if len(steps) != 2 {
		t.Fatalf("%d steps", len(steps))
	}
	// A worker walks them without running any (no agent is needed).
	rep := phase.Run(context.Background(), &phase.Node{Name: "worker-1", Role: config.RoleWorker}, steps, nil)
	if rep.Err != nil || len(rep.Steps) != 0 {
		t.Fatalf("worker: %+v", rep)
	}
}
