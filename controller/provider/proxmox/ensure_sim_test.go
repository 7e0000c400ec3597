package proxmox

import (
	"context"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kthw/kthw/controller/config"
	"github.com/kthw/kthw/controller/provider"
	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
)

func TestEnsureCreatesConfiguredVM(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t)
	e := newSimProvider(t, simCluster(t, sim), sim, "")
	if err := e.p.Prepare(ctx, e.specs); err != nil {
		t.Fatal(err)
	}
	spec := e.spec(t, "cp-1")
	n, err := e.p.Ensure(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if n.Name != "cp-1" || n.Role != spec.Role || n.Host != "10.200.0.11" || n.Port != 22 || n.User != "kthw" || n.State != provider.StateRunning {
		t.Fatalf("node %+v", n)
	}
	if got := e.ids.get("cp-1"); got != n.ID {
		t.Fatalf("recorded VMID %q, node ID %q", got, n.ID)
	}
	vm, ok := sim.VM(vmid(t, n.ID))
	if !ok || !vm.Running || vm.Template || vm.Lock != "" {
		t.Fatalf("VM %s: %+v", n.ID, vm)
	}
	c := vm.Config
	for k, want := range map[string]string{
		"name": "cp-1", "cores": "2", "memory": "2048", "ipconfig0": "ip=10.200.0.11/24,gw=10.200.0.1",
		"nameserver": "10.200.0.1", "searchdomain": "lab.example", "ciuser": "kthw", "tags": "control-plane;kthw;lab",
	} {
		if c[k] != want {
			t.Errorf("config %s = %q, want %q", k, c[k], want)
		}
	}
	if keys, err := url.PathUnescape(c["sshkeys"]); err != nil || strings.TrimSpace(keys) != strings.TrimSpace(string(e.key)) {
		t.Errorf("sshkeys %q (decoded %q, %v), want the workspace key", c["sshkeys"], keys, err)
	}
	if m, ok := ParseMarker(c["description"]); !ok || m.Cluster != "lab" || m.Node != "cp-1" {
		t.Errorf("description %q has no marker", c["description"])
	}
	if !strings.Contains(c["scsi0"], "size=20G") {
		t.Errorf("scsi0 %q: want resized to 20G", c["scsi0"])
	}
	if !strings.Contains(c["ide2"], "cloudinit") {
		t.Errorf("ide2 %q: the clone lost its cloud-init drive", c["ide2"])
	}
	// Every setting was there before the first start: one start task,
	// after the config and resize tasks.
	var order []string
	for _, task := range sim.Tasks() {
		if task.ID == n.ID {
			order = append(order, task.Type)
		}
	}
	if len(order) == 0 || order[len(order)-1] != "qmstart" || strings.Count(strings.Join(order, ","), "qmstart") != 1 {
		t.Errorf("tasks of the VM: %v; want one qmstart, last", order)
	}
	t.Logf("API calls for one VM:\n%s", describeCalls(sim))
}

func TestEnsureAdoptsAndIsIdempotent(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t)
	e := newSimProvider(t, simCluster(t, sim), sim, "")
	if err := e.p.Prepare(ctx, e.specs); err != nil {
		t.Fatal(err)
	}
	spec := e.spec(t, "worker-1")
	first, err := e.p.Ensure(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	sim.ResetCalls()
	tasksBefore := len(sim.Tasks())
	// A new provider, as a new run would have, with the same records.
	e2 := newSimProvider(t, e.c, sim, "")
	e2.ids = e.ids
	e2.p.o.IDs = e.ids
	second, err := e2.p.Ensure(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if second.ID != first.ID || second.Host != first.Host || second.State != provider.StateRunning {
		t.Fatalf("second Ensure %+v, first %+v", second, first)
	}
	if n := sim.CallCount("POST /nodes/{node}/qemu/{vmid}/clone"); n != 0 {
		t.Fatalf("second Ensure cloned %d times", n)
	}
	if n := len(sim.Tasks()) - tasksBefore; n != 0 {
		t.Fatalf("second Ensure ran %d tasks; want none", n)
	}
	if got := kthwVMs(sim); len(got) != 1 || len(got["worker-1"]) != 1 {
		t.Fatalf("VMs %v", got)
	}
	t.Logf("API calls for an adopted, unchanged VM:\n%s", describeCalls(sim))
}

func TestParallelClonesUnderFaults(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t, pvesim.WithFaults(pvesim.Faults{
		CloneLockTimeouts:   4,
		StorageLockTimeouts: 3,
		StealNextIDs:        3,
		TaskWarnings:        map[string]int{"qmclone": 2, "qmstart": 2},
	}))
	c := simCluster(t, sim, pvesimPools(10)...)
	c.Provider.Proxmox.CloneConcurrency = 4
	e := newSimProvider(t, c, sim, "")
	if len(e.specs) != 10 {
		t.Fatalf("%d nodes", len(e.specs))
	}
	if err := e.p.Prepare(ctx, e.specs); err != nil {
		t.Fatal(err)
	}
	errs := make([]error, len(e.specs))
	nodes := make([]provider.Node, len(e.specs))
	done := make(chan int)
	for i := range e.specs {
		go func() {
			nodes[i], errs[i] = e.p.Ensure(ctx, e.specs[i])
			done <- i
		}()
	}
	for range e.specs {
		<-done
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("%s: %v", e.specs[i].Name, err)
		}
	}
	vms := kthwVMs(sim)
	ids := map[string]bool{}
	for _, s := range e.specs {
		if len(vms[s.Name]) != 1 {
			t.Errorf("node %s has %d VMs, want exactly 1", s.Name, len(vms[s.Name]))
		}
	}
	for i, n := range nodes {
		if ids[n.ID] {
			t.Errorf("VMID %s handed out twice", n.ID)
		}
		ids[n.ID] = true
		if n.Host != e.specs[i].Address.Addr().String() {
			t.Errorf("%s: host %s, want %s", n.Name, n.Host, e.specs[i].Address.Addr())
		}
	}
	if len(vms) != len(e.specs) {
		t.Errorf("%d kthw VMs for %d nodes: %v", len(vms), len(e.specs), vms)
	}
	stats := sim.FaultStats()
	for _, k := range []string{"clone_lock_timeout", "storage_lock_timeout", "stolen_vmid"} {
		if stats[k] == 0 {
			t.Errorf("fault %s never fired: %v", k, stats)
		}
	}
	e.p.statsMu.Lock()
	cs := e.p.cloneStats
	e.p.statsMu.Unlock()
	if cs.Clones != 10 || cs.Retries < stats["clone_lock_timeout"]+stats["storage_lock_timeout"] {
		t.Errorf("clone stats %+v, faults %v", cs, stats)
	}
	t.Logf("faults fired %v; clones %d, retries %d (lock %d, VMID conflicts %d); clone requests %d",
		stats, cs.Clones, cs.Retries, cs.LockRetries, cs.IDConflicts, sim.CallCount("POST /nodes/{node}/qemu/{vmid}/clone"))
}

func TestEnsureGuestAgentLate(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t, pvesim.WithAgentDelay(300*time.Millisecond), pvesim.WithConfig(func(c *pvesim.Config) { c.AgentIPDelay = 200 * time.Millisecond }))
	e := newSimProvider(t, simCluster(t, sim), sim, "")
	n, err := e.p.Ensure(ctx, e.spec(t, "cp-1"))
	if err != nil {
		t.Fatal(err)
	}
	if n.Host != "10.200.0.11" {
		t.Fatalf("host %q", n.Host)
	}
	if sim.CallCount("GET /nodes/{node}/qemu/{vmid}/agent/network-get-interfaces") < 2 {
		t.Fatal("the agent answered on the first poll; the test wants it late")
	}
}

func TestEnsureGuestAgentMissing(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t, pvesim.WithFaults(pvesim.Faults{AgentMissing: true}))
	c := simCluster(t, sim)
	c.Provider.Proxmox.BootTimeout = time.Second
	e := newSimProvider(t, c, sim, "")
	_, err := e.p.Ensure(ctx, e.spec(t, "cp-1"))
	if !errors.Is(err, ErrBoot) || !strings.Contains(err.Error(), "qemu-guest-agent") {
		t.Fatalf("err %v; want ErrBoot naming qemu-guest-agent", err)
	}
	// The VM booted: it stays, recorded and tagged, for the next run.
	vms := kthwVMs(sim)
	if len(vms["cp-1"]) != 1 || !vms["cp-1"][0].Running {
		t.Fatalf("VMs %v; want cp-1 left running", vms)
	}
	if e.ids.get("cp-1") != strconv.Itoa(vms["cp-1"][0].VMID) {
		t.Fatalf("recorded %q", e.ids.get("cp-1"))
	}
}

func TestEnsureAfterBootTimeoutAdopts(t *testing.T) {
	ctx := context.Background()
	// A slow guest: its agent answers after 1.5s, the first run waits 500ms.
	sim := pvesim.Start(t, pvesim.WithFaults(pvesim.Faults{AgentDelay: 1500 * time.Millisecond}))
	c := simCluster(t, sim)
	c.Provider.Proxmox.BootTimeout = 500 * time.Millisecond
	e := newSimProvider(t, c, sim, "")
	if _, err := e.p.Ensure(ctx, e.spec(t, "cp-1")); !errors.Is(err, ErrBoot) {
		t.Fatalf("err %v; want ErrBoot", err)
	}
	clones := sim.CallCount("POST /nodes/{node}/qemu/{vmid}/clone")
	// The next run waits longer and adopts the VM.
	c.Provider.Proxmox.BootTimeout = 30 * time.Second
	e2 := newSimProvider(t, c, sim, "")
	e2.p.o.IDs = e.ids
	n, err := e2.p.Ensure(ctx, e.spec(t, "cp-1"))
	if err != nil {
		t.Fatal(err)
	}
	if sim.CallCount("POST /nodes/{node}/qemu/{vmid}/clone") != clones || len(kthwVMs(sim)["cp-1"]) != 1 {
		t.Fatal("the re-run cloned again")
	}
	if n.ID != e.ids.get("cp-1") || n.State != provider.StateRunning {
		t.Fatalf("node %+v, recorded %s", n, e.ids.get("cp-1"))
	}
}

// pvesimPools is one control plane and n-1 workers.
func pvesimPools(n int) []config.NodePool {
	return []config.NodePool{
		{Name: "cp", Role: config.RoleControlPlane, Count: 1},
		{Name: "worker", Role: config.RoleWorker, Count: n - 1},
	}
}
