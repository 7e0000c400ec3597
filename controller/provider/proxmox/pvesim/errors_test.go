package pvesim_test

import (
	"net/http"
	"strings"
	"testing"

	proxmox "github.com/luthermonson/go-proxmox"

	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
)

// TestErrorShapes checks status lines and bodies of 400, 500, 501, 595/596
// and what go-proxmox makes of them.
func TestErrorShapes(t *testing.T) {
	sim := pvesim.Start(t, pvesim.WithNodes(pvesim.NodeSpec{Name: "pve1"}, pvesim.NodeSpec{Name: "pve2"}))
	c := tokenClient(t, sim)
	ctx := ctxT(t)

	// 500: the message is in the status line and the body
	r := get(t, sim, "/nodes/pve1/qemu/4242/status/current")
	if r.code != 500 || r.status != "500 Configuration file 'nodes/pve1/qemu-server/4242.conf' does not exist" {
		t.Errorf("500 status line: %q", r.status)
	}
	if m := r.json(t); m["data"] != nil || m["message"] != "Configuration file 'nodes/pve1/qemu-server/4242.conf' does not exist\n" {
		t.Errorf("500 body: %s", r.body)
	}
	if !r.close {
		t.Errorf("500 keeps the connection open")
	}
	node := &proxmox.Node{}
	node = node.New(c, "pve1")
	if _, err := node.VirtualMachine(ctx, 4242); err == nil || err.Error() != "500 Configuration file 'nodes/pve1/qemu-server/4242.conf' does not exist" {
		t.Errorf("go-proxmox 500: %v", err)
	}
	// the template lives on pve1: asking pve2 for it says so too
	if _, err := node.New(c, "pve2").VirtualMachine(ctx, 9000); err == nil || !strings.Contains(err.Error(), "'nodes/pve2/qemu-server/9000.conf' does not exist") {
		t.Errorf("wrong node: %v", err)
	}

	// 400: status text "Parameter verification failed." and an errors map
	r = get(t, sim, "/cluster/nextid?vmid=9000")
	if r.status != "400 Parameter verification failed." {
		t.Errorf("400 status: %q", r.status)
	}
	m := r.json(t)
	if m["data"] != nil || m["message"] != "Parameter verification failed.\n" || m["errors"].(map[string]any)["vmid"] != "VM 9000 already exists" {
		t.Errorf("400 body: %s", r.body)
	}
	for q, want := range map[string]string{
		"abc": "type check ('integer') failed - got 'abc'",
		"99":  "value must have a minimum value of 100",
		"099": "invalid format - value does not look like a valid VM ID\n",
	} {
		r := get(t, sim, "/cluster/nextid?vmid="+q)
		if got := r.json(t)["errors"].(map[string]any)["vmid"]; got != want {
			t.Errorf("nextid?vmid=%s: %q, want %q", q, got, want)
		}
	}
	vm := &proxmox.VirtualMachine{}
	vm.New(c, "pve1", 9000)
	_, err := vm.Config(ctx, proxmox.VirtualMachineOption{Name: "cores", Value: "many"}, proxmox.VirtualMachineOption{Name: "bogus", Value: 1})
	want := `bad request: 400 Parameter verification failed. - {"bogus":"property is not defined in schema and the schema does not allow additional properties","cores":"type check ('integer') failed - got 'many'"}`
	if err == nil || err.Error() != want {
		t.Errorf("config 400:\n got %v\nwant %s", err, want)
	}
	// sshkeys must be URL-encoded the PVE way, and valid
	err = vm.ConfigSync(ctx, proxmox.VirtualMachineOption{Name: "sshkeys", Value: testKey})
	if err == nil || !strings.Contains(err.Error(), "invalid format - invalid urlencoded string: ssh-ed25519 AAAA") {
		t.Errorf("raw sshkeys: %v", err)
	}
	if err := vm.ConfigSync(ctx, proxmox.VirtualMachineOption{Name: "sshkeys", Value: proxmox.EncodeSSHKeys("ssh-rsa nonsense")}); err == nil || err.Error() != "500 SSH public key validation error" {
		t.Errorf("invalid key: %v", err)
	}
	if err := vm.ConfigSync(ctx, proxmox.VirtualMachineOption{Name: "ipconfig0", Value: "ip=10.0.0.300/24"}); err == nil || !strings.Contains(err.Error(), "ipconfig0.ip: invalid format") {
		t.Errorf("bad ipconfig: %v", err)
	}
	// booleans in a query string must be 0/1, as in PVE
	r = do(t, sim, http.MethodDelete, "/nodes/pve1/qemu/9000?purge=true", "", "")
	if r.status != "400 Parameter verification failed." || !strings.Contains(string(r.body), `"purge":"type check ('boolean') failed - got 'true'"`) {
		t.Errorf("purge=true: %s %s", r.status, r.body)
	}

	// 501: unknown path or method
	r = get(t, sim, "/nodes/pve1/bogus")
	if r.status != "501 Method 'GET /nodes/pve1/bogus' not implemented" {
		t.Errorf("501: %q", r.status)
	}
	if err := c.Get(ctx, "/nodes/pve1/bogus", nil); err == nil || err.Error() != "501 Method 'GET /nodes/pve1/bogus' not implemented" {
		t.Errorf("go-proxmox 501: %v", err)
	}
	r = do(t, sim, http.MethodPut, "/nodes/pve1/qemu/9000/status/current", "", "")
	if r.code != 501 {
		t.Errorf("wrong method: %q", r.status)
	}
	r = do(t, sim, http.MethodGet, "/version", "application/json", `{"a":1}`)
	if r.status != "501 Unexpected content for method 'GET'" {
		t.Errorf("GET with body: %q", r.status)
	}

	// a node that does not exist, and one that is unreachable
	r = get(t, sim, "/nodes/pve9/status")
	if r.status != "500 hostname lookup 'pve9' failed - failed to get address info for: pve9: Name or service not known" {
		t.Errorf("unknown node: %q", r.status)
	}
	sim.UpdateFaults(func(f *pvesim.Faults) { f.OfflineNodes = map[string]int{"pve2": 596} })
	r = get(t, sim, "/nodes/pve2/qemu")
	if r.code != 596 || r.status != "596 Broken pipe" || string(r.body) != "Broken pipe" {
		t.Errorf("offline node: %q %q", r.status, r.body)
	}
	if _, err := node.New(c, "pve2").VirtualMachines(ctx); err == nil {
		t.Errorf("go-proxmox got no error from an offline node")
	}
	nodes, err := c.Nodes(ctx)
	if err != nil || len(nodes) != 2 || nodes[1].Status != "offline" || nodes[1].MaxMem != 0 {
		t.Errorf("nodes with one offline: %+v, %v", nodes, err)
	}
	cl, err := c.Cluster(ctx)
	if err != nil || cl.Nodes[1].Online != 0 || cl.Nodes[1].Status != "offline" {
		t.Errorf("cluster with one offline: %+v, %v", cl, err)
	}
	sim.UpdateFaults(func(f *pvesim.Faults) { f.OfflineNodes = map[string]int{"pve2": 595} })
	if r := get(t, sim, "/nodes/pve2/status"); r.status != "595 Errors during connection establishment, proxy handshake: No route to host" {
		t.Errorf("595: %q", r.status)
	}

	if r := get(t, sim, "/nodes/pve1/storage/local/content?content=import"); r.code != 200 {
		t.Errorf("storage content: %s %s", r.status, r.body)
	}

	// tasks
	r = get(t, sim, "/nodes/pve1/tasks/UPID:pve1:0000ABCD:0001E240:65A1B2C3:qmclone:9000:root@pam!kthw:/status")
	if r.status != "400 Parameter verification failed." || !strings.Contains(string(r.body), `"upid":"no such task"`) {
		t.Errorf("unknown task: %s %s", r.status, r.body)
	}
	r = get(t, sim, "/nodes/pve1/tasks/UPID:pve1:1234/status")
	if !strings.Contains(string(r.body), `"upid":"unable to parse worker upid"`) {
		t.Errorf("bad upid: %s", r.body)
	}

	// injected request errors
	sim.UpdateFaults(func(f *pvesim.Faults) {
		f.RequestErrors = []pvesim.RequestError{{Method: "GET", Path: "/version", Count: 1, Message: "got timeout"}}
	})
	if _, err := c.Version(ctx); err == nil || err.Error() != "500 got timeout" {
		t.Errorf("request error: %v", err)
	}
	if _, err := c.Version(ctx); err != nil {
		t.Errorf("request error not spent: %v", err)
	}
}

// TestBodies checks that JSON and form-encoded bodies both work.
func TestBodies(t *testing.T) {
	sim := pvesim.Start(t)
	c := tokenClient(t, sim)
	ctx := ctxT(t)
	tmpl := &proxmox.VirtualMachine{}
	tmpl.New(c, "pve1", pvesim.TestTemplateID)
	_, task, err := tmpl.Clone(ctx, &proxmox.VirtualMachineCloneOptions{NewID: 130, Name: "bodies"})
	mustSucceed(t, ctx, task, err)

	r := do(t, sim, http.MethodPut, "/nodes/pve1/qemu/130/config", "application/x-www-form-urlencoded",
		"cores=3&memory=3072&onboot=1&ipconfig0=ip%3D10.1.0.5%2F24%2Cgw%3D10.1.0.1")
	if r.code != 200 || string(r.body) != `{"data":null}` {
		t.Fatalf("form PUT: %s %s", r.status, r.body)
	}
	r = do(t, sim, http.MethodPut, "/nodes/pve1/qemu/130/config", "application/json", `{"sockets":2,"numa":true,"name":"bodies-json","balloon":"1024"}`)
	if r.code != 200 {
		t.Fatalf("JSON PUT: %s %s", r.status, r.body)
	}
	st, _ := sim.VM(130)
	for k, want := range map[string]string{"cores": "3", "memory": "3072", "onboot": "1", "ipconfig0": "ip=10.1.0.5/24,gw=10.1.0.1", "sockets": "2", "numa": "1", "name": "bodies-json", "balloon": "1024"} {
		if st.Config[k] != want {
			t.Errorf("%s = %q, want %q", k, st.Config[k], want)
		}
	}
	// POST answers a UPID string
	r = do(t, sim, http.MethodPost, "/nodes/pve1/qemu/130/config", "application/x-www-form-urlencoded", "delete=onboot,numa")
	upid, _ := r.data(t).(string)
	if !strings.HasPrefix(upid, "UPID:pve1:") || len(strings.Split(upid, ":")) != 9 {
		t.Fatalf("config POST data = %s", r.body)
	}
	waitFor(t, "config task", func() bool { ts, _ := sim.Task(upid); return !ts.Running })
	if st, _ := sim.VM(130); st.Config["onboot"] != "" || st.Config["numa"] != "" {
		t.Errorf("delete did not apply: %v", st.Config)
	}
	// digest guards concurrent edits
	r = do(t, sim, http.MethodPut, "/nodes/pve1/qemu/130/config", "application/json", `{"cores":2,"digest":"0000000000000000000000000000000000000000"}`)
	if r.status != "500 checksum mismatch (file change by other user?)" {
		t.Errorf("digest mismatch: %q", r.status)
	}
	r = do(t, sim, http.MethodPut, "/nodes/pve1/qemu/130/config", "application/json", `{"balloon":99999}`)
	if r.status != "500 balloon value too large (must be smaller than assigned memory)" {
		t.Errorf("balloon: %q", r.status)
	}
	// a replaced disk stays as unusedN; a new one is allocated
	r = do(t, sim, http.MethodPut, "/nodes/pve1/qemu/130/config", "application/json", `{"scsi0":"local-lvm:4,discard=on","scsi1":"local-lvm:1"}`)
	if r.code != 200 {
		t.Fatalf("new disks: %s", r.status)
	}
	st, _ = sim.VM(130)
	if st.Config["scsi0"] != "local-lvm:vm-130-disk-1,discard=on,size=4G" || st.Config["scsi1"] != "local-lvm:vm-130-disk-2,size=1G" ||
		st.Config["unused0"] != "local-lvm:base-9000-disk-0/vm-130-disk-0" {
		t.Errorf("disks = %q %q %q", st.Config["scsi0"], st.Config["scsi1"], st.Config["unused0"])
	}
	// background_delay waits and answers null when done in time
	r = do(t, sim, http.MethodPost, "/nodes/pve1/qemu/130/config", "application/json", `{"cores":2,"background_delay":5}`)
	if string(r.body) != `{"data":null}` {
		t.Errorf("background_delay: %s", r.body)
	}
}

// TestPVE7Resize checks that resize answers null before PVE 8, which
// go-proxmox turns into a nil task.
func TestPVE7Resize(t *testing.T) {
	sim := pvesim.Start(t, pvesim.WithPVEVersion("7.4-3"))
	c := tokenClient(t, sim)
	ctx := ctxT(t)
	tmpl := &proxmox.VirtualMachine{}
	tmpl.New(c, "pve1", pvesim.TestTemplateID)
	_, task, err := tmpl.Clone(ctx, &proxmox.VirtualMachineCloneOptions{NewID: 140, Name: "old"})
	mustSucceed(t, ctx, task, err)
	vm := &proxmox.VirtualMachine{}
	vm.New(c, "pve1", 140)
	rt, err := vm.ResizeDisk(ctx, "scsi0", "10G")
	if err != nil || rt != nil {
		t.Errorf("PVE 7 resize = %+v, %v; want nil task", rt, err)
	}
	if st, _ := sim.VM(140); !strings.HasSuffix(st.Config["scsi0"], "size=10G") {
		t.Errorf("scsi0 = %q", st.Config["scsi0"])
	}
	if _, err := vm.ResizeDisk(ctx, "scsi0", "5G"); err == nil || err.Error() != "500 shrinking disks is not supported" {
		t.Errorf("PVE 7 shrink: %v", err)
	}
	if _, err := vm.ResizeDisk(ctx, "scsi9", "5G"); err == nil || err.Error() != "500 disk 'scsi9' does not exist" {
		t.Errorf("missing disk: %v", err)
	}
	if v, _ := c.Version(ctx); v.Release != "7.4" {
		t.Errorf("release = %q", v.Release)
	}
}
