package pvesim

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// memoryBytes is get_current_memory of a memory option, in bytes.
func memoryBytes(v string) int64 {
	if v == "" {
		return 512 << 20
	}
	p := parseProps(v)
	cur := v
	if c, ok := p.get("current"); ok {
		cur = c
	} else if len(p) > 0 && p[0].k == "" {
		cur = p[0].v
	}
	n, err := strconv.ParseInt(cur, 10, 64)
	if err != nil {
		return 512 << 20
	}
	return n << 20
}

// cpus is what vmstatus reports as cpus.
func (s *Server) cpus(v *vm) int {
	atoi := func(k string, def int) int {
		if n, err := strconv.Atoi(v.conf[k]); err == nil && n > 0 {
			return n
		}
		return def
	}
	if n := atoi("vcpus", 0); n > 0 {
		return n
	}
	c := atoi("sockets", 1) * atoi("cores", 1)
	if nd := s.findNode(v.node); nd != nil && c > nd.cpus {
		c = nd.cpus
	}
	return c
}

// bootDiskSize is bootdisk_size: the size of the first disk in the boot
// order (or of the legacy bootdisk).
func (s *Server) bootDiskSize(v *vm) (int64, bool) {
	for _, d := range bootOrder(v.conf) {
		val, ok := v.conf[d]
		if !ok || !isDriveKey(d) || isCDROM(val) || isCloudInitDrive(val) {
			continue
		}
		if sz, ok := parseDrive(val).opts.get("size"); ok {
			n, _ := parseSize(sz)
			return n, true
		}
		return 0, true
	}
	return 0, false
}

// bootOrder is the devices of the boot order (or the legacy bootdisk, or
// the first disk of the usual buses).
func bootOrder(conf map[string]string) []string {
	var devs []string
	bp := parseProps(conf["boot"])
	if order, ok := bp.get("order"); ok {
		devs = strings.Split(order, ";")
	} else if bd := conf["bootdisk"]; bd != "" {
		devs = []string{bd}
	} else {
		for _, k := range []string{"ide0", "sata0", "scsi0", "virtio0"} {
			if _, ok := conf[k]; ok {
				devs = append(devs, k)
			}
		}
	}
	return devs
}

// vmStats is vmstatus for one VM (the list fields).
func (s *Server) vmStats(v *vm) map[string]any {
	name := v.conf["name"]
	if name == "" {
		name = fmt.Sprintf("VM %d", v.id)
	}
	maxdisk, _ := s.bootDiskSize(v)
	st := map[string]any{
		"vmid":      v.id,
		"status":    "stopped",
		"name":      name,
		"cpus":      s.cpus(v),
		"maxmem":    memoryBytes(v.conf["memory"]),
		"maxdisk":   maxdisk,
		"disk":      0,
		"uptime":    0,
		"cpu":       0,
		"mem":       0,
		"memhost":   0,
		"netin":     0,
		"netout":    0,
		"diskread":  0,
		"diskwrite": 0,
	}
	if v.running {
		up := int64(time.Since(v.startedAt).Seconds())
		st["status"] = "running"
		st["pid"] = v.pid
		st["uptime"] = up
		st["cpu"] = 0.0123
		used := memoryBytes(v.conf["memory"]) / 3
		st["mem"], st["memhost"] = used, used
		st["netin"], st["netout"] = 2048*up+1500, 1024*up+900
		st["diskread"], st["diskwrite"] = int64(180<<20), 4096*up
	}
	if v.isTemplate() {
		st["template"] = 1
	}
	if hasSerial(v.conf) {
		st["serial"] = 1
	}
	if l := v.conf["lock"]; l != "" {
		st["lock"] = l
	}
	if t, ok := v.conf["tags"]; ok {
		st["tags"] = t
	}
	return st
}

func hasSerial(conf map[string]string) bool {
	for i := 0; i < 4; i++ {
		if conf[fmt.Sprintf("serial%d", i)] != "" {
			return true
		}
	}
	return false
}

// qemuList is GET /nodes/{node}/qemu.
func (s *Server) qemuList(req *request) (any, error) {
	if err := validate(req.params, map[string]pspec{"full": {typ: tBool, optional: true}}); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := []int{}
	for id, v := range s.vms {
		if v.node == req.vars["node"] {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	out := []map[string]any{}
	for _, id := range ids {
		out = append(out, s.vmStats(s.vms[id]))
	}
	return out, nil
}

// vmIndex is GET /nodes/{node}/qemu/{vmid}.
func (s *Server) vmIndex(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.loadVM(req.vars["node"], req.vmid()); err != nil {
		return nil, err
	}
	out := []map[string]any{}
	for _, d := range []string{"config", "pending", "status", "unlink", "vncproxy", "termproxy", "migrate", "resize", "move", "rrd", "rrddata", "monitor", "agent", "snapshot", "spiceproxy", "sendkey", "firewall", "mtunnel", "remote_migrate"} {
		out = append(out, map[string]any{"subdir": d})
	}
	return out, nil
}

// agentEnabled is get_qga_key($conf, 'enabled').
func agentEnabled(v string) bool {
	p := parseProps(v)
	if e, ok := p.get("enabled"); ok {
		return e == "1"
	}
	return len(p) > 0 && p[0].k == "" && p[0].v == "1"
}

// vmStatus is GET /nodes/{node}/qemu/{vmid}/status/current.
func (s *Server) vmStatus(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.loadVM(req.vars["node"], req.vmid())
	if err != nil {
		return nil, err
	}
	st := s.vmStats(v)
	st["ha"] = map[string]any{"managed": 0}
	st["qmpstatus"] = st["status"]
	if v.running {
		st["running-machine"] = "pc-i440fx-9.0+pve0"
		st["running-qemu"] = "9.0.2"
		st["balloon"] = memoryBytes(v.conf["memory"])
		st["freemem"] = memoryBytes(v.conf["memory"]) * 2 / 3
		st["proxmox-support"] = map[string]any{"backup-max-workers": true, "pbs-dirty-bitmap": true, "pbs-library-version": "1.4.1 (UNKNOWN)", "query-bitmap-info": true}
	}
	if agentEnabled(v.conf["agent"]) {
		st["agent"] = 1
	}
	if vga := v.conf["vga"]; strings.HasPrefix(vga, "qxl") || strings.HasPrefix(vga, "virtio") {
		st["spice"] = 1
	}
	return st, nil
}
