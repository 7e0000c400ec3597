package proxmox

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	pve "github.com/luthermonson/go-proxmox"

	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
)

// startTask starts a VM (a qmstart task) straight through go-proxmox.
func startTask(t *testing.T, e *simEnv, id int) *pve.Task {
	t.Helper()
	c, err := e.p.Client(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	task, err := handle(c, vmRef{id: id, node: "pve1"}).Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return task
}

func cloneForTask(t *testing.T, e *simEnv, id int) {
	t.Helper()
	if err := e.p.w.waitTask(context.Background(), rawClone(t, e, "cp-1", id), time.Minute); err != nil {
		t.Fatal(err)
	}
}

func TestWaitTaskOutcomes(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t)
	e := newSimProvider(t, simCluster(t, sim), sim, "")
	cloneForTask(t, e, 101)
	cloneForTask(t, e, 102)
	cloneForTask(t, e, 103)

	sim.SetFaults(pvesim.Faults{TaskWarnings: map[string]int{"qmstart": 1}})
	if err := e.p.w.waitTask(ctx, startTask(t, e, 101), time.Minute); err != nil {
		t.Fatalf("a task ending in WARNINGS: %v; want success", err)
	}
	sim.SetFaults(pvesim.Faults{TaskFailures: map[string]int{"qmstart": 1}, TaskFailureText: "start failed: no space"})
	err := e.p.w.waitTask(ctx, startTask(t, e, 102), time.Minute)
	var te *TaskError
	if !errors.As(err, &te) || te.Type != "qmstart" || te.Exit != "start failed: no space" || !strings.HasPrefix(te.UPID, "UPID:pve1:") {
		t.Fatalf("failed task: %#v", err)
	}
	if err := e.p.w.waitTask(ctx, nil, time.Minute); err != nil {
		t.Fatalf("nil task (PVE 7's synchronous answer): %v", err)
	}
}

func TestWaitTaskTimeoutOnFakeClock(t *testing.T) {
	ctx := context.Background()
	// The start runs for a minute of real time; the fake clock lets the
	// timeout pass without waiting for it.
	sim := pvesim.Start(t, pvesim.WithTaskDuration("qmstart", time.Minute))
	e := newSimProvider(t, simCluster(t, sim), sim, "")
	cloneForTask(t, e, 101)
	clock := newFakeClock()
	w := waiter{clock: clock, poll: time.Second, maxPoll: 8 * time.Second}
	err := w.waitTask(ctx, startTask(t, e, 101), 30*time.Second)
	if err == nil || !strings.Contains(err.Error(), "still running after 30s") {
		t.Fatalf("err %v", err)
	}
	// Polling backed off: 1s, 2s, 4s, 8s, 8s, ...
	s := clock.slept()
	if len(s) < 4 || s[0] != time.Second || s[1] != 2*time.Second || s[2] != 4*time.Second || s[3] != 8*time.Second {
		t.Fatalf("polls slept %v", s)
	}
	var total time.Duration
	for _, d := range s {
		total += d
	}
	if total < 30*time.Second || total > 38*time.Second {
		t.Fatalf("slept %s in all; want just past the 30s timeout", total)
	}
}

// TestWaitRunningWithoutStartTask: a start answered without a task (go-proxmox
// returns a nil task for an empty UPID) is waited for by the VM's status
// alone.
func TestWaitRunningWithoutStartTask(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t)
	c := simCluster(t, sim)
	c.Provider.Proxmox.TaskTimeout = 300 * time.Millisecond
	e := newSimProvider(t, c, sim, "")
	cloneForTask(t, e, 101)
	cl, err := e.p.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ref := vmRef{id: 101, node: "pve1"}
	if err := e.p.waitRunning(ctx, cl, ref, nil); err == nil || !strings.Contains(err.Error(), "did not start within") {
		t.Fatalf("a stopped VM: %v", err)
	}
	startTask(t, e, 101)
	if err := e.p.waitRunning(ctx, cl, ref, nil); err != nil {
		t.Fatalf("a started VM: %v", err)
	}
}
