package pvesim

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// clonePlan is what clone_vm's load_and_check returns.
type clonePlan struct {
	src     *vm
	full    bool
	running bool
	// drives to clone, by key
	drives []string
}

// clone is POST /nodes/{node}/qemu/{vmid}/clone. It checks what it can
// before forking (errors are 500s with the text in the status line), then
// runs a qmclone task whose ID is the source VMID. During the task the new
// VM exists with "lock: clone".
func (s *Server) clone(req *request) (any, error) {
	if err := validate(req.params, map[string]pspec{
		"newid":       vmidSpec,
		"name":        {typ: tString, optional: true, format: fmtDNSName},
		"description": {typ: tString, optional: true},
		"pool":        {typ: tString, optional: true},
		"snapname":    {typ: tString, optional: true, maxLen: 40},
		"storage":     {typ: tString, optional: true, format: fmtStorageID},
		"format":      {typ: tString, optional: true, enum: []string{"raw", "qcow2", "vmdk"}},
		"full":        {typ: tBool, optional: true},
		"target":      {typ: tString, optional: true, format: fmtNodeName},
		"bwlimit":     {typ: tInt, optional: true, min: bound(0)},
	}); err != nil {
		return nil, err
	}
	if msg := checkVMID(req.str("newid")); msg != "" {
		return nil, paramErr(map[string]string{"newid": msg})
	}
	node, vmid := req.vars["node"], req.vmid()
	newid, _ := strconv.Atoi(req.str("newid"))
	target := req.str("target")
	if target == node || target == "localhost" {
		target = ""
	}
	storageID, pool, snap := req.str("storage"), req.str("pool"), req.str("snapname")
	_, fullSet := req.param("full")
	fullParam := req.boolean("full")

	// loadAndCheck is clone_vm's $load_and_check. Callers hold s.mu.
	loadAndCheck := func() (*clonePlan, error) {
		if pool != "" && !s.pools[pool] {
			return nil, permErr(fmt.Sprintf("pool '%s' does not exist", pool))
		}
		if target != "" && s.findNode(target) == nil {
			return nil, die("no such cluster node '%s'", target)
		}
		if storageID != "" {
			st, err := s.storageFor(node, storageID)
			if err != nil {
				return nil, err
			}
			if !st.content["images"] {
				return nil, paramErr(map[string]string{"storage": fmt.Sprintf("storage '%s' does not support vm images", storageID)})
			}
			if target != "" {
				if _, err := s.storageFor(target, storageID); err != nil {
					return nil, err
				}
				if !st.spec.Shared {
					return nil, die("can't clone to non-shared storage '%s'", storageID)
				}
			}
		}
		src, err := s.loadVM(node, vmid)
		if err != nil {
			return nil, err
		}
		if err := checkLock(src); err != nil {
			return nil, err
		}
		if snap != "" {
			return nil, die("snapshot '%s' does not exist", snap)
		}
		p := &clonePlan{src: src, running: src.running, full: !src.isTemplate()}
		if fullSet {
			p.full = fullParam
		}
		if storageID != "" && !p.full {
			return nil, die("parameter 'storage' not allowed for linked clones")
		}
		if req.str("format") != "" && !p.full {
			return nil, die("parameter 'format' not allowed for linked clones")
		}
		shared := true
		for _, k := range sortedKeys(src.conf) {
			if !isDriveKey(k) {
				continue
			}
			val := src.conf[k]
			d := parseDrive(val)
			sid, volname, ok := strings.Cut(d.file, ":")
			if isCDROM(val) {
				if ok {
					if st := s.findStorage(sid); st != nil && !st.spec.Shared {
						shared = false
					}
				}
				continue
			}
			st := s.findStorage(sid)
			if !ok || st == nil {
				return nil, die("Full clone feature is not supported for '%s' (%s)", d.file, k)
			}
			if !st.spec.Shared {
				shared = false
			}
			if !p.full && !isCloudInitDrive(val) && !(isBaseVolume(volname) && st.canClone()) {
				return nil, die("Linked clone feature is not supported for '%s' (%s)", d.file, k)
			}
			p.drives = append(p.drives, k)
		}
		if target != "" && !shared {
			return nil, die("can't clone VM to node '%s' (VM uses local storage)", target)
		}
		if _, ok := s.vms[newid]; ok {
			return nil, die("unable to create VM %d: config file already exists", newid)
		}
		return p, nil
	}

	s.mu.Lock()
	_, err := loadAndCheck()
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	name, description := req.str("name"), req.str("description")
	return s.startTask(req, node, "qmclone", strconv.Itoa(vmid), func(tc *taskCtx) error {
		s.mu.Lock()
		lockFault := take(&s.faults.CloneLockTimeouts)
		if lockFault {
			s.stats["clone_lock_timeout"]++
		}
		running := s.vms[vmid] != nil && s.vms[vmid].running
		s.mu.Unlock()
		if err := tc.sleep(0.1); err != nil {
			return err
		}
		if lockFault {
			return lockTimeout(vmid)
		}
		// lock the source (shared unless running), then the new VMID
		if err := s.lockVM(vmid, running, s.lockWait()/10); err != nil {
			return err
		}
		defer s.unlockVM(vmid, running)
		if err := s.lockVM(newid, true, s.lockWait()/10); err != nil {
			return err
		}
		defer s.unlockVM(newid, true)

		s.mu.Lock()
		p, err := loadAndCheck()
		if err != nil {
			s.mu.Unlock()
			return err
		}
		tc.t.log = append(tc.t.log, fmt.Sprintf("creating a clone of VM %d with ID %d", vmid, newid))
		// the temporary config: "# qmclone temporary file\nlock: clone\n"
		nv := &vm{id: newid, node: node, created: time.Now(), conf: map[string]string{
			"lock": "clone", "description": "qmclone temporary file",
		}}
		s.vms[newid] = nv
		storageFault := take(&s.faults.StorageLockTimeouts)
		if storageFault {
			s.stats["storage_lock_timeout"]++
		}
		s.mu.Unlock()

		if err := tc.sleep(0.3); err != nil {
			s.dropVM(newid, nil)
			return fmt.Errorf("clone failed: %w", err)
		}
		s.mu.Lock()
		if storageFault {
			sid := storageID
			if sid == "" && len(p.drives) > 0 {
				sid, _, _ = strings.Cut(parseDrive(p.src.conf[p.drives[0]]).file, ":")
			}
			s.mu.Unlock()
			_ = tc.sleep(0.2)
			s.dropVM(newid, nil)
			return fmt.Errorf("clone failed: cfs-lock 'storage-%s' error: got lock request timeout", sid)
		}
		newConf, created, err := s.cloneConfig(p, newid, node, storageID, tc)
		if err != nil {
			s.mu.Unlock()
			s.dropVM(newid, created)
			return fmt.Errorf("clone failed: %s", strings.TrimSuffix(toAPIError(err).msg, "\n"))
		}
		if name != "" {
			newConf["name"] = name
		} else {
			srcName := p.src.conf["name"]
			if srcName == "" {
				srcName = strconv.Itoa(vmid)
			}
			newConf["name"] = "Copy-of-VM-" + srcName
		}
		if description != "" {
			newConf["description"] = description
		}
		newConf["lock"] = "clone"
		nv.conf = newConf
		s.mu.Unlock()

		if err := tc.sleep(0.6); err != nil {
			s.dropVM(newid, created)
			return fmt.Errorf("clone failed: %w", err)
		}
		s.mu.Lock()
		delete(nv.conf, "lock")
		if target != "" {
			nv.node = target
		}
		nv.pool = pool
		s.mu.Unlock()
		return nil
	})
}

// cloneConfig builds the new VM's config and clones its disks. Callers hold
// s.mu.
func (s *Server) cloneConfig(p *clonePlan, newid int, node, storageID string, tc *taskCtx) (map[string]string, []string, error) {
	skip := regexp.MustCompile(`^(snapshots|parent|snaptime|vmstate|snapstate|runningcpu|runningmachine|running-nets-host-mtu|unused\d+|template|lock|pending)$`)
	conf := map[string]string{}
	var created []string
	drives := map[string]bool{}
	for _, k := range p.drives {
		drives[k] = true
	}
	for _, k := range sortedKeys(p.src.conf) {
		val := p.src.conf[k]
		switch {
		case skip.MatchString(k):
		case strings.HasPrefix(k, "net") && regexp.MustCompile(`^net\d+$`).MatchString(k):
			n, _ := parseNet(val)
			n.mac = randomMAC(s.cfg.MACPrefix)
			conf[k] = n.String()
		case drives[k]:
			d := parseDrive(val)
			sid, volname, _ := strings.Cut(d.file, ":")
			srcVol := s.findVolume(node, d.file)
			var size int64
			if srcVol != nil {
				size = srcVol.size
			} else if sz, ok := d.opts.get("size"); ok {
				size, _ = parseSize(sz)
			}
			dst := sid
			if storageID != "" {
				dst = storageID
			}
			st, err := s.storageFor(node, dst)
			if err != nil {
				return nil, created, err
			}
			var vol *volume
			switch {
			case isCloudInitDrive(val):
				tc.t.log = append(tc.t.log, fmt.Sprintf("create full clone of drive %s (%s)", k, d.file))
				vol = s.allocCloudInit(st, node, newid)
			case p.full:
				tc.t.log = append(tc.t.log, fmt.Sprintf("create full clone of drive %s (%s)", k, d.file))
				vol = s.allocVolume(st, node, newid, size, "")
				tc.t.log = append(tc.t.log, fmt.Sprintf("transferred %s of %s (100.00%%)", formatHuman(size), formatHuman(size)))
			default:
				tc.t.log = append(tc.t.log, fmt.Sprintf("create linked clone of drive %s (%s)", k, d.file))
				vol = s.allocVolume(st, node, newid, size, volname)
			}
			if st.spec.Type == "lvmthin" || st.spec.Type == "lvm" {
				leaf := vol.name[strings.LastIndex(vol.name, "/")+1:]
				tc.t.log = append(tc.t.log, fmt.Sprintf("  Logical volume \"%s\" created.", leaf))
			}
			if srcVol != nil && !isCloudInitDrive(val) {
				vol.noGuestAgent = srcVol.noGuestAgent
				vol.lineage = append([]int{p.src.id}, srcVol.lineage...)
			}
			created = append(created, vol.volid())
			d.file = vol.volid()
			conf[k] = d.String()
		case k == "smbios1":
			sp := parseProps(val)
			sp.set("uuid", randomUUID())
			conf[k] = sp.String()
		case k == "vmgenid":
			conf[k] = randomUUID()
		default:
			conf[k] = val
		}
	}
	if _, ok := conf["smbios1"]; !ok {
		conf["smbios1"] = "uuid=" + randomUUID()
	}
	return conf, created, nil
}

// dropVM removes a half-made VM and its new volumes (a failed clone).
func (s *Server) dropVM(vmid int, vols []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vms[vmid]
	if v == nil {
		return
	}
	for _, vol := range vols {
		s.removeVolume(v.node, vol)
	}
	delete(s.vms, vmid)
}
