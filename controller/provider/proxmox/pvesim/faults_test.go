package pvesim_test

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	proxmox "github.com/luthermonson/go-proxmox"

	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
)

// TestParallelClonesWithFaults runs 10 workers that each want one VM,
// allocate VMIDs without coordinating (so they also race each other), and
// retry on failure, while lock timeouts, storage lock timeouts and stolen
// VMIDs are injected. Every attempt must either succeed once or fail with
// one of Proxmox's texts, and no VM may exist twice or be left half-made.
func TestParallelClonesWithFaults(t *testing.T) {
	sim := pvesim.Start(t,
		pvesim.WithTaskDuration("qmclone", 40*time.Millisecond),
		pvesim.WithFaults(pvesim.Faults{CloneLockTimeouts: 3, StorageLockTimeouts: 2, StealNextIDs: 3}),
		pvesim.WithConfig(func(c *pvesim.Config) { c.LockTimeout = 500 * time.Millisecond }))
	c := tokenClient(t, sim)
	ctx := ctxT(t)
	cl, err := c.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	syncOK := regexp.MustCompile(`^500 unable to create VM \d+: config file already exists$`)
	taskOK := []*regexp.Regexp{
		regexp.MustCompile(`^can't lock file '/var/lock/qemu-server/lock-\d+\.conf' - got timeout$`),
		regexp.MustCompile(`^clone failed: cfs-lock 'storage-local-lvm' error: got lock request timeout$`),
		regexp.MustCompile(`^unable to create VM \d+: config file already exists$`),
	}
	type result struct {
		worker, vmid int
		how          string // "ok", "sync: ...", "task: ..."
	}
	var mu sync.Mutex
	var results []result
	record := func(r result) {
		mu.Lock()
		results = append(results, r)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for w := 0; w < 10; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			tmpl := &proxmox.VirtualMachine{}
			tmpl.New(c, "pve1", pvesim.TestTemplateID)
			for try := 0; try < 30; try++ {
				id, err := cl.NextID(ctx)
				if err != nil {
					t.Errorf("worker %d: nextid: %v", w, err)
					return
				}
				_, task, err := tmpl.Clone(ctx, &proxmox.VirtualMachineCloneOptions{NewID: id, Name: fmt.Sprintf("worker-%d", w)})
				if err != nil {
					if !syncOK.MatchString(err.Error()) {
						t.Errorf("worker %d: clone %d: unexpected error %v", w, id, err)
						return
					}
					record(result{w, id, "sync: " + err.Error()})
					continue
				}
				if err := task.Wait(ctx, 5*time.Millisecond, 20*time.Second); err != nil {
					t.Errorf("worker %d: wait: %v", w, err)
					return
				}
				if task.IsSuccessful {
					record(result{w, id, "ok"})
					return
				}
				matched := false
				for _, re := range taskOK {
					matched = matched || re.MatchString(task.ExitStatus)
				}
				if !matched {
					t.Errorf("worker %d: clone %d: unexpected task failure %q", w, id, task.ExitStatus)
					return
				}
				record(result{w, id, "task: " + task.ExitStatus})
				time.Sleep(time.Duration(try+1) * 3 * time.Millisecond)
			}
			t.Errorf("worker %d never got its VM", w)
		}(w)
	}
	wg.Wait()
	if !sim.WaitTasks(10 * time.Second) {
		t.Fatal("tasks still running")
	}

	okByWorker := map[int]int{}
	okIDs := map[int]int{}
	for _, r := range results {
		if r.how == "ok" {
			okByWorker[r.worker]++
			okIDs[r.vmid]++
		}
	}
	for w := 0; w < 10; w++ {
		if okByWorker[w] != 1 {
			t.Errorf("worker %d succeeded %d times", w, okByWorker[w])
		}
	}
	names := map[string]int{}
	foreign := 0
	for _, vm := range sim.VMs() {
		switch {
		case vm.VMID == pvesim.TestTemplateID:
		case vm.Foreign:
			foreign++
		default:
			names[vm.Config["name"]]++
			if okIDs[vm.VMID] != 1 {
				t.Errorf("VM %d (%s) exists but no clone to it succeeded", vm.VMID, vm.Config["name"])
			}
			if vm.Lock != "" || !strings.HasPrefix(vm.Config["name"], "worker-") || vm.Config["scsi0"] == "" {
				t.Errorf("VM %d half-made: %v", vm.VMID, vm.Config)
			}
		}
	}
	for w := 0; w < 10; w++ {
		if n := names[fmt.Sprintf("worker-%d", w)]; n != 1 {
			t.Errorf("worker-%d exists %d times", w, n)
		}
	}
	if len(names) != 10 {
		t.Errorf("VMs: %v", names)
	}
	// no volume without its VM (failed clones clean up)
	exists := map[int]bool{}
	for _, vm := range sim.VMs() {
		exists[vm.VMID] = true
	}
	for _, vol := range sim.Volumes() {
		if vol.Content == "images" && !exists[vol.VMID] {
			t.Errorf("orphan volume %s", vol.VolID)
		}
	}
	stats := sim.FaultStats()
	if stats["clone_lock_timeout"] != 3 || stats["storage_lock_timeout"] != 2 || stats["stolen_vmid"] != 3 || foreign != 3 {
		t.Errorf("faults fired: %v, foreign VMs %d", stats, foreign)
	}
	if f := sim.Faults(); f.CloneLockTimeouts != 0 || f.StorageLockTimeouts != 0 || f.StealNextIDs != 0 {
		t.Errorf("faults left: %+v", f)
	}
	failures := 0
	for _, r := range results {
		if r.how != "ok" {
			failures++
		}
	}
	t.Logf("%d attempts, %d failures, faults %v", len(results), failures, stats)
	if failures < 8 { // 3 lock + 2 storage + 3 stolen at least
		t.Errorf("only %d failed attempts: %v", failures, results)
	}
}

// TestAgentFaults checks a missing, a slow, an unconfigured guest agent and
// one that reports link-local addresses first.
func TestAgentFaults(t *testing.T) {
	sim := pvesim.Start(t,
		pvesim.WithTemplate(pvesim.TemplateSpec{VMID: 9001, Name: "no-agent", NoAgent: true}),
		pvesim.WithConfig(func(c *pvesim.Config) { c.AgentIPDelay = 200 * time.Millisecond }))
	c := tokenClient(t, sim)
	ctx := ctxT(t)
	clone := func(src, id int) *proxmox.VirtualMachine {
		tmpl := &proxmox.VirtualMachine{}
		tmpl.New(c, "pve1", src)
		_, task, err := tmpl.Clone(ctx, &proxmox.VirtualMachineCloneOptions{NewID: id, Name: fmt.Sprintf("vm%d", id)})
		mustSucceed(t, ctx, task, err)
		vm := &proxmox.VirtualMachine{}
		vm.New(c, "pve1", id)
		st, err := vm.Start(ctx)
		mustSucceed(t, ctx, st, err)
		return vm
	}

	noAgent := clone(9001, 101)
	time.Sleep(50 * time.Millisecond)
	if err := noAgent.AgentPing(ctx); err == nil || err.Error() != "500 No QEMU guest agent configured" {
		t.Errorf("no agent option: %v", err)
	}

	sim.UpdateFaults(func(f *pvesim.Faults) { f.AgentMissingVMs = []int{102} })
	missing := clone(pvesim.TestTemplateID, 102)
	time.Sleep(50 * time.Millisecond)
	if err := missing.AgentPing(ctx); err == nil || err.Error() != "500 QEMU guest agent is not running" {
		t.Errorf("missing agent: %v", err)
	}
	if _, err := missing.AgentGetNetworkIFaces(ctx); err == nil || err.Error() != "500 QEMU guest agent is not running" {
		t.Errorf("missing agent NICs: %v", err)
	}

	sim.UpdateFaults(func(f *pvesim.Faults) { f.AgentDelay = 300 * time.Millisecond })
	slow := clone(pvesim.TestTemplateID, 103)
	if err := slow.AgentPing(ctx); err == nil || err.Error() != "500 QEMU guest agent is not running" {
		t.Errorf("slow agent answered at once: %v", err)
	}
	waitFor(t, "slow agent", func() bool { return slow.AgentPing(ctx) == nil })
	// right after the agent comes up the NIC has only its link-local address
	ifs, err := slow.AgentGetNetworkIFaces(ctx)
	if err != nil || len(ifs) != 1 || len(ifs[0].IPAddresses) != 1 || !strings.HasPrefix(ifs[0].IPAddresses[0].IPAddress, "fe80::") {
		t.Errorf("early NICs = %+v, %v", ifs, err)
	} else {
		t.Logf("early NIC %s %s", ifs[0].HardwareAddress, ifs[0].IPAddresses[0].IPAddress)
	}
	waitFor(t, "IPv4", func() bool {
		ifs, err := slow.AgentGetNetworkIFaces(ctx)
		if err != nil || len(ifs) != 1 {
			return false
		}
		for _, a := range ifs[0].IPAddresses {
			if a.IPAddressType == "ipv4" {
				return true
			}
		}
		return false
	})
	stop, err := slow.Stop(ctx)
	mustSucceed(t, ctx, stop, err)
	if err := slow.AgentPing(ctx); err == nil || err.Error() != "500 VM 103 is not running" {
		t.Errorf("stopped VM agent: %v", err)
	}
}

// TestTaskFaults checks WARNINGS exits and injected task failures, and the
// task log through go-proxmox.
func TestTaskFaults(t *testing.T) {
	sim := pvesim.Start(t, pvesim.WithFaults(pvesim.Faults{
		TaskWarnings:    map[string]int{"qmstart": 1},
		TaskFailures:    map[string]int{"qmconfig": 1},
		TaskFailureText: "got timeout",
	}))
	c := tokenClient(t, sim)
	ctx := ctxT(t)
	tmpl := &proxmox.VirtualMachine{}
	tmpl.New(c, "pve1", pvesim.TestTemplateID)
	_, task, err := tmpl.Clone(ctx, &proxmox.VirtualMachineCloneOptions{NewID: 110, Name: "warned"})
	mustSucceed(t, ctx, task, err)
	logs, err := task.Log(ctx, 0, 50)
	if err != nil || logs[len(logs)-1] != "TASK OK" || logs[0] != "creating a clone of VM 9000 with ID 110" {
		t.Errorf("clone log = %v, %v", logs, err)
	}
	vm := &proxmox.VirtualMachine{}
	vm.New(c, "pve1", 110)
	ct, err := vm.Config(ctx, proxmox.VirtualMachineOption{Name: "cores", Value: 3})
	if err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, ct)
	if ct.IsSuccessful || ct.ExitStatus != "got timeout" {
		t.Errorf("failed config task: %q", ct.ExitStatus)
	}
	if st, _ := sim.VM(110); st.Config["cores"] != "2" {
		t.Errorf("failed config applied: cores %q", st.Config["cores"])
	}
	st, err := vm.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, st)
	// WARNINGS is a success for Proxmox, but go-proxmox only counts "OK"
	if st.ExitStatus != "WARNINGS: 1" || st.IsSuccessful || !st.IsFailed {
		t.Errorf("warned start: %+v", st)
	}
	if s, _ := sim.VM(110); !s.Running {
		t.Errorf("warned start did not start")
	}
	logs, err = st.Log(ctx, 0, 50)
	if err != nil || logs[len(logs)-1] != "TASK WARNINGS: 1" || !strings.HasPrefix(logs[len(logs)-2], "WARN: ") {
		t.Errorf("warned start log = %v, %v", logs, err)
	}
}
