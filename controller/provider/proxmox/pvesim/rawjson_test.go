package pvesim_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
)

// TestJSONTypes checks the raw answers: numbers where Proxmox sends numbers,
// strings where it sends strings, absent fields left out.
func TestJSONTypes(t *testing.T) {
	sim := pvesim.Start(t, pvesim.WithTaskDuration("qmclone", 400*time.Millisecond))

	cs := get(t, sim, "/cluster/status").data(t).([]any)
	checkTypes(t, "cluster entry", cs[0].(map[string]any), map[string]string{
		"type": "string", "name": "string", "version": "number", "quorate": "number", "nodes": "number", "id": "string"})
	checkTypes(t, "cluster node", cs[1].(map[string]any), map[string]string{
		"type": "string", "name": "string", "nodeid": "number", "ip": "string", "online": "number", "local": "number", "level": "string"})

	if d := get(t, sim, "/cluster/nextid").data(t); d != "100" {
		t.Errorf("nextid data = %#v, want the string \"100\"", d)
	}
	if d := get(t, sim, "/cluster/nextid?vmid=105").data(t); d != "105" {
		t.Errorf("nextid?vmid data = %#v", d)
	}

	v := get(t, sim, "/version").data(t).(map[string]any)
	checkTypes(t, "version", v, map[string]string{"version": "string", "release": "string", "repoid": "string"})

	n := get(t, sim, "/nodes").data(t).([]any)[0].(map[string]any)
	checkTypes(t, "nodes", n, map[string]string{"node": "string", "status": "string", "type": "string", "id": "string",
		"cpu": "number", "maxcpu": "number", "mem": "number", "maxmem": "number", "disk": "number", "maxdisk": "number",
		"uptime": "number", "level": "string", "ssl_fingerprint": "string"})

	ns := get(t, sim, "/nodes/pve1/status").data(t).(map[string]any)
	checkTypes(t, "node status", ns, map[string]string{"cpu": "number", "wait": "number", "uptime": "number", "loadavg": "array",
		"kversion": "string", "pveversion": "string", "cpuinfo": "object", "memory": "object", "swap": "object", "rootfs": "object", "ksm": "object"})
	for _, l := range ns["loadavg"].([]any) {
		if jsonType(l) != "string" {
			t.Errorf("loadavg element %v is %s, want string", l, jsonType(l))
		}
	}
	checkTypes(t, "cpuinfo", ns["cpuinfo"].(map[string]any), map[string]string{"cpus": "number", "mhz": "string", "hvm": "string", "user_hz": "number", "model": "string"})

	res := get(t, sim, "/cluster/resources?type=vm").data(t).([]any)
	if len(res) != 1 {
		t.Fatalf("resources = %v", res)
	}
	checkTypes(t, "template resource", res[0].(map[string]any), map[string]string{
		"id": "string", "type": "string", "vmid": "number", "name": "string", "node": "string", "status": "string",
		"template": "number", "maxcpu": "number", "maxmem": "number", "maxdisk": "number", "tags": "string", "cpu": "number",
		"uptime": "number", "lock": "absent", "pool": "absent"})
	if res[0].(map[string]any)["template"] != 1.0 {
		t.Errorf("template = %v", res[0].(map[string]any)["template"])
	}

	// a clone in progress: locked, then a normal VM
	r := do(t, sim, http.MethodPost, "/nodes/pve1/qemu/9000/clone", "application/json", `{"newid":100,"name":"typed"}`)
	upid := r.data(t).(string)
	if !regexp.MustCompile(`^UPID:pve1:[0-9A-F]{8}:[0-9A-F]{8,9}:[0-9A-F]{8}:qmclone:9000:root@pam!kthw:$`).MatchString(upid) {
		t.Errorf("UPID %q", upid)
	}
	ts := get(t, sim, "/nodes/pve1/tasks/"+upid+"/status").data(t).(map[string]any)
	checkTypes(t, "running task", ts, map[string]string{"upid": "string", "node": "string", "pid": "number", "pstart": "number",
		"starttime": "number", "type": "string", "id": "string", "user": "string", "tokenid": "string", "status": "string", "exitstatus": "absent"})
	if ts["status"] != "running" || ts["user"] != "root@pam" || ts["tokenid"] != "kthw" {
		t.Errorf("running task = %v", ts)
	}
	waitFor(t, "temp config", func() bool { _, ok := sim.VM(100); return ok })
	cfg := get(t, sim, "/nodes/pve1/qemu/100/config").data(t).(map[string]any)
	list := get(t, sim, "/nodes/pve1/qemu").data(t).([]any)
	if ts, _ := sim.Task(upid); ts.Running { // else too slow a machine to see it
		if cfg["lock"] != "clone" {
			t.Errorf("config during clone = %v", cfg)
		}
		for _, e := range list {
			m := e.(map[string]any)
			if m["vmid"] == 100.0 && m["lock"] != "clone" {
				t.Errorf("list entry during clone = %v", m)
			}
		}
	}
	waitFor(t, "clone", func() bool { ts, _ := sim.Task(upid); return !ts.Running })
	ts = get(t, sim, "/nodes/pve1/tasks/"+upid+"/status").data(t).(map[string]any)
	if ts["status"] != "stopped" || ts["exitstatus"] != "OK" {
		t.Errorf("stopped task = %v", ts)
	}
	lr := get(t, sim, "/nodes/pve1/tasks/"+upid+"/log?start=0&limit=50")
	lines := lr.data(t).([]any)
	last := lines[len(lines)-1].(map[string]any)
	checkTypes(t, "log line", last, map[string]string{"n": "number", "t": "string"})
	if last["t"] != "TASK OK" || lines[0].(map[string]any)["n"] != 1.0 || lr.json(t)["total"] != float64(len(lines)) {
		t.Errorf("log = %s", lr.body)
	}

	cfg = get(t, sim, "/nodes/pve1/qemu/100/config").data(t).(map[string]any)
	checkTypes(t, "config", cfg, map[string]string{"digest": "string", "name": "string", "cores": "number", "memory": "string",
		"agent": "string", "scsihw": "string", "scsi0": "string", "ide2": "string", "net0": "string", "boot": "string",
		"serial0": "string", "ostype": "string", "smbios1": "string", "tags": "string", "vmgenid": "string",
		"template": "absent", "lock": "absent", "description": "absent", "sockets": "absent"})
	tcfg := get(t, sim, "/nodes/pve1/qemu/9000/config").data(t).(map[string]any)
	checkTypes(t, "template config", tcfg, map[string]string{"template": "number"})

	st := get(t, sim, "/nodes/pve1/qemu/100/status/current").data(t).(map[string]any)
	checkTypes(t, "status", st, map[string]string{"vmid": "number", "name": "string", "status": "string", "qmpstatus": "string",
		"cpus": "number", "maxmem": "number", "maxdisk": "number", "mem": "number", "cpu": "number", "uptime": "number",
		"ha": "object", "agent": "number", "tags": "string", "template": "absent", "lock": "absent", "pid": "absent"})
	checkTypes(t, "ha", st["ha"].(map[string]any), map[string]string{"managed": "number"})
	tst := get(t, sim, "/nodes/pve1/qemu/9000/status/current").data(t).(map[string]any)
	checkTypes(t, "template status", tst, map[string]string{"template": "number"})

	// running: pid appears; agent answers with lower-case MACs
	r = do(t, sim, http.MethodPost, "/nodes/pve1/qemu/100/status/start", "", "")
	start := r.data(t).(string)
	waitFor(t, "start", func() bool { ts, _ := sim.Task(start); return !ts.Running })
	st = get(t, sim, "/nodes/pve1/qemu/100/status/current").data(t).(map[string]any)
	checkTypes(t, "running status", st, map[string]string{"pid": "number", "uptime": "number", "running-qemu": "string"})
	waitFor(t, "agent", func() bool { return do(t, sim, http.MethodPost, "/nodes/pve1/qemu/100/agent/ping", "", "").code == 200 })
	if d := do(t, sim, http.MethodPost, "/nodes/pve1/qemu/100/agent/ping", "", "").json(t); len(d["data"].(map[string]any)["result"].(map[string]any)) != 0 {
		t.Errorf("ping = %v", d)
	}
	nics := get(t, sim, "/nodes/pve1/qemu/100/agent/network-get-interfaces").data(t).(map[string]any)["result"].([]any)
	if len(nics) != 2 || nics[0].(map[string]any)["name"] != "lo" {
		t.Fatalf("nics = %v", nics)
	}
	nic := nics[1].(map[string]any)
	hw := nic["hardware-address"].(string)
	if hw != strings.ToLower(hw) || !strings.HasPrefix(hw, "bc:24:11:") {
		t.Errorf("hardware-address %q", hw)
	}
	ip := nic["ip-addresses"].([]any)[0].(map[string]any)
	checkTypes(t, "ip", ip, map[string]string{"ip-address-type": "string", "ip-address": "string", "prefix": "number"})

	// list entries: template and lock only when set
	for _, e := range get(t, sim, "/nodes/pve1/qemu").data(t).([]any) {
		m := e.(map[string]any)
		switch m["vmid"] {
		case 9000.0:
			checkTypes(t, "list template", m, map[string]string{"template": "number", "pid": "absent", "lock": "absent"})
		case 100.0:
			checkTypes(t, "list vm", m, map[string]string{"template": "absent", "pid": "number", "lock": "absent", "cpus": "number", "maxmem": "number"})
		}
	}
	res = get(t, sim, "/cluster/resources?type=vm").data(t).([]any)
	for _, e := range res {
		m := e.(map[string]any)
		if m["vmid"] == 100.0 && (m["template"] != 0.0 || m["status"] != "running") {
			t.Errorf("vm resource = %v", m)
		}
	}
}

// TestResourceLag checks the window in which a new VM has no stats yet.
func TestResourceLag(t *testing.T) {
	sim := pvesim.Start(t, pvesim.WithConfig(func(c *pvesim.Config) { c.ResourceLag = 300 * time.Millisecond }))
	r := do(t, sim, http.MethodPost, "/nodes/pve1/qemu/9000/clone", "application/json", `{"newid":100,"name":"lagging"}`)
	upid := r.data(t).(string)
	waitFor(t, "clone", func() bool { ts, _ := sim.Task(upid); return !ts.Running })
	for _, e := range get(t, sim, "/cluster/resources?type=vm").data(t).([]any) {
		m := e.(map[string]any)
		if m["vmid"] == 100.0 {
			checkTypes(t, "fresh resource", m, map[string]string{"status": "string", "name": "absent", "template": "absent", "maxmem": "absent"})
			if m["status"] != "unknown" {
				t.Errorf("fresh status %v", m["status"])
			}
		}
	}
}
