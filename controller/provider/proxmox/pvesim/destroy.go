package pvesim

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// vmDelete is DELETE /nodes/{node}/qemu/{vmid}: a qmdestroy task after the
// early checks (a running VM is a 500 "VM N is running - destroy failed").
func (s *Server) vmDelete(req *request) (any, error) {
	if err := validate(req.params, map[string]pspec{
		"purge":                      {typ: tBool, optional: true},
		"skiplock":                   {typ: tBool, optional: true},
		"destroy-unreferenced-disks": {typ: tBool, optional: true},
	}); err != nil {
		return nil, err
	}
	if err := rootOnly(req, "skiplock"); err != nil {
		return nil, err
	}
	node, vmid := req.vars["node"], req.vmid()
	early := func() (*vm, error) {
		v, err := s.loadVM(node, vmid)
		if err != nil {
			return nil, err
		}
		if v.conf["protection"] == "1" {
			return nil, die("can't remove VM %d - protection mode enabled", vmid)
		}
		if v.running {
			return nil, die("VM %d is running - destroy failed", vmid)
		}
		return v, nil
	}
	s.mu.Lock()
	_, err := early()
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	purge, skiplock, unref := req.boolean("purge"), req.boolean("skiplock"), req.boolean("destroy-unreferenced-disks")
	return s.startTask(req, node, "qmdestroy", strconv.Itoa(vmid), func(tc *taskCtx) error {
		if err := s.lockVM(vmid, true, s.lockWait()); err != nil {
			return err
		}
		defer s.unlockVM(vmid, true)
		if err := tc.sleep(0.3); err != nil {
			return err
		}
		s.mu.Lock()
		v, err := early()
		if err == nil && !skiplock {
			err = checkLock(v)
		}
		if err != nil {
			s.mu.Unlock()
			return err
		}
		v.conf["lock"] = "destroyed"
		s.destroyVolumes(v, unref, tc)
		s.mu.Unlock()
		if err := tc.sleep(0.5); err != nil {
			return err
		}
		if err := s.backendDestroy(vmid); err != nil {
			tc.warn("destroying the backend of VM %d failed: %v", vmid, err)
		}
		s.mu.Lock()
		if purge {
			tc.t.log = append(tc.t.log, fmt.Sprintf("purging VM %d from related configurations..", vmid))
		}
		delete(s.vms, vmid)
		delete(s.stolen, vmid)
		s.mu.Unlock()
		return tc.sleep(0.2)
	})
}

// destroyVolumes frees the VM's volumes; a base image linked clones still
// use stays, with a warning (the task ends "WARNINGS: n"). Callers hold s.mu.
func (s *Server) destroyVolumes(v *vm, unreferenced bool, tc *taskCtx) {
	var vols []string
	for _, k := range sortedKeys(v.conf) {
		val := v.conf[k]
		switch {
		case isDriveKey(k) && !isCDROM(val):
			vols = append(vols, parseDrive(val).file)
		case regexp.MustCompile(`^unused\d+$`).MatchString(k):
			vols = append(vols, val)
		}
	}
	if unreferenced {
		for _, vol := range s.volumes {
			if vol.vmid == v.id && vol.content == "images" && (vol.node == v.node || s.findStorage(vol.storage).spec.Shared) {
				found := false
				for _, x := range vols {
					found = found || x == vol.volid()
				}
				if !found {
					vols = append(vols, vol.volid())
				}
			}
		}
	}
	for _, volid := range vols {
		vol := s.findVolume(v.node, volid)
		if vol == nil {
			continue
		}
		if users := s.linkedUsers(vol); users > 0 {
			leaf := vol.name[strings.LastIndex(vol.name, "/")+1:]
			tc.warnings++
			tc.t.log = append(tc.t.log, fmt.Sprintf("WARN: Could not remove disk '%s', check manually: base volume '%s' is still in use by linked cloned", volid, leaf))
			continue
		}
		st := s.findStorage(vol.storage)
		s.removeVolume(v.node, volid)
		if st.spec.Type == "lvmthin" || st.spec.Type == "lvm" {
			leaf := vol.name[strings.LastIndex(vol.name, "/")+1:]
			tc.t.log = append(tc.t.log, fmt.Sprintf("  Logical volume \"%s\" successfully removed.", leaf))
		}
	}
}

// linkedUsers counts the linked clones of a base volume.
func (s *Server) linkedUsers(base *volume) int {
	n := 0
	for _, v := range s.volumes {
		if v.base == base.name && v.storage == base.storage && (v.node == base.node || s.findStorage(v.storage).spec.Shared) {
			n++
		}
	}
	return n
}

// vmTemplate is POST /nodes/{node}/qemu/{vmid}/template.
func (s *Server) vmTemplate(req *request) (any, error) {
	if err := validate(req.params, map[string]pspec{"disk": {typ: tString, optional: true, pattern: driveKeyRE}}); err != nil {
		return nil, err
	}
	node, vmid := req.vars["node"], req.vmid()
	disk := req.str("disk")
	check := func() (*vm, error) {
		v, err := s.loadVM(node, vmid)
		if err != nil {
			return nil, err
		}
		if err := checkLock(v); err != nil {
			return nil, err
		}
		if v.isTemplate() && disk == "" {
			return nil, die("you can't convert a template to a template")
		}
		if v.running {
			return nil, die("you can't convert a VM to template if VM is running")
		}
		return v, nil
	}
	s.mu.Lock()
	_, err := check()
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return s.startTask(req, node, "qmtemplate", strconv.Itoa(vmid), func(tc *taskCtx) error {
		if err := s.lockVM(vmid, true, s.lockWait()); err != nil {
			return err
		}
		defer s.unlockVM(vmid, true)
		if err := tc.sleep(0.5); err != nil {
			return err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		v, err := check()
		if err != nil {
			return err
		}
		v.conf["template"] = "1"
		for _, k := range sortedKeys(v.conf) {
			val := v.conf[k]
			if !isDriveKey(k) || isCDROM(val) || isCloudInitDrive(val) || (disk != "" && k != disk) {
				continue
			}
			d := parseDrive(val)
			vol := s.findVolume(v.node, d.file)
			if vol == nil || isBaseVolume(vol.name) {
				continue
			}
			old := vol.name
			s.makeBase(vol)
			if st := s.findStorage(vol.storage); st.spec.Type == "lvmthin" {
				tc.t.log = append(tc.t.log, fmt.Sprintf("  Renamed \"%s\" to \"%s\" in volume group \"pve\"", old, vol.name))
				tc.t.log = append(tc.t.log, fmt.Sprintf("  Logical volume pve/%s changed.", vol.name))
			}
			d.file = vol.volid()
			v.conf[k] = d.String()
		}
		return nil
	})
}
