package proxmox

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	pve "github.com/luthermonson/go-proxmox"

	"github.com/kthw/kthw/controller/provider"
	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
)

// rawClone clones the template the way a killed run's Ensure had started
// to: VMID chosen, the marker as description, nothing configured.
func rawClone(t *testing.T, e *simEnv, node string, id int) *pve.Task {
	t.Helper()
	ctx := context.Background()
	c, err := e.p.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	spec := e.spec(t, node)
	_, task, err := handle(c, vmRef{id: pvesim.TestTemplateID, node: "pve1"}).Clone(ctx, &pve.VirtualMachineCloneOptions{
		NewID: id, Name: node, Full: true,
		Description: Marker{Cluster: e.c.Name, Node: node, Role: spec.Role}.Description(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return task
}

func TestAdoptCloneOfKilledRun(t *testing.T) {
	ctx := context.Background()
	// Clones take a while: the killed run's clone is still under way when
	// the next run looks.
	sim := pvesim.Start(t, pvesim.WithTaskDuration("qmclone", 400*time.Millisecond))
	e := newSimProvider(t, simCluster(t, sim), sim, "")
	// The killed run had recorded VMID 150 and asked for the clone.
	if err := e.ids.SetProviderID(ctx, "cp-1", "150"); err != nil {
		t.Fatal(err)
	}
	rawClone(t, e, "cp-1", 150)
	waitSimLock(t, sim, 150, "clone")
	if got, err := e.p.Observe(ctx, e.spec(t, "cp-1")); err != nil || got.State != provider.StateStopped || got.ID != "150" {
		t.Fatalf("Observe during the clone: %+v, %v", got, err)
	}
	n, err := e.p.Ensure(ctx, e.spec(t, "cp-1"))
	if err != nil {
		t.Fatal(err)
	}
	if n.ID != "150" || sim.CallCount("POST /nodes/{node}/qemu/{vmid}/clone") != 1 {
		t.Fatalf("node %+v after %d clones; want VM 150 adopted, no second clone", n, sim.CallCount("POST /nodes/{node}/qemu/{vmid}/clone"))
	}
	if vms := kthwVMs(sim); len(vms) != 1 || vms["cp-1"][0].Config["tags"] != "control-plane;kthw;lab" {
		t.Fatalf("VMs %v", vms)
	}
}

func TestAdoptUnconfiguredCloneByMarker(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t)
	e := newSimProvider(t, simCluster(t, sim), sim, "")
	// The run died after the clone, before recording (no IDStore) and
	// before configuring: the VM has the template's tags, not the node's.
	task := rawClone(t, e, "worker-2", 170)
	if err := e.p.w.waitTask(ctx, task, time.Minute); err != nil {
		t.Fatal(err)
	}
	if vm, _ := sim.VM(170); ClusterTagged(vm.Config["tags"], "lab") {
		t.Fatalf("the raw clone is tagged %q already", vm.Config["tags"])
	}
	if names, err := e.p.Existing(ctx); err != nil || len(names) != 0 {
		t.Fatalf("Existing = %v, %v; an untagged VM is not listed", names, err)
	}
	n, err := e.p.Ensure(ctx, e.spec(t, "worker-2"))
	if err != nil {
		t.Fatal(err)
	}
	if n.ID != "170" || sim.CallCount("POST /nodes/{node}/qemu/{vmid}/clone") != 1 {
		t.Fatalf("node %+v; want VM 170 adopted", n)
	}
	if e.ids.get("worker-2") != "170" {
		t.Fatalf("adopted VM not recorded: %q", e.ids.get("worker-2"))
	}
}

func TestRecordedVMIDOfSomeoneElse(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t)
	// Another client's VM sits at the VMID recorded for cp-1.
	if err := sim.AddVM(200, "pve1", map[string]string{"name": "their-vm", "memory": "1024", "scsi0": "local-lvm:vm-200-disk-0,size=8G"}); err != nil {
		t.Fatal(err)
	}
	e := newSimProvider(t, simCluster(t, sim), sim, "")
	if err := e.ids.SetProviderID(ctx, "cp-1", "200"); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.p.Observe(ctx, e.spec(t, "cp-1")); got.State != provider.StateMissing {
		t.Fatalf("Observe = %+v; someone else's VM is not the node", got)
	}
	n, err := e.p.Ensure(ctx, e.spec(t, "cp-1"))
	if err != nil {
		t.Fatal(err)
	}
	if n.ID == "200" {
		t.Fatal("adopted someone else's VM")
	}
	// Destroying a node whose recorded VMID holds someone else's VM
	// removes nothing and forgets the record.
	if err := e.ids.SetProviderID(ctx, "worker-1", "200"); err != nil {
		t.Fatal(err)
	}
	if err := e.p.Destroy(ctx, "worker-1"); err != nil {
		t.Fatal(err)
	}
	if vm, ok := sim.VM(200); !ok || vm.Config["name"] != "their-vm" {
		t.Fatal("someone else's VM was touched")
	}
	if got := e.ids.get("worker-1"); got != "" {
		t.Fatalf("worker-1 still recorded as %s", got)
	}
}

func TestDriftFixedWithRestart(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t)
	e := newSimProvider(t, simCluster(t, sim), sim, "")
	spec := e.spec(t, "worker-1")
	n, err := e.p.Ensure(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	id := vmid(t, n.ID)
	// Someone shrank the VM (and restarted it) and dropped its tags.
	driftVM(t, e, id,
		pve.VirtualMachineOption{Name: "cores", Value: 1}, pve.VirtualMachineOption{Name: "memory", Value: 1024},
		pve.VirtualMachineOption{Name: "tags", Value: "kthw;lab"})
	var logs syncBuffer
	e.p.log = slog.New(slog.NewTextHandler(&logs, nil))
	before := len(sim.Tasks())
	if _, err := e.p.Ensure(ctx, spec); err != nil {
		t.Fatal(err)
	}
	// The drift is reported.
	for _, want := range []string{"VM differs from the cluster file; restarting it to apply", "setting=cores has=1 want=2", "setting=memory has=1024 want=2048"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	vm, _ := sim.VM(id)
	if vm.Config["cores"] != "2" || vm.Config["memory"] != "2048" || vm.Config["tags"] != "kthw;lab;worker" || !vm.Running {
		t.Fatalf("VM after the fix: %v, running %v", vm.Config, vm.Running)
	}
	types := taskTypesSince(sim, before)
	if !slices.Contains(types, "qmshutdown") || !slices.Contains(types, "qmstart") {
		t.Fatalf("tasks %v; want a shutdown and a start", types)
	}
	// Nothing to fix: no task at all.
	before = len(sim.Tasks())
	if _, err := e.p.Ensure(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if extra := sim.Tasks()[before:]; len(extra) != 0 {
		t.Fatalf("tasks on a converged VM: %v", extra)
	}
}

func TestStoppedVMIsStarted(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t)
	e := newSimProvider(t, simCluster(t, sim), sim, "")
	spec := e.spec(t, "cp-1")
	n, err := e.p.Ensure(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := e.p.Client(ctx)
	ref := vmRef{id: vmid(t, n.ID), node: "pve1"}
	if err := e.p.stop(ctx, c, ref); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.p.Observe(ctx, spec); got.State != provider.StateStopped {
		t.Fatalf("Observe of a stopped VM: %+v", got)
	}
	if n2, err := e.p.Ensure(ctx, spec); err != nil || n2.ID != n.ID || n2.State != provider.StateRunning {
		t.Fatalf("Ensure of a stopped VM: %+v, %v", n2, err)
	}
}

func TestDestroyAndExisting(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t)
	e := newSimProvider(t, simCluster(t, sim), sim, "")
	for _, s := range e.specs {
		if _, err := e.p.Ensure(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	// A VM of another cluster with a node of the same name.
	other := newSimProvider(t, simCluster(t, sim), sim, "")
	other.c.Name = "prod"
	other.p.cluster = "prod"
	if _, err := other.p.Ensure(ctx, other.spec(t, "cp-1")); err != nil {
		t.Fatal(err)
	}
	names, err := e.p.Existing(ctx)
	if err != nil || !slices.Equal(names, []string{"cp-1", "worker-1", "worker-2"}) {
		t.Fatalf("Existing = %v, %v", names, err)
	}
	for _, name := range names {
		if err := e.p.Destroy(ctx, name); err != nil {
			t.Fatal(err)
		}
		if e.ids.get(name) != "" {
			t.Fatalf("%s still recorded", name)
		}
	}
	// Gone counts as done.
	if err := e.p.Destroy(ctx, "cp-1"); err != nil {
		t.Fatal(err)
	}
	if names, _ := e.p.Existing(ctx); len(names) != 0 {
		t.Fatalf("Existing after destroy = %v", names)
	}
	if got, _ := e.p.Observe(ctx, e.spec(t, "cp-1")); got.State != provider.StateMissing || got.Host != "10.200.0.11" {
		t.Fatalf("Observe = %+v", got)
	}
	// The other cluster's VM and its disks stay; ours are gone, disks too.
	vms := kthwVMs(sim)
	if len(vms) != 1 || len(vms["cp-1"]) != 1 || !ClusterTagged(vms["cp-1"][0].Config["tags"], "prod") {
		t.Fatalf("VMs left %v", vms)
	}
	for _, v := range sim.Volumes() {
		if v.VMID != 0 && v.VMID != pvesim.TestTemplateID && v.VMID != vms["cp-1"][0].VMID {
			t.Errorf("volume %s of VM %d left behind", v.VolID, v.VMID)
		}
	}
}

func TestDestroyDuringClone(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t, pvesim.WithTaskDuration("qmclone", 300*time.Millisecond))
	e := newSimProvider(t, simCluster(t, sim), sim, "")
	if err := e.ids.SetProviderID(ctx, "worker-1", "160"); err != nil {
		t.Fatal(err)
	}
	rawClone(t, e, "worker-1", 160)
	if err := e.p.Destroy(ctx, "worker-1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := sim.VM(160); ok {
		t.Fatal("VM 160 survived down")
	}
}

func TestLinkedCloneToPoolAndWarnings(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t, pvesim.WithConfig(func(c *pvesim.Config) { c.Pools = []string{"k8s"} }),
		pvesim.WithFaults(pvesim.Faults{TaskWarnings: map[string]int{"qmclone": 1, "qmstart": 1, "resize": 1}}))
	c := simCluster(t, sim)
	c.Provider.Proxmox.CloneMode = "linked"
	c.Provider.Proxmox.Pool = "k8s"
	c.Provider.Proxmox.Storage = "local-lvm" // ignored by linked clones
	e := newSimProvider(t, c, sim, "")
	n, err := e.p.Ensure(ctx, e.spec(t, "cp-1"))
	if err != nil {
		t.Fatalf("Ensure with WARNINGS tasks: %v", err)
	}
	vm, _ := sim.VM(vmid(t, n.ID))
	if vm.Pool != "k8s" {
		t.Fatalf("pool %q", vm.Pool)
	}
	linked := false
	for _, v := range sim.Volumes() {
		if v.VMID == vm.VMID && v.Base != "" {
			linked = true
		}
	}
	if !linked {
		t.Fatalf("no linked volume: %v", sim.Volumes())
	}
	if sim.FaultStats()["task_warning"] < 2 {
		t.Fatalf("warnings fired: %v", sim.FaultStats())
	}
}

func TestCloneToOtherNode(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t,
		pvesim.WithNodes(pvesim.NodeSpec{Name: "pve1"}, pvesim.NodeSpec{Name: "pve2"}),
		pvesim.WithStorages(pvesim.StorageSpec{Name: "local", Type: "dir", Content: "iso,vztmpl,backup,import,snippets"},
			pvesim.StorageSpec{Name: "shared", Type: "nfs", Content: "images,rootdir", Shared: true}),
		pvesim.WithConfig(func(c *pvesim.Config) { c.Templates[0].Storage = "shared" }))
	c := simCluster(t, sim)
	c.Provider.Proxmox.Node = "pve2"
	e := newSimProvider(t, c, sim, "")
	n, err := e.p.Ensure(ctx, e.spec(t, "cp-1"))
	if err != nil {
		t.Fatal(err)
	}
	vm, _ := sim.VM(vmid(t, n.ID))
	if vm.Node != "pve2" {
		t.Fatalf("VM on %s; want pve2", vm.Node)
	}
	if names, _ := e.p.Existing(ctx); len(names) != 1 {
		t.Fatalf("Existing %v", names)
	}
	if err := e.p.Destroy(ctx, "cp-1"); err != nil {
		t.Fatal(err)
	}
}

// waitSimLock waits until the simulator's VM id holds lock (Proxmox writes
// the clone's locked config before it answers; the simulator a moment
// later, in the task).
func waitSimLock(t *testing.T, sim *pvesim.Sim, id int, lock string) {
	t.Helper()
	for range 200 {
		if vm, ok := sim.VM(id); ok && vm.Lock == lock {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("VM %d never got lock %q", id, lock)
}

func TestStaleLockIsExplained(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t)
	c := simCluster(t, sim)
	c.Provider.Proxmox.TaskTimeout = time.Second
	e := newSimProvider(t, c, sim, "")
	n, err := e.p.Ensure(ctx, e.spec(t, "cp-1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.SetLock(vmid(t, n.ID), "backup"); err != nil {
		t.Fatal(err)
	}
	_, err = e.p.Ensure(ctx, e.spec(t, "cp-1"))
	if err == nil || !strings.Contains(err.Error(), "still locked (backup)") || !strings.Contains(err.Error(), "qm unlock "+n.ID) {
		t.Fatalf("err %v", err)
	}
	// Unlocked, it converges again.
	if err := sim.SetLock(vmid(t, n.ID), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := e.p.Ensure(ctx, e.spec(t, "cp-1")); err != nil {
		t.Fatal(err)
	}
}

func TestAdoptWhileResourcesLag(t *testing.T) {
	ctx := context.Background()
	// New VMs show in /cluster/resources without a name for a while.
	sim := pvesim.Start(t, pvesim.WithConfig(func(c *pvesim.Config) { c.ResourceLag = 5 * time.Second }))
	e := newSimProvider(t, simCluster(t, sim), sim, "")
	first, err := e.p.Ensure(ctx, e.spec(t, "cp-1"))
	if err != nil {
		t.Fatal(err)
	}
	// A re-run right after finds the VM by its recorded VMID.
	e2 := newSimProvider(t, e.c, sim, "")
	e2.p.o.IDs = e.ids
	second, err := e2.p.Ensure(ctx, e.spec(t, "cp-1"))
	if err != nil || second.ID != first.ID {
		t.Fatalf("second Ensure %+v, %v; first %+v", second, err, first)
	}
	if n := sim.CallCount("POST /nodes/{node}/qemu/{vmid}/clone"); n != 1 {
		t.Fatalf("%d clones", n)
	}
	if err := e2.p.Destroy(ctx, "cp-1"); err != nil {
		t.Fatal(err)
	}
	if len(kthwVMs(sim)) != 0 {
		t.Fatal("destroy missed a lagging VM")
	}
}

// driftVM changes a running VM's config behind kthw's back: it is
// stopped, set and started again.
func driftVM(t *testing.T, e *simEnv, id int, opts ...pve.VirtualMachineOption) {
	t.Helper()
	ctx := context.Background()
	c, err := e.p.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ref := vmRef{id: id, node: "pve1"}
	if err := e.p.stop(ctx, c, ref); err != nil {
		t.Fatal(err)
	}
	if err := handle(c, ref).ConfigSync(ctx, opts...); err != nil {
		t.Fatal(err)
	}
	if err := e.p.start(ctx, c, ref); err != nil {
		t.Fatal(err)
	}
}

// taskTypesSince lists the types of the simulator's tasks from index before.
func taskTypesSince(sim *pvesim.Sim, before int) []string {
	var types []string
	for _, task := range sim.Tasks()[before:] {
		types = append(types, task.Type)
	}
	return types
}

// syncBuffer is a bytes.Buffer safe for concurrent log writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestDriftShutdownFailsThenStop(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t)
	e := newSimProvider(t, simCluster(t, sim), sim, "")
	spec := e.spec(t, "cp-1")
	n, err := e.p.Ensure(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	id := vmid(t, n.ID)
	driftVM(t, e, id, pve.VirtualMachineOption{Name: "memory", Value: 4096})
	// The guest ignores the ACPI shutdown: the VM is stopped hard.
	sim.SetFaults(pvesim.Faults{TaskFailures: map[string]int{"qmshutdown": 1}, TaskFailureText: "VM quit/powerdown failed - got timeout"})
	before := len(sim.Tasks())
	if _, err := e.p.Ensure(ctx, spec); err != nil {
		t.Fatal(err)
	}
	types := taskTypesSince(sim, before)
	if vm, _ := sim.VM(id); vm.Config["memory"] != "2048" || !vm.Running || !slices.Contains(types, "qmstop") {
		t.Fatalf("memory %s running %v tasks %v", vm.Config["memory"], vm.Running, types)
	}
}
