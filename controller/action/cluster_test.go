package action

import (
	"context"
	"errors"
	"testing"

	"github.com/kthw/kthw/controller/config"
	"github.com/kthw/kthw/controller/fanout"
)

// A verb cancelled before some nodes started still names every node in its
// reports, and counts them as failed.
func TestNodeReportsNameNodesThatNeverRan(t *testing.T) {
	specs := []config.NodeSpec{{Name: "cp-1", Role: config.RoleControlPlane}, {Name: "worker-1", Role: config.RoleWorker}}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out := fanout.Each(ctx, len(specs), 1, func(context.Context, int) (NodeReport, error) {
		t.Error("a node ran after the context was cancelled")
		return NodeReport{}, nil
	})
	reports := nodeReports(specs, out)
	for i, r := range reports {
		if r.Name != specs[i].Name || r.Role != specs[i].Role {
			t.Errorf("report %d: %q (%s), want %q (%s)", i, r.Name, r.Role, specs[i].Name, specs[i].Role)
		}
		if !errors.Is(r.Err, context.Canceled) {
			t.Errorf("report %d: err = %v, want context.Canceled", i, r.Err)
		}
	}
	if err := failedNodes(reports); !IsNodeFailure(err) {
		t.Errorf("failedNodes = %v, want a node failure", err)
	}
}
