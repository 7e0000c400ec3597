package pvesim

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// version is GET /version.
func (s *Server) version(*request) (any, error) {
	v := s.cfg.PVEVersion
	parts := strings.SplitN(v, ".", 3)
	release := parts[0]
	if len(parts) > 1 {
		release += "." + strings.SplitN(parts[1], "-", 2)[0]
	}
	return map[string]any{"version": v, "release": release, "repoid": "b8f1ad5d90c5ad5c"}, nil
}

func (s *Server) uptime() int64 { return int64(time.Since(s.booted).Seconds()) }

func (s *Server) fingerprint(n *node) string {
	sum := sha256.Sum256([]byte("pvesim-node-" + n.name))
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

// nodeUsage sums what the running VMs of a node use.
func (s *Server) nodeUsage(n *node) (mem int64, cpu float64) {
	mem = 2 << 30
	for _, v := range s.vms {
		if v.node == n.name && v.running {
			mem += memoryBytes(v.conf["memory"]) / 4
			cpu += 0.002
		}
	}
	return mem, cpu
}

// nodes is GET /nodes.
func (s *Server) nodesList(*request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []map[string]any{}
	for _, n := range s.nodes {
		e := map[string]any{
			"id": "node/" + n.name, "node": n.name, "type": "node", "status": "online",
			"ssl_fingerprint": s.fingerprint(n),
		}
		if !s.nodeOnline(n.name) {
			e["status"] = "offline"
			out = append(out, e)
			continue
		}
		mem, cpu := s.nodeUsage(n)
		e["level"] = ""
		e["uptime"] = s.uptime()
		e["cpu"] = cpu
		e["maxcpu"] = n.cpus
		e["mem"] = mem
		e["maxmem"] = n.mem
		e["disk"] = int64(9 << 30)
		e["maxdisk"] = int64(100 << 30)
		out = append(out, e)
	}
	return out, nil
}

// nodeIndex is GET /nodes/{node}.
func (s *Server) nodeIndex(*request) (any, error) {
	out := []map[string]any{}
	for _, n := range []string{"aplinfo", "apt", "capabilities", "ceph", "certificates", "config", "disks", "dns", "firewall", "hardware", "hosts", "journal", "lxc", "netstat", "network", "qemu", "query-url-metadata", "replication", "report", "rrd", "rrddata", "scan", "sdn", "services", "spiceshell", "startall", "status", "stopall", "storage", "subscription", "syslog", "tasks", "termproxy", "time", "version", "vncshell", "vzdump", "wakeonlan"} {
		out = append(out, map[string]any{"name": n})
	}
	return out, nil
}

// nodeStatus is GET /nodes/{node}/status.
func (s *Server) nodeStatus(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.findNode(req.vars["node"])
	mem, cpu := s.nodeUsage(n)
	return map[string]any{
		"uptime":   s.uptime(),
		"idle":     0,
		"loadavg":  []string{"0.12", "0.18", "0.21"},
		"kversion": "Linux 6.8.12-1-pve #1 SMP PREEMPT_DYNAMIC PMX 6.8.12-1 (2024-08-05T16:17Z)",
		"current-kernel": map[string]any{
			"sysname": "Linux", "release": "6.8.12-1-pve", "machine": "x86_64",
			"version": "#1 SMP PREEMPT_DYNAMIC PMX 6.8.12-1 (2024-08-05T16:17Z)",
		},
		"boot-info": map[string]any{"mode": "efi", "secureboot": 0},
		"cpuinfo": map[string]any{
			"user_hz": 100, "model": "AMD EPYC 7302P 16-Core Processor", "sockets": 1,
			"cpus": n.cpus, "cores": n.cpus, "mhz": "2999.998", "hvm": "1",
			"flags": "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid extd_apicid aperfmperf pni pclmulqdq monitor ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand lahf_lm cmp_legacy svm extapic cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw ibs skinit wdt tce topoext perfctr_core perfctr_nb bpext perfctr_llc mwaitx cpb cat_l3 cdp_l3 hw_pstate ssbd mba ibrs ibpb stibp vmmcall fsgsbase bmi1 avx2 smep bmi2 cqm rdt_a rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 cqm_llc cqm_occup_llc cqm_mbm_total cqm_mbm_local clzero irperf xsaveerptr rdpru wbnoinvd arat npt lbrv svm_lock nrip_save tsc_scale vmcb_clean flushbyasid decodeassists pausefilter pfthreshold avic v_vmsave_vmload vgif v_spec_ctrl umip rdpid overflow_recov succor smca sme sev sev_es",
		},
		"cpu":  cpu,
		"wait": 0.0004,
		"memory": map[string]any{
			"total": n.mem, "used": mem, "free": n.mem - mem, "available": n.mem - mem,
		},
		"ksm":        map[string]any{"shared": 0},
		"swap":       map[string]any{"total": int64(8 << 30), "used": 0, "free": int64(8 << 30)},
		"pveversion": "pve-manager/" + s.cfg.PVEVersion + "/b8f1ad5d90c5ad5c",
		"rootfs": map[string]any{
			"total": int64(100 << 30), "used": int64(9 << 30), "free": int64(91 << 30), "avail": int64(86 << 30),
		},
	}, nil
}

// nodeVersion is GET /nodes/{node}/version.
func (s *Server) nodeVersion(req *request) (any, error) { return s.version(req) }

// clusterStatus is GET /cluster/status. Numbers are JSON numbers: go-proxmox
// type-asserts them as float64 and panics on strings.
func (s *Server) clusterStatus(*request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []map[string]any{}
	clustered := s.cfg.ClusterName != ""
	if clustered {
		out = append(out, map[string]any{
			"type": "cluster", "id": "cluster", "name": s.cfg.ClusterName,
			"nodes": len(s.nodes), "quorate": 1, "version": len(s.nodes) + 2,
		})
	}
	for i, n := range s.nodes {
		online := 1
		if !s.nodeOnline(n.name) {
			online = 0
		}
		local := 0
		if i == 0 {
			local = 1
		}
		e := map[string]any{
			"type": "node", "id": "node/" + n.name, "name": n.name, "ip": n.ip,
			"online": online, "local": local, "level": "",
		}
		if clustered {
			e["nodeid"] = n.id
		} else {
			e["nodeid"] = 0
		}
		out = append(out, e)
	}
	return out, nil
}

// nextID is GET /cluster/nextid. The answer is a string ("101"), which is
// what go-proxmox unmarshals it into.
func (s *Server) nextID(req *request) (any, error) {
	if err := validate(req.params, map[string]pspec{"vmid": optional(vmidSpec)}); err != nil {
		return nil, err
	}
	if v, ok := req.param("vmid"); ok {
		if msg := checkVMID(v); msg != "" {
			return nil, paramErr(map[string]string{"vmid": msg})
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := req.param("vmid"); ok {
		id, _ := strconv.Atoi(v)
		if s.vmidTaken(id) {
			return nil, paramErr(map[string]string{"vmid": fmt.Sprintf("VM %d already exists", id)})
		}
		s.maybeSteal(id)
		return strconv.Itoa(id), nil
	}
	for id := s.cfg.NextIDLower; id < 1000000; id++ {
		if !s.vmidTaken(id) {
			s.maybeSteal(id)
			return strconv.Itoa(id), nil
		}
	}
	return nil, die("unable to get any free VMID in range [%d, %d]", s.cfg.NextIDLower, 1000000)
}

// maybeSteal lets "another client" take id right after it was handed out
// (Faults.StealNextIDs). Callers hold s.mu.
func (s *Server) maybeSteal(id int) {
	if !take(&s.faults.StealNextIDs) {
		return
	}
	s.stats["stolen_vmid"]++
	s.stolen[id] = true
	s.vms[id] = &vm{id: id, node: s.nodes[len(s.nodes)-1].name, created: time.Now(), conf: map[string]string{
		"name": fmt.Sprintf("other-client-%d", id), "memory": "512", "cores": "1",
		"smbios1": "uuid=" + randomUUID(), "ostype": "l26",
		"meta": fmt.Sprintf("creation-qemu=9.0.2,ctime=%d", time.Now().Unix()),
	}}
}

// resources is GET /cluster/resources.
func (s *Server) resources(req *request) (any, error) {
	if err := validate(req.params, map[string]pspec{
		"type": {typ: tString, optional: true, enum: []string{"vm", "storage", "node", "sdn", "pool"}},
	}); err != nil {
		return nil, err
	}
	typ := req.str("type")
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []map[string]any{}
	if typ == "" || typ == "pool" {
		for _, p := range sortedKeys(s.pools) {
			out = append(out, map[string]any{"id": "/pool/" + p, "pool": p, "type": "pool"})
		}
	}
	if typ == "" || typ == "vm" {
		ids := make([]int, 0, len(s.vms))
		for id := range s.vms {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids {
			out = append(out, s.vmResource(s.vms[id]))
		}
	}
	if typ == "" || typ == "node" {
		for _, n := range s.nodes {
			e := map[string]any{"id": "node/" + n.name, "type": "node", "node": n.name, "status": "online", "level": ""}
			if !s.nodeOnline(n.name) {
				e["status"] = "offline"
			} else {
				mem, cpu := s.nodeUsage(n)
				e["uptime"], e["cpu"], e["maxcpu"], e["mem"], e["maxmem"] = s.uptime(), cpu, n.cpus, mem, n.mem
				e["disk"], e["maxdisk"], e["cgroup-mode"] = int64(9<<30), int64(100<<30), 2
			}
			out = append(out, e)
		}
	}
	if typ == "" || typ == "storage" {
		for _, n := range s.nodes {
			for _, st := range s.storages {
				if !st.onNode(n.name) {
					continue
				}
				used := s.storageUsed(st, n.name)
				out = append(out, map[string]any{
					"id": "storage/" + n.name + "/" + st.spec.Name, "type": "storage", "node": n.name,
					"storage": st.spec.Name, "status": "available", "plugintype": st.spec.Type,
					"content": st.spec.Content, "shared": boolInt(st.spec.Shared),
					"disk": used, "maxdisk": st.spec.TotalBytes,
				})
			}
		}
	}
	return out, nil
}

// vmResource is a VM's entry in /cluster/resources (extract_vm_stats plus
// lock, tags and pool). Right after creation pvestatd has not reported
// yet: only id, vmid, node, type and status "unknown".
func (s *Server) vmResource(v *vm) map[string]any {
	e := map[string]any{"id": fmt.Sprintf("qemu/%d", v.id), "vmid": v.id, "node": v.node, "type": "qemu", "status": "unknown"}
	if s.cfg.ResourceLag <= 0 || time.Since(v.created) >= s.cfg.ResourceLag {
		st := s.vmStats(v)
		for _, k := range []string{"uptime", "name", "status", "maxcpu", "cpu", "maxmem", "mem", "maxdisk", "disk", "netin", "netout", "diskread", "diskwrite"} {
			e[k] = st[k]
		}
		e["maxcpu"] = st["cpus"]
		e["template"] = boolInt(v.isTemplate())
	}
	if l := v.conf["lock"]; l != "" {
		e["lock"] = l
	}
	if t, ok := v.conf["tags"]; ok {
		e["tags"] = t
	}
	if v.pool != "" {
		e["pool"] = v.pool
	}
	return e
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// pools is GET /pools.
func (s *Server) poolsList(*request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []map[string]any{}
	for _, p := range sortedKeys(s.pools) {
		out = append(out, map[string]any{"poolid": p})
	}
	return out, nil
}
