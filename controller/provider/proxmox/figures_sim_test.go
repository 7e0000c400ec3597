package proxmox

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
)

// TestFigures prints wall time and API calls per VM for 3 and 10 VMs
// through the simulator with its realistic task durations (a guest boots in
// 5s), with and without injected faults. It asserts nothing about time; set
// KTHW_PROXMOX_FIGURES=1 to run it.
func TestFigures(t *testing.T) {
	if os.Getenv("KTHW_PROXMOX_FIGURES") == "" {
		t.Skip("set KTHW_PROXMOX_FIGURES=1 to print the figures")
	}
	for _, tc := range []struct {
		vms    int
		faults pvesim.Faults
		name   string
	}{
		{3, pvesim.Faults{}, "no faults"},
		{10, pvesim.Faults{}, "no faults"},
		{10, pvesim.Faults{CloneLockTimeouts: 3, StorageLockTimeouts: 2, StealNextIDs: 2}, "3 clone lock timeouts, 2 storage lock timeouts, 2 stolen VMIDs"},
	} {
		sim := pvesim.Start(t, pvesim.WithConfig(func(c *pvesim.Config) {
			c.TaskDurations = pvesim.DefaultTaskDurations()
			c.AgentDelay = 5 * time.Second
		}), pvesim.WithFaults(tc.faults))
		c := simCluster(t, sim, pvesimPools(tc.vms)...)
		e := newSimProvider(t, c, sim, "")
		// Realistic polling and backoff, as shipped.
		e.p.w = waiter{clock: RealClock{}, poll: 500 * time.Millisecond, maxPoll: 5 * time.Second}
		e.p.o.Backoff = DefaultBackoff
		ctx := context.Background()
		start := time.Now()
		if err := e.p.Prepare(ctx, e.specs); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, len(e.specs))
		for i := range e.specs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = e.p.Ensure(ctx, e.specs[i])
			}()
		}
		wg.Wait()
		took := time.Since(start)
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		total := 0
		for _, n := range sim.Calls() {
			total += n
		}
		cs := e.p.cloneStats
		t.Logf("%d VMs, %s: %s wall, %.1f API calls per VM, clone retries %d (lock %d, VMID conflicts %d), faults fired %v",
			tc.vms, tc.name, took.Round(100*time.Millisecond), float64(total)/float64(tc.vms), cs.Retries, cs.LockRetries, cs.IDConflicts, sim.FaultStats())
	}
}
