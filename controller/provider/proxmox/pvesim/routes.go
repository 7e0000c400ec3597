package pvesim

import (
	"fmt"
	"strings"
)

// buildRoutes is the endpoint table. perm names the privilege Proxmox
// checks, used for the text of injected 403s.
func (s *Server) buildRoutes() []*route {
	vmPerm := func(priv string) func(*request) string {
		return func(r *request) string { return fmt.Sprintf("/vms/%s, %s", r.vars["vmid"], priv) }
	}
	nodePerm := func(priv string) func(*request) string {
		return func(r *request) string { return fmt.Sprintf("/nodes/%s, %s", r.vars["node"], priv) }
	}
	storagePerm := func(priv string) func(*request) string {
		return func(r *request) string { return fmt.Sprintf("/storage/%s, %s", r.vars["storage"], priv) }
	}
	root := func(priv string) func(*request) string {
		return func(*request) string { return "/, " + priv }
	}
	const q = "/nodes/{node}/qemu/{vmid}"
	table := []struct {
		method, pattern string
		h               func(*request) (any, error)
		perm            func(*request) string
	}{
		{"GET", "/version", s.version, nil},
		{"POST", "/access/ticket", s.createTicket, nil},
		{"GET", "/access/domains", s.domains, nil},
		{"GET", "/cluster/status", s.clusterStatus, root("Sys.Audit")},
		{"GET", "/cluster/nextid", s.nextID, nil},
		{"GET", "/cluster/resources", s.resources, nil},
		{"GET", "/cluster/tasks", s.clusterTasks, nil},
		{"GET", "/pools", s.poolsList, nil},
		{"GET", "/storage", s.clusterStorage, root("Datastore.Audit")},
		{"GET", "/nodes", s.nodesList, nil},
		{"GET", "/nodes/{node}", s.nodeIndex, nil},
		{"GET", "/nodes/{node}/status", s.nodeStatus, nodePerm("Sys.Audit")},
		{"GET", "/nodes/{node}/version", s.nodeVersion, nil},
		{"GET", "/nodes/{node}/tasks", s.taskList, nil},
		{"GET", "/nodes/{node}/tasks/{upid}/status", s.taskStatus, nil},
		{"GET", "/nodes/{node}/tasks/{upid}/log", s.taskLog, nil},
		{"GET", "/nodes/{node}/storage", s.storageList, nil},
		{"GET", "/nodes/{node}/storage/{storage}/status", s.storageStatus, storagePerm("Datastore.Audit")},
		{"GET", "/nodes/{node}/storage/{storage}/content", s.storageContent, storagePerm("Datastore.Audit")},
		{"GET", "/nodes/{node}/storage/{storage}/content/{volume...}", s.volumeInfo, storagePerm("Datastore.Audit")},
		{"DELETE", "/nodes/{node}/storage/{storage}/content/{volume...}", s.volumeDelete, storagePerm("Datastore.Allocate")},
		{"POST", "/nodes/{node}/storage/{storage}/download-url", s.downloadURL, storagePerm("Datastore.AllocateTemplate")},
		{"GET", "/nodes/{node}/qemu", s.qemuList, nil},
		{"POST", "/nodes/{node}/qemu", s.createVM, func(r *request) string { return "/vms/" + r.params["vmid"] + ", VM.Allocate" }},
		{"GET", q, s.vmIndex, nil},
		{"DELETE", q, s.vmDelete, vmPerm("VM.Allocate")},
		{"GET", q + "/status/current", s.vmStatus, vmPerm("VM.Audit")},
		{"POST", q + "/status/start", s.vmStart, vmPerm("VM.PowerMgmt")},
		{"POST", q + "/status/stop", s.vmHalt("qmstop"), vmPerm("VM.PowerMgmt")},
		{"POST", q + "/status/shutdown", s.vmHalt("qmshutdown"), vmPerm("VM.PowerMgmt")},
		{"POST", q + "/status/reboot", s.vmReboot("qmreboot"), vmPerm("VM.PowerMgmt")},
		{"POST", q + "/status/reset", s.vmReboot("qmreset"), vmPerm("VM.PowerMgmt")},
		{"GET", q + "/config", s.vmConfig, vmPerm("VM.Audit")},
		{"POST", q + "/config", s.updateConfig(false), vmPerm("VM.Config.Options")},
		{"PUT", q + "/config", s.updateConfig(true), vmPerm("VM.Config.Options")},
		{"GET", q + "/pending", s.vmPending, vmPerm("VM.Audit")},
		{"PUT", q + "/resize", s.resize, vmPerm("VM.Config.Disk")},
		{"POST", q + "/clone", s.clone, vmPerm("VM.Clone")},
		{"POST", q + "/template", s.vmTemplate, vmPerm("VM.Allocate")},
		{"POST", q + "/termproxy", s.termproxy, vmPerm("VM.Console")},
		{"GET", q + "/vncwebsocket", s.vncwebsocket, vmPerm("VM.Console")},
		{"GET", q + "/cloudinit", s.cloudinitPending, vmPerm("VM.Audit")},
		{"PUT", q + "/cloudinit", s.cloudinitRegenerate, vmPerm("VM.Config.Cloudinit")},
		{"POST", q + "/agent/ping", s.agentCmd("ping"), vmPerm("VM.GuestAgent.Audit")},
		{"GET", q + "/agent/network-get-interfaces", s.agentCmd("network-get-interfaces"), vmPerm("VM.GuestAgent.Audit")},
		{"GET", q + "/agent/get-osinfo", s.agentCmd("get-osinfo"), vmPerm("VM.GuestAgent.Audit")},
		{"GET", q + "/agent/get-host-name", s.agentCmd("get-host-name"), vmPerm("VM.GuestAgent.Audit")},
		{"GET", q + "/agent/info", s.agentCmd("info"), vmPerm("VM.GuestAgent.Audit")},
		{"GET", q + "/agent/get-time", s.agentCmd("get-time"), vmPerm("VM.GuestAgent.Audit")},
		{"GET", q + "/agent/file-read", s.agentFileRead, vmPerm("VM.GuestAgent.FileRead")},
	}
	out := make([]*route, 0, len(table))
	for _, e := range table {
		out = append(out, &route{method: e.method, pattern: e.pattern, segs: strings.Split(strings.Trim(e.pattern, "/"), "/"), handle: e.h, perm: e.perm})
	}
	return out
}

// checkFaults applies injected request errors and 403s.
func (s *Server) checkFaults(req *request) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if re, ok := s.faults.requestError(req.method, req.path); ok {
		s.stats["request_error"]++
		status := re.Status
		if status == 0 {
			status = 500
		}
		switch status {
		case 400:
			return paramErr(map[string]string{"simulated": re.Message})
		case 401:
			return unauthorized(re.Message)
		case 403:
			return permErr(re.Message)
		case 595, 596:
			return &apiError{status: status, msg: re.Message, rawBody: true}
		}
		return &apiError{status: status, msg: re.Message}
	}
	if rule, ok := s.faults.forbidden(req.method, req.path); ok {
		s.stats["forbidden"]++
		what := rule.Perm
		if what == "" && req.route.perm != nil {
			what = req.route.perm(req)
		}
		if what == "" {
			what = "/, Sys.Audit"
		}
		return permErr(what)
	}
	return nil
}
