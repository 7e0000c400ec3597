package pvesim_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	proxmox "github.com/luthermonson/go-proxmox"
	"golang.org/x/crypto/ssh"

	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
)

const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb9ECSSrRsSzPH2ZXPzN5Lqgq4oPAm+1T8ZhoIbIOx4 kthw@test"

// TestClusterCalls checks Version, Nodes, Node, Cluster, NextID, CheckID
// and Resources field by field.
func TestClusterCalls(t *testing.T) {
	sim := pvesim.Start(t)
	c := tokenClient(t, sim)
	ctx := ctxT(t)

	v, err := c.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v.Version != "8.2.4" || v.Release != "8.2" || v.RepoID == "" {
		t.Errorf("version = %+v", v)
	}

	nodes, err := c.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 1 {
		t.Fatalf("nodes = %d", len(nodes))
	}
	n0 := nodes[0]
	if n0.Node != "pve1" || n0.Status != "online" || n0.Type != "node" || n0.ID != "node/pve1" || n0.MaxCPU != 16 || n0.MaxMem == 0 || n0.Uptime == 0 || n0.SSLFingerprint == "" {
		t.Errorf("node = %+v", n0)
	}

	node, err := c.Node(ctx, "pve1")
	if err != nil {
		t.Fatal(err)
	}
	if node.Name != "pve1" || len(node.LoadAvg) != 3 || node.CPUInfo.CPUs != 16 || node.CPUInfo.UserHz != 100 || node.CPUInfo.MHZ == 0 ||
		node.Memory.Total == 0 || node.RootFS.Total == 0 || !strings.HasPrefix(node.PVEVersion, "pve-manager/8.2.4/") || node.Kversion == "" {
		t.Errorf("node status = %+v", node)
	}

	cl, err := c.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cl.Name != "pvesim" || cl.Quorate != 1 || cl.Version == 0 || cl.ID != "cluster" || len(cl.Nodes) != 1 {
		t.Fatalf("cluster = %+v", cl)
	}
	if cn := cl.Nodes[0]; cn.Name != "pve1" || cn.Online != 1 || cn.Status != "online" || cn.IP == "" || cn.Local != 1 || cn.ID != "node/pve1" {
		t.Errorf("cluster node = %+v", cn)
	}

	id, err := cl.NextID(ctx)
	if err != nil || id != 100 {
		t.Errorf("NextID = %d, %v; want 100", id, err)
	}
	if free, err := cl.CheckID(ctx, 9000); err != nil || free {
		t.Errorf("CheckID(9000) = %v, %v; want taken", free, err)
	}
	if free, err := cl.CheckID(ctx, 100); err != nil || !free {
		t.Errorf("CheckID(100) = %v, %v; want free", free, err)
	}

	rs, err := cl.Resources(ctx, "vm")
	if err != nil {
		t.Fatal(err)
	}
	var tmpl *proxmox.ClusterResource
	for _, r := range rs {
		if r.Type == "qemu" && r.Template == 1 && r.Name == pvesim.TestTemplate {
			tmpl = r
		}
	}
	if tmpl == nil {
		t.Fatalf("template not found in %+v", rs)
	}
	if tmpl.ID != "qemu/9000" || tmpl.VMID != 9000 || tmpl.Node != "pve1" || tmpl.Status != "stopped" || tmpl.Tags != "kthw;template" ||
		tmpl.MaxCPU != 2 || tmpl.MaxMem != 2<<30 || tmpl.MaxDisk != 2<<30 {
		t.Errorf("template resource = %+v", tmpl)
	}
	all, err := cl.Resources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]int{}
	for _, r := range all {
		types[r.Type]++
	}
	if types["qemu"] != 1 || types["node"] != 1 || types["storage"] != 2 {
		t.Errorf("resource types = %v", types)
	}
}

// TestVMLifecycle drives clone, config, resize, tags, start, agent, stop,
// shutdown, template conversion and delete through go-proxmox.
func TestVMLifecycle(t *testing.T) {
	sim := pvesim.Start(t, pvesim.WithTaskDuration("qmclone", 400*time.Millisecond),
		pvesim.WithConfig(func(c *pvesim.Config) { c.LockTimeout = 20 * time.Millisecond }))
	c := tokenClient(t, sim)
	ctx := ctxT(t)
	node, err := c.Node(ctx, "pve1")
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := node.VirtualMachine(ctx, pvesim.TestTemplateID)
	if err != nil {
		t.Fatal(err)
	}
	if !bool(tmpl.Template) || tmpl.Name != pvesim.TestTemplate || !bool(tmpl.Agent) || tmpl.Status != "stopped" || tmpl.QMPStatus != "stopped" {
		t.Errorf("template status = %+v", tmpl)
	}
	tc := tmpl.VirtualMachineConfig
	if !bool(tc.Template) || tc.Agent != "1" || tc.Memory != 2048 || *tc.Cores != 2 || tc.Digest == "" || tc.Boot != "order=scsi0" ||
		!strings.HasSuffix(tc.IDEs["ide2"], "cloudinit,media=cdrom") || tc.SCSIs["scsi0"] != "local-lvm:base-9000-disk-0,discard=on,size=2G" ||
		tc.Serials["serial0"] != "socket" || !strings.HasPrefix(tc.SMBios1, "uuid=") || *tc.SCSIHW != "virtio-scsi-single" {
		t.Errorf("template config = %+v", tc)
	}

	// linked clone; the new VM is locked while the task runs
	newid, task, err := tmpl.Clone(ctx, &proxmox.VirtualMachineCloneOptions{NewID: 100, Name: "k8s-cp-1"})
	if err != nil || newid != 100 {
		t.Fatalf("clone = %d, %v", newid, err)
	}
	if task.Type != "qmclone" || task.ID != "9000" || task.Node != "pve1" || task.User != "root@pam!kthw" {
		t.Errorf("clone task = %+v", task)
	}
	waitFor(t, "lock clone", func() bool {
		vm, err := node.VirtualMachine(ctx, 100) // a fresh value per poll
		return err == nil && vm.Lock == "clone" && vm.VirtualMachineConfig.Lock == "clone"
	})
	// configuring it now is refused before a task starts; starting it
	// fails in the task once the config lock wait times out
	early := &proxmox.VirtualMachine{}
	early.New(c, "pve1", 100)
	if _, err := early.Config(ctx, proxmox.VirtualMachineOption{Name: "cores", Value: 2}); err == nil || err.Error() != "500 VM is locked (clone)" {
		t.Errorf("config during clone: %v", err)
	}
	st, err := early.Start(ctx)
	wait(t, ctx, st)
	if st.IsSuccessful || !st.IsFailed || st.ExitStatus != "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout" {
		t.Errorf("start during clone: %q", st.ExitStatus)
	}
	mustSucceed(t, ctx, task, nil)
	if task.ExitStatus != "OK" || task.Status != "stopped" || !task.IsCompleted || task.IsFailed {
		t.Errorf("clone task after wait = %+v", task)
	}

	vm, err := node.VirtualMachine(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	vc := vm.VirtualMachineConfig
	if vm.Lock != "" || vc.Lock != "" || bool(vm.Template) || bool(vc.Template) || vm.Name != "k8s-cp-1" {
		t.Errorf("clone status = %+v", vm)
	}
	if vc.SCSIs["scsi0"] != "local-lvm:base-9000-disk-0/vm-100-disk-0,discard=on,size=2G" || vc.IDEs["ide2"] != "local-lvm:vm-100-cloudinit,media=cdrom" {
		t.Errorf("clone disks = %v %v", vc.SCSIs, vc.IDEs)
	}
	if vc.Nets["net0"] == tc.Nets["net0"] || !strings.HasPrefix(vc.Nets["net0"], "virtio=BC:24:11:") || !strings.HasSuffix(vc.Nets["net0"], ",bridge=vmbr0") {
		t.Errorf("clone net0 = %q (template %q)", vc.Nets["net0"], tc.Nets["net0"])
	}
	if vc.SMBios1 == tc.SMBios1 || *vc.VMGenID == *tc.VMGenID {
		t.Errorf("clone kept smbios1/vmgenid: %q %q", vc.SMBios1, *vc.VMGenID)
	}

	// configure before the first start (POST → task)
	keys := proxmox.EncodeSSHKeys(testKey)
	cfgTask, err := vm.Config(ctx,
		proxmox.VirtualMachineOption{Name: "cores", Value: 4},
		proxmox.VirtualMachineOption{Name: "memory", Value: 8192},
		proxmox.VirtualMachineOption{Name: "ipconfig0", Value: "ip=10.0.0.21/24,gw=10.0.0.1"},
		proxmox.VirtualMachineOption{Name: "nameserver", Value: "10.0.0.1 1.1.1.1"},
		proxmox.VirtualMachineOption{Name: "searchdomain", Value: "lab.example"},
		proxmox.VirtualMachineOption{Name: "ciuser", Value: "kthw"},
		proxmox.VirtualMachineOption{Name: "sshkeys", Value: keys},
		proxmox.VirtualMachineOption{Name: "tags", Value: "kthw;lab;control-plane"},
		proxmox.VirtualMachineOption{Name: "description", Value: "kthw node k8s-cp-1"},
	)
	mustSucceed(t, ctx, cfgTask, err)
	if cfgTask.Type != "qmconfig" || cfgTask.ID != "100" {
		t.Errorf("config task = %+v", cfgTask)
	}
	if err := vm.ConfigSync(ctx, proxmox.VirtualMachineOption{Name: "onboot", Value: 1}); err != nil {
		t.Fatalf("ConfigSync: %v", err)
	}

	// resize: absolute, relative, shrink refused
	rt, err := vm.ResizeDisk(ctx, "scsi0", "20G")
	mustSucceed(t, ctx, rt, err)
	if rt.Type != "resize" {
		t.Errorf("resize task type %q", rt.Type)
	}
	rt, err = vm.ResizeDisk(ctx, "scsi0", "+2G")
	mustSucceed(t, ctx, rt, err)
	rt, err = vm.ResizeDisk(ctx, "scsi0", "10G")
	if err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, rt)
	if rt.IsSuccessful || !rt.IsFailed || rt.ExitStatus != "shrinking disks is not supported" {
		t.Errorf("shrink: %+v", rt)
	}

	if err := vm.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	vc = vm.VirtualMachineConfig
	if *vc.Cores != 4 || vc.Memory != 8192 || vc.IPConfigs["ipconfig0"] != "ip=10.0.0.21/24,gw=10.0.0.1" || vc.Nameserver != "10.0.0.1 1.1.1.1" ||
		vc.Searchdomain != "lab.example" || vc.CIUser != "kthw" || vc.SSHKeys != keys || vc.Tags != "control-plane;kthw;lab" ||
		vc.Description != "kthw node k8s-cp-1" || !bool(vc.OnBoot) || vc.SCSIs["scsi0"] != "local-lvm:base-9000-disk-0/vm-100-disk-0,discard=on,size=22G" {
		t.Errorf("config after update = %+v", vc)
	}
	if vm.MaxMem != 8<<30 || vm.MaxDisk != 22<<30 || vm.CPUs != 4 {
		t.Errorf("status after update = %+v", vm)
	}

	// AddTag goes through Config (a task); tags come back sorted
	tagTask, err := vm.AddTag(ctx, "worker")
	mustSucceed(t, ctx, tagTask, err)
	if err := vm.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if vm.VirtualMachineConfig.Tags != "control-plane;kthw;lab;worker" {
		t.Errorf("tags = %q", vm.VirtualMachineConfig.Tags)
	}
	if _, err := vm.AddTag(ctx, "worker"); !errors.Is(err, proxmox.ErrNoop) {
		t.Errorf("AddTag twice: %v", err)
	}
	if err := vm.CloudInitRegenerate(ctx); err != nil {
		t.Errorf("CloudInitRegenerate: %v", err)
	}

	// agent before start
	if err := vm.AgentPing(ctx); err == nil || err.Error() != "500 VM 100 is not running" {
		t.Errorf("agent ping stopped: %v", err)
	}

	start, err := vm.Start(ctx)
	mustSucceed(t, ctx, start, err)
	if start.Type != "qmstart" {
		t.Errorf("start type %q", start.Type)
	}
	if err := vm.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if !vm.IsRunning() || vm.PID == 0 || vm.QMPStatus != "running" {
		t.Errorf("after start = %+v", vm)
	}
	// the agent answers after AgentDelay
	waitFor(t, "agent", func() bool { return vm.AgentPing(ctx) == nil })
	if err := vm.WaitForAgent(ctx, 5); err != nil {
		t.Errorf("WaitForAgent: %v", err)
	}
	ifs, err := vm.AgentGetNetworkIFaces(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mac := strings.TrimPrefix(strings.Split(vm.VirtualMachineConfig.Nets["net0"], ",")[0], "virtio=")
	found := false
	for _, i := range ifs {
		if strings.EqualFold(i.HardwareAddress, mac) {
			found = true
			if i.HardwareAddress != strings.ToLower(mac) {
				t.Errorf("agent MAC %q not lower case", i.HardwareAddress)
			}
			var v4 []string
			for _, a := range i.IPAddresses {
				if a.IPAddressType == "ipv4" {
					v4 = append(v4, a.IPAddress)
					if a.Prefix != 24 {
						t.Errorf("prefix %d", a.Prefix)
					}
				}
			}
			if len(v4) != 1 || v4[0] != "10.0.0.21" {
				t.Errorf("agent IPv4 = %v", v4)
			}
		}
	}
	if !found {
		t.Errorf("no NIC with MAC %s in %+v", mac, ifs)
	}
	if info, err := vm.AgentOsInfo(ctx); err != nil || info.ID != "debian" {
		t.Errorf("AgentOsInfo = %+v, %v", info, err)
	}

	// delete while running is refused with the text in the status line
	if _, err := vm.Delete(ctx, &proxmox.VirtualMachineDeleteOptions{Purge: true}); err == nil || err.Error() != "500 VM 100 is running - destroy failed" {
		t.Errorf("delete running: %v", err)
	}

	// config changes that need a restart stay pending while it runs
	ct, err := vm.Config(ctx, proxmox.VirtualMachineOption{Name: "cores", Value: 6}, proxmox.VirtualMachineOption{Name: "name", Value: "k8s-cp-1b"})
	mustSucceed(t, ctx, ct, err)
	state, _ := sim.VM(100)
	if state.Config["cores"] != "4" || state.Pending["cores"] != "6" || state.Config["name"] != "k8s-cp-1b" {
		t.Errorf("running config = %v pending %v", state.Config, state.Pending)
	}

	shut, err := vm.Shutdown(ctx)
	mustSucceed(t, ctx, shut, err)
	if shut.Type != "qmshutdown" {
		t.Errorf("shutdown type %q", shut.Type)
	}
	// pid is omitted for a stopped VM, so a reused value keeps the old
	// one (a go-proxmox quirk): poll with a fresh value
	if err := vm.Ping(ctx); err != nil || vm.PID == 0 {
		t.Errorf("reused value: pid %d, %v", vm.PID, err)
	}
	fresh, err := node.VirtualMachine(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if !fresh.IsStopped() || fresh.PID != 0 || fresh.RunningMachine != "" {
		t.Errorf("after shutdown = %+v", fresh)
	}
	start, err = vm.Start(ctx)
	mustSucceed(t, ctx, start, err)
	if state, _ := sim.VM(100); state.Config["cores"] != "6" || len(state.Pending) != 0 {
		t.Errorf("pending not applied at start: %v %v", state.Config, state.Pending)
	}
	rb, err := vm.Reboot(ctx)
	mustSucceed(t, ctx, rb, err)
	if rb.Type != "qmreboot" {
		t.Errorf("reboot type %q", rb.Type)
	}
	stop, err := vm.Stop(ctx)
	mustSucceed(t, ctx, stop, err)
	if _, err := vm.Reboot(ctx); err == nil || err.Error() != "500 VM 100 not running" {
		t.Errorf("reboot stopped: %v", err)
	}
	// a lock left behind (a killed clone) fails start in the task
	if err := sim.SetLock(100, "clone"); err != nil {
		t.Fatal(err)
	}
	st, err = vm.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, st)
	if st.ExitStatus != "VM is locked (clone)" {
		t.Errorf("start with stale lock: %q", st.ExitStatus)
	}
	if err := sim.SetLock(100, ""); err != nil {
		t.Fatal(err)
	}
	// stopping a stopped VM is fine
	stop, err = vm.Stop(ctx)
	mustSucceed(t, ctx, stop, err)

	// a full clone to a given storage, converted to a template
	newid, task, err = tmpl.Clone(ctx, &proxmox.VirtualMachineCloneOptions{NewID: 101, Name: "full", Full: true, Storage: "local-lvm"})
	mustSucceed(t, ctx, task, err)
	full, err := node.VirtualMachine(ctx, newid)
	if err != nil {
		t.Fatal(err)
	}
	if full.VirtualMachineConfig.SCSIs["scsi0"] != "local-lvm:vm-101-disk-0,discard=on,size=2G" {
		t.Errorf("full clone disk = %q", full.VirtualMachineConfig.SCSIs["scsi0"])
	}
	tt, err := full.ConvertToTemplate(ctx)
	mustSucceed(t, ctx, tt, err)
	if tt.Type != "qmtemplate" {
		t.Errorf("template task type %q", tt.Type)
	}
	full, err = node.VirtualMachine(ctx, newid)
	if err != nil {
		t.Fatal(err)
	}
	if !bool(full.Template) || full.VirtualMachineConfig.SCSIs["scsi0"] != "local-lvm:base-101-disk-0,discard=on,size=2G" {
		t.Errorf("converted = %+v %v", full, full.VirtualMachineConfig.SCSIs)
	}
	st, err = full.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, st)
	if st.IsSuccessful || st.ExitStatus != "you can't start a vm if it's a template" {
		t.Errorf("start template: %q", st.ExitStatus)
	}
	if tt, err := full.ConvertToTemplate(ctx); err == nil || err.Error() != "500 you can't convert a template to a template" {
		t.Errorf("convert twice: %v, %v", tt, err)
	}

	// delete with purge
	del, err := vm.Delete(ctx, &proxmox.VirtualMachineDeleteOptions{Purge: true, DestroyUnreferencedDisks: true})
	mustSucceed(t, ctx, del, err)
	if del.Type != "qmdestroy" {
		t.Errorf("delete type %q", del.Type)
	}
	if _, err := node.VirtualMachine(ctx, 100); err == nil || !strings.Contains(err.Error(), "does not exist") ||
		err.Error() != "500 Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist" {
		t.Errorf("deleted VM: %v", err)
	}
	for _, vol := range sim.Volumes() {
		if vol.VMID == 100 {
			t.Errorf("volume left: %+v", vol)
		}
	}
}

// TestCloneRules checks the synchronous clone checks.
func TestCloneRules(t *testing.T) {
	sim := pvesim.Start(t,
		pvesim.WithNodes(pvesim.NodeSpec{Name: "pve1"}, pvesim.NodeSpec{Name: "pve2"}),
		pvesim.WithStorages(
			pvesim.StorageSpec{Name: "local", Type: "dir", Content: "iso,import,snippets"},
			pvesim.StorageSpec{Name: "local-lvm", Type: "lvmthin", Content: "images,rootdir"},
			pvesim.StorageSpec{Name: "ceph", Type: "rbd", Content: "images,rootdir", Shared: true},
		),
		pvesim.WithTemplate(pvesim.TemplateSpec{VMID: 9100, Name: "shared-tmpl", Storage: "ceph"}),
	)
	c := tokenClient(t, sim)
	ctx := ctxT(t)
	tmpl := &proxmox.VirtualMachine{}
	tmpl.New(c, "pve1", pvesim.TestTemplateID)
	cases := []struct {
		opts *proxmox.VirtualMachineCloneOptions
		want string
	}{
		{&proxmox.VirtualMachineCloneOptions{NewID: 200, Storage: "local-lvm"}, "500 parameter 'storage' not allowed for linked clones"},
		{&proxmox.VirtualMachineCloneOptions{NewID: 200, Target: "pve2"}, "500 can't clone VM to node 'pve2' (VM uses local storage)"},
		{&proxmox.VirtualMachineCloneOptions{NewID: 200, Target: "pve9"}, "500 no such cluster node 'pve9'"},
		{&proxmox.VirtualMachineCloneOptions{NewID: 200, Full: true, Storage: "nope"}, "500 storage 'nope' does not exist"},
		{&proxmox.VirtualMachineCloneOptions{NewID: 200, Full: true, Storage: "local-lvm", Target: "pve2"}, "500 can't clone to non-shared storage 'local-lvm'"},
		{&proxmox.VirtualMachineCloneOptions{NewID: 9000}, "500 unable to create VM 9000: config file already exists"},
		{&proxmox.VirtualMachineCloneOptions{NewID: 200, Pool: "nopool"}, proxmox.ErrNotAuthorized.Error()},
	}
	for _, tc := range cases {
		_, _, err := tmpl.Clone(ctx, tc.opts)
		if err == nil || err.Error() != tc.want {
			t.Errorf("clone %+v: %v, want %s", tc.opts, err, tc.want)
		}
	}
	// storage without images content is a parameter error
	_, _, err := tmpl.Clone(ctx, &proxmox.VirtualMachineCloneOptions{NewID: 200, Full: true, Storage: "local"})
	if err == nil || !strings.Contains(err.Error(), `bad request: 400 Parameter verification failed. - {"storage":"storage 'local' does not support vm images"}`) {
		t.Errorf("clone to local: %v", err)
	}
	// a linked clone of a template on shared storage may go to another node
	shared := &proxmox.VirtualMachine{}
	shared.New(c, "pve1", 9100)
	_, task, err := shared.Clone(ctx, &proxmox.VirtualMachineCloneOptions{NewID: 201, Name: "remote", Target: "pve2"})
	mustSucceed(t, ctx, task, err)
	if st, _ := sim.VM(201); st.Node != "pve2" || st.Config["scsi0"] != "ceph:base-9100-disk-0/vm-201-disk-0,discard=on,size=2G" {
		t.Errorf("cross-node clone = %+v", st)
	}
	// a full clone of a normal VM; a linked clone of one is refused
	vm201 := &proxmox.VirtualMachine{}
	vm201.New(c, "pve2", 201)
	_, task, err = vm201.Clone(ctx, &proxmox.VirtualMachineCloneOptions{NewID: 202, Name: "copy"})
	mustSucceed(t, ctx, task, err)
	if st, _ := sim.VM(202); st.Config["scsi0"] != "ceph:vm-202-disk-0,discard=on,size=2G" || st.Config["name"] != "copy" {
		t.Errorf("clone of VM = %+v", st.Config)
	}
	// without name: Copy-of-VM-<name>
	_, task, err = vm201.Clone(ctx, &proxmox.VirtualMachineCloneOptions{NewID: 203})
	mustSucceed(t, ctx, task, err)
	if st, _ := sim.VM(203); st.Config["name"] != "Copy-of-VM-remote" {
		t.Errorf("default name = %q", st.Config["name"])
	}
	// deleting a template with linked clones leaves the base, with a warning
	del, err := shared.Delete(ctx, &proxmox.VirtualMachineDeleteOptions{Purge: true})
	if err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, del)
	if del.ExitStatus != "WARNINGS: 1" || del.IsSuccessful {
		// go-proxmox counts only "OK" as successful
		t.Errorf("delete template with linked clones: %+v", del)
	}
}

// TestCreateTemplateFromImage builds a template the way images/ recipes do:
// download a cloud image, create a VM importing it, add a cloud-init drive,
// convert to a template.
func TestCreateTemplateFromImage(t *testing.T) {
	sim := pvesim.Start(t)
	c := tokenClient(t, sim)
	ctx := ctxT(t)
	node, err := c.Node(ctx, "pve1")
	if err != nil {
		t.Fatal(err)
	}
	local, err := node.Storage(ctx, "local")
	if err != nil {
		t.Fatal(err)
	}
	if local.Name != "local" || local.Type != "dir" || local.Enabled != 1 || local.Active != 1 || local.Total == 0 {
		t.Errorf("storage status = %+v", local)
	}
	dl, err := local.DownloadURL(ctx, "import", "debian-12-genericcloud-amd64.qcow2", "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2")
	mustSucceed(t, ctx, dl, err)
	if _, err := local.Import(ctx, "debian-12-genericcloud-amd64.qcow2"); err != nil {
		t.Errorf("import volume: %v", err)
	}
	if _, err := local.DownloadURL(ctx, "import", "debian.tar", "https://example.org/debian.tar"); err == nil ||
		!strings.Contains(err.Error(), "invalid filename or wrong extension") {
		t.Errorf("bad import filename: %v", err)
	}

	task, err := node.NewVirtualMachine(ctx, 9001,
		proxmox.VirtualMachineOption{Name: "name", Value: "kthw-ubuntu-24-04"},
		proxmox.VirtualMachineOption{Name: "memory", Value: 2048},
		proxmox.VirtualMachineOption{Name: "cores", Value: 2},
		proxmox.VirtualMachineOption{Name: "agent", Value: "enabled=1"},
		proxmox.VirtualMachineOption{Name: "scsihw", Value: "virtio-scsi-single"},
		proxmox.VirtualMachineOption{Name: "scsi0", Value: "local-lvm:0,import-from=local:import/debian-12-genericcloud-amd64.qcow2,discard=on"},
		proxmox.VirtualMachineOption{Name: "ide2", Value: "local-lvm:cloudinit"},
		proxmox.VirtualMachineOption{Name: "net0", Value: "virtio,bridge=vmbr0"},
		proxmox.VirtualMachineOption{Name: "serial0", Value: "socket"},
		proxmox.VirtualMachineOption{Name: "vga", Value: "serial0"},
		proxmox.VirtualMachineOption{Name: "boot", Value: "order=scsi0"},
		proxmox.VirtualMachineOption{Name: "ostype", Value: "l26"},
	)
	mustSucceed(t, ctx, task, err)
	if task.Type != "qmcreate" || task.ID != "9001" {
		t.Errorf("create task = %+v", task)
	}
	st, _ := sim.VM(9001)
	if st.Config["scsi0"] != "local-lvm:vm-9001-disk-0,discard=on,size=2G" || st.Config["ide2"] != "local-lvm:vm-9001-cloudinit,media=cdrom" ||
		!strings.HasPrefix(st.Config["net0"], "virtio=BC:24:11:") || st.Config["smbios1"] == "" || len(st.Config["vmgenid"]) != 36 || st.Lock != "" {
		t.Errorf("created = %v", st.Config)
	}
	vm, err := node.VirtualMachine(ctx, 9001)
	if err != nil {
		t.Fatal(err)
	}
	tt, err := vm.ConvertToTemplate(ctx)
	mustSucceed(t, ctx, tt, err)
	if st, _ := sim.VM(9001); !st.Template || st.Config["scsi0"] != "local-lvm:base-9001-disk-0,discard=on,size=2G" {
		t.Errorf("template = %v", st.Config)
	}
	// a second cloud-init drive is refused in the task
	if _, err := node.NewVirtualMachine(ctx, 9001); err == nil || err.Error() != "500 unable to create VM 9001 - VM 9001 already exists on node 'pve1'" {
		t.Errorf("create twice: %v", err)
	}
	task, err = node.NewVirtualMachine(ctx, 9002,
		proxmox.VirtualMachineOption{Name: "ide2", Value: "local-lvm:cloudinit"},
		proxmox.VirtualMachineOption{Name: "ide0", Value: "local-lvm:cloudinit"})
	if err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, task)
	if task.IsSuccessful || task.ExitStatus != "unable to create VM 9002 - ide2 - cloud-init drive is already attached at 'ide0'" {
		t.Errorf("two cloud-init drives: %q", task.ExitStatus)
	}
	if _, ok := sim.VM(9002); ok {
		t.Errorf("failed create left a VM")
	}
	// sshkeys are checked before the task, as for an update
	if _, err := node.NewVirtualMachine(ctx, 9003, proxmox.VirtualMachineOption{Name: "sshkeys", Value: proxmox.EncodeSSHKeys("ssh-rsa nonsense")}); err == nil ||
		err.Error() != "500 SSH public key validation error" {
		t.Errorf("create with a bad key: %v", err)
	}
	if _, ok := sim.VM(9003); ok {
		t.Errorf("create with a bad key left a VM")
	}
}

// TestBackend checks what a started VM hands the backend and that the
// agent reports what the backend returns.
func TestBackend(t *testing.T) {
	be := &recordingBackend{}
	sim := pvesim.Start(t, pvesim.WithBackend(be))
	c := tokenClient(t, sim)
	ctx := ctxT(t)
	tmpl := &proxmox.VirtualMachine{}
	tmpl.New(c, "pve1", pvesim.TestTemplateID)
	_, task, err := tmpl.Clone(ctx, &proxmox.VirtualMachineCloneOptions{NewID: 150, Name: "w1"})
	mustSucceed(t, ctx, task, err)
	vm := &proxmox.VirtualMachine{}
	vm.New(c, "pve1", 150)
	second := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDq8N8dTYt1/t4xGqm3m6a2+8WcLQkXkqE5m1m4uX4bJ second"
	ct, err := vm.Config(ctx,
		proxmox.VirtualMachineOption{Name: "ipconfig0", Value: "ip=192.168.50.7/24,gw=192.168.50.1"},
		proxmox.VirtualMachineOption{Name: "nameserver", Value: "192.168.50.1"},
		proxmox.VirtualMachineOption{Name: "ciuser", Value: "kthw"},
		proxmox.VirtualMachineOption{Name: "sshkeys", Value: proxmox.EncodeSSHKeys(testKey, second)})
	mustSucceed(t, ctx, ct, err)
	st, err := vm.Start(ctx)
	mustSucceed(t, ctx, st, err)
	got := be.started(150)
	if got.Name != "w1" || got.Address.String() != "192.168.50.7/24" || got.Gateway.String() != "192.168.50.1" || got.User != "kthw" ||
		len(got.SSHKeys) != 2 || got.SSHKeys[0] != testKey || got.SSHKeys[1] != second || !got.HasCloudInit ||
		len(got.Nameservers) != 1 || !strings.HasPrefix(got.MAC, "BC:24:11:") {
		t.Errorf("backend got %+v", got)
	}
	for _, k := range got.SSHKeys {
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k)); err != nil {
			t.Errorf("key %q: %v", k, err)
		}
	}
	waitFor(t, "agent", func() bool { return vm.AgentPing(ctx) == nil })
	ifs, err := vm.AgentGetNetworkIFaces(ctx)
	if err != nil || len(ifs) != 1 || ifs[0].Name != "eth7" || ifs[0].IPAddresses[0].IPAddress != "198.51.100.7" {
		t.Errorf("agent NICs = %+v, %v", ifs, err)
	}
	stop, err := vm.Stop(ctx)
	mustSucceed(t, ctx, stop, err)
	del, err := vm.Delete(ctx, &proxmox.VirtualMachineDeleteOptions{Purge: true})
	mustSucceed(t, ctx, del, err)
	if be.count("stop", 150) != 1 || be.count("destroy", 150) != 1 {
		t.Errorf("backend calls = %v", be.calls)
	}

	// a failing backend fails the start task and leaves the VM stopped
	be.fail = errors.New("lab node did not boot")
	_, task, err = tmpl.Clone(ctx, &proxmox.VirtualMachineCloneOptions{NewID: 151, Name: "w2"})
	mustSucceed(t, ctx, task, err)
	vm.New(c, "pve1", 151)
	st, err = vm.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, st)
	if st.ExitStatus != "start failed: lab node did not boot" {
		t.Errorf("failing backend: %q", st.ExitStatus)
	}
	if s, _ := sim.VM(151); s.Running {
		t.Errorf("VM runs after failed start")
	}
}
