package pvesim

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// createVM is POST /nodes/{node}/qemu (qm create).
func (s *Server) createVM(req *request) (any, error) {
	extra := map[string]pspec{
		"vmid":                   vmidSpec,
		"archive":                {typ: tString, optional: true},
		"storage":                {typ: tString, optional: true, format: fmtStorageID},
		"pool":                   {typ: tString, optional: true},
		"unique":                 {typ: tBool, optional: true},
		"start":                  {typ: tBool, optional: true},
		"force":                  {typ: tBool, optional: true},
		"bwlimit":                {typ: tInt, optional: true, min: bound(0)},
		"live-restore":           {typ: tBool, optional: true},
		"import-working-storage": {typ: tString, optional: true},
	}
	if err := checkConfigParams(req.params, extra); err != nil {
		return nil, err
	}
	if req.str("archive") != "" {
		return nil, die("restoring backups is not simulated")
	}
	node := req.vars["node"]
	vmid, _ := strconv.Atoi(req.str("vmid"))
	if msg := checkVMID(req.str("vmid")); msg != "" {
		return nil, paramErr(map[string]string{"vmid": msg})
	}
	params := map[string]string{}
	for k, v := range req.params {
		if _, isExtra := extra[k]; !isExtra && k != "node" {
			params[k] = v
		}
	}
	if err := s.prepareConfigParams(params); err != nil {
		return nil, err
	}
	pool := req.str("pool")
	start := req.boolean("start")
	defStorage := req.str("storage")
	s.mu.Lock()
	if pool != "" && !s.pools[pool] {
		s.mu.Unlock()
		return nil, permErr(fmt.Sprintf("pool '%s' does not exist", pool))
	}
	if old, ok := s.vms[vmid]; ok {
		s.mu.Unlock()
		return nil, die("unable to create VM %d - VM %d already exists on node '%s'", vmid, vmid, old.node)
	}
	v := &vm{id: vmid, node: node, conf: map[string]string{"lock": "create"}, created: time.Now(), pool: pool}
	s.vms[vmid] = v
	s.mu.Unlock()
	return s.startTask(req, node, "qmcreate", strconv.Itoa(vmid), func(tc *taskCtx) error {
		if err := s.lockVM(vmid, true, s.lockWait()/10); err != nil {
			s.mu.Lock()
			delete(s.vms, vmid)
			s.mu.Unlock()
			return err
		}
		defer s.unlockVM(vmid, true)
		if err := tc.sleep(0.6); err != nil {
			return err
		}
		s.mu.Lock()
		conf := map[string]string{}
		logf := func(f string, a ...any) { tc.t.log = append(tc.t.log, fmt.Sprintf(f, a...)) }
		var created []string
		fail := func(err error) error {
			for _, vol := range created {
				s.removeVolume(node, vol)
			}
			delete(s.vms, vmid)
			s.mu.Unlock()
			return fmt.Errorf("unable to create VM %d - %s", vmid, strings.TrimSuffix(toAPIError(err).msg, "\n"))
		}
		for _, k := range sortedKeys(params) {
			val := params[k]
			if isDriveKey(k) {
				d := parseDrive(val)
				if m := newDiskRE.FindStringSubmatch(d.file); m != nil && m[2] == "" && defStorage != "" {
					d.file = defStorage + ":" + d.file
					val = d.String()
				}
				nv, err := s.createDisk(v, k, val, conf, logf)
				if err != nil {
					return fail(err)
				}
				created = append(created, parseDrive(nv).file)
				val = nv
			}
			if k == "tags" {
				val = uniqueTags(val)
			}
			conf[k] = val
		}
		if conf["boot"] == "" {
			var devs []string
			for _, k := range validDriveNames() {
				if val, ok := conf[k]; ok && !isCDROM(val) && !isCloudInitDrive(val) {
					devs = append(devs, k)
					break
				}
			}
			for _, k := range validDriveNames() {
				if val, ok := conf[k]; ok && isCDROM(val) {
					devs = append(devs, k)
				}
			}
			if _, ok := conf["net0"]; ok {
				devs = append(devs, "net0")
			}
			if len(devs) > 0 {
				conf["boot"] = "order=" + strings.Join(devs, ";")
			}
		}
		if conf["smbios1"] == "" {
			conf["smbios1"] = "uuid=" + randomUUID()
		}
		if conf["vmgenid"] == "" {
			conf["vmgenid"] = randomUUID()
		}
		conf["meta"] = fmt.Sprintf("creation-qemu=9.0.2,ctime=%d", time.Now().Unix())
		v.conf = conf
		s.mu.Unlock()
		if err := tc.sleep(0.4); err != nil {
			return err
		}
		if start {
			tc.logf("Execute autostart")
			if err := s.bootVM(node, vmid, tc); err != nil {
				tc.warn("%v", err)
			}
		}
		return nil
	})
}
