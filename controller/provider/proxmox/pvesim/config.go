package pvesim

import (
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// vmConfig is GET /nodes/{node}/qemu/{vmid}/config.
func (s *Server) vmConfig(req *request) (any, error) {
	if err := validate(req.params, map[string]pspec{
		"current":  {typ: tBool, optional: true},
		"snapshot": {typ: tString, optional: true},
	}); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.loadVM(req.vars["node"], req.vmid())
	if err != nil {
		return nil, err
	}
	if snap := req.str("snapshot"); snap != "" {
		return nil, die("snapshot '%s' does not exist", snap)
	}
	conf := v.currentConfig()
	if req.boolean("current") {
		conf = cloneMap(v.conf)
	}
	out := map[string]any{"digest": v.digest()}
	for k, val := range conf {
		out[k] = jsonValue(k, val)
	}
	if _, ok := out["cipassword"]; ok {
		out["cipassword"] = "**********"
	}
	return out, nil
}

// vmPending is GET /nodes/{node}/qemu/{vmid}/pending.
func (s *Server) vmPending(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.loadVM(req.vars["node"], req.vmid())
	if err != nil {
		return nil, err
	}
	keys := map[string]bool{}
	for k := range v.conf {
		keys[k] = true
	}
	for k := range v.pending {
		keys[k] = true
	}
	out := []map[string]any{}
	for _, k := range sortedKeys(keys) {
		e := map[string]any{"key": k}
		if val, ok := v.conf[k]; ok {
			e["value"] = jsonValue(k, val)
		}
		if val, ok := v.pending[k]; ok {
			e["pending"] = jsonValue(k, val)
		}
		if slices.Contains(v.pendingDel, k) {
			e["delete"] = 1
		}
		out = append(out, e)
	}
	out = append(out, map[string]any{"key": "digest", "value": v.digest()})
	return out, nil
}

// configUpdateSpecs are the non-config parameters of the config update API.
var configUpdateSpecs = map[string]pspec{
	"delete":                 {typ: tString, optional: true},
	"revert":                 {typ: tString, optional: true},
	"digest":                 {typ: tString, optional: true, maxLen: 40},
	"skiplock":               {typ: tBool, optional: true},
	"force":                  {typ: tBool, optional: true},
	"background_delay":       {typ: tInt, optional: true, min: bound(1), max: bound(30)},
	"skip_cloud_init":        {typ: tBool, optional: true},
	"import-working-storage": {typ: tString, optional: true},
}

// checkConfigParams validates config options plus the extra parameters.
func checkConfigParams(params map[string]string, extra map[string]pspec) error {
	specs := maps.Clone(extra)
	for k := range params {
		if _, ok := specs[k]; ok {
			continue
		}
		if sp, ok := configSpec(k); ok && k != "lock" && k != "template" {
			specs[k] = sp
		}
	}
	return validate(params, specs)
}

// updateConfig is POST (task) and PUT (sync) /nodes/{node}/qemu/{vmid}/config.
func (s *Server) updateConfig(sync bool) func(*request) (any, error) {
	return func(req *request) (any, error) {
		if err := checkConfigParams(req.params, configUpdateSpecs); err != nil {
			return nil, err
		}
		node, vmid := req.vars["node"], req.vmid()
		params := map[string]string{}
		for k, v := range req.params {
			if _, extra := configUpdateSpecs[k]; !extra && k != "node" && k != "vmid" {
				params[k] = v
			}
		}
		if k, ok := params["cdrom"]; ok {
			params["ide2"] = k
			delete(params, "cdrom")
		}
		var dels []string
		errs := map[string]string{}
		for _, opt := range splitList(req.str("delete")) {
			if opt == "cdrom" {
				opt = "ide2"
			}
			if _, ok := params[opt]; ok {
				errs["delete"] = fmt.Sprintf("you can't use '-%s' and -delete %s' at the same time", opt, opt)
				continue
			}
			if _, ok := configSpec(opt); !ok {
				errs["delete"] = fmt.Sprintf("unknown option '%s'", opt)
				continue
			}
			dels = append(dels, opt)
		}
		if len(errs) > 0 {
			return nil, paramErr(errs)
		}
		if err := s.prepareConfigParams(params); err != nil {
			return nil, err
		}
		if len(params) == 0 && len(dels) == 0 && req.str("revert") == "" {
			return nil, die("no options specified")
		}
		digest, skiplock := req.str("digest"), req.boolean("skiplock")
		early := func() (*vm, error) {
			v, err := s.loadVM(node, vmid)
			if err != nil {
				return nil, err
			}
			if digest != "" && digest != v.digest() {
				return nil, die("checksum mismatch (file change by other user?)")
			}
			if !skiplock {
				if err := checkLock(v); err != nil {
					return nil, err
				}
			}
			if params["memory"] != "" || params["balloon"] != "" {
				cur := v.currentConfig()
				mem, bal := firstSet(params["memory"], cur["memory"]), firstSet(params["balloon"], cur["balloon"])
				if b, err := strconv.ParseInt(bal, 10, 64); err == nil && b > memoryBytes(mem)>>20 {
					return nil, die("balloon value too large (must be smaller than assigned memory)")
				}
			}
			return v, nil
		}
		s.mu.Lock()
		_, err := early()
		s.mu.Unlock()
		if err != nil {
			return nil, err
		}
		paramLog := configLogLine(vmid, req.params)
		apply := func(log func(string, ...any)) error {
			if err := s.lockVM(vmid, true, s.lockWait()); err != nil {
				return err
			}
			defer s.unlockVM(vmid, true)
			s.mu.Lock()
			defer s.mu.Unlock()
			v, err := early()
			if err != nil {
				return err
			}
			log("%s", paramLog)
			return s.applyConfig(v, params, dels, log)
		}
		if sync {
			if err := apply(func(string, ...any) {}); err != nil {
				return nil, err
			}
			return nil, nil
		}
		upid, err := s.startTask(req, node, "qmconfig", strconv.Itoa(vmid), func(tc *taskCtx) error {
			if err := tc.sleep(0.5); err != nil {
				return err
			}
			if err := apply(func(f string, a ...any) { tc.t.log = append(tc.t.log, strings.Split(fmt.Sprintf(f, a...), "\n")...) }); err != nil {
				return err
			}
			return tc.sleep(0.5)
		})
		if err != nil {
			return nil, err
		}
		if bd, ok := req.param("background_delay"); ok {
			secs, _ := strconv.Atoi(bd)
			deadline := time.Now().Add(time.Duration(secs) * time.Second)
			for time.Now().Before(deadline) {
				if t, ok := s.Task(upid); ok && !t.Running {
					if t.ExitStatus == "OK" || strings.HasPrefix(t.ExitStatus, "WARNINGS: ") {
						return nil, nil
					}
					return nil, die("failed to update VM %d: %s", vmid, t.ExitStatus)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		return upid, nil
	}
}

// prepareConfigParams checks and completes the config options of a create
// or update as qemu-server does before it takes the VM's lock: sshkeys must
// be valid public keys, a NIC without a MAC gets a generated one and
// vmgenid=1 a new UUID.
func (s *Server) prepareConfigParams(params map[string]string) error {
	if raw, ok := params["sshkeys"]; ok {
		dec, err := url.PathUnescape(raw)
		if err != nil || !validateSSHKeys(dec) {
			return die("SSH public key validation error")
		}
	}
	for k, val := range params {
		if strings.HasPrefix(k, "net") {
			n, _ := parseNet(val)
			if n.mac == "" {
				n.mac = randomMAC(s.cfg.MACPrefix)
			}
			params[k] = n.String()
		}
		if k == "vmgenid" && val == "1" {
			params[k] = randomUUID()
		}
	}
	return nil
}

func firstSet(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// configLogLine is the "update VM N: -key value ..." task log line.
func configLogLine(vmid int, params map[string]string) string {
	keys := []string{}
	for k := range params {
		if k != "node" && k != "vmid" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "update VM %d:", vmid)
	for _, k := range keys {
		val := params[k]
		if k == "cipassword" {
			val = "<hidden>"
		}
		fmt.Fprintf(&b, " -%s %s", k, val)
	}
	return b.String()
}

// applyConfig writes params and deletions into v, creating disks; for a
// running VM, options that need a restart go to pending. Callers hold s.mu.
func (s *Server) applyConfig(v *vm, params map[string]string, dels []string, log func(string, ...any)) error {
	pend := func(k string) bool {
		if !v.running {
			return false
		}
		if fastPlug(k) {
			return false
		}
		// hotplug defaults to network,disk,usb
		if strings.HasPrefix(k, "net") || (isDriveKey(k) && !regexp.MustCompile(`^(ide|sata|efidisk|tpmstate)`).MatchString(k)) {
			return false
		}
		return true
	}
	if !v.running {
		// qemu-server writes every change to the pending section and, for
		// a VM that does not run, applies the whole pending section
		// (vmconfig_apply_pending): changes left pending while it ran take
		// effect now, and a new value replaces a pending one.
		v.applyPending()
	}
	newConf := v.currentConfig()
	for _, k := range dels {
		if _, ok := newConf[k]; !ok {
			log("cannot delete '%s' - not set in current configuration!", k)
			continue
		}
		if pend(k) {
			v.pendingDel = append(v.pendingDel, k)
			delete(v.pending, k)
			continue
		}
		if isDriveKey(k) {
			s.unuseDrive(v, v.conf[k])
		}
		delete(v.conf, k)
		delete(newConf, k)
	}
	keys := sortedKeys(params)
	for _, k := range keys {
		val := params[k]
		switch {
		case isDriveKey(k):
			nv, err := s.createDisk(v, k, val, newConf, log)
			if err != nil {
				return err
			}
			if old, ok := v.conf[k]; ok && !pend(k) && parseDrive(old).file != parseDrive(nv).file {
				s.unuseDrive(v, old) // the replaced disk stays as unusedN
			}
			val = nv
		case k == "tags":
			val = uniqueTags(val)
		case k == "boot":
			if order, ok := parseProps(val).get("order"); ok {
				for _, dev := range strings.Split(order, ";") {
					if _, exists := newConf[dev]; !exists && params[dev] == "" {
						return die("invalid bootorder: device '%s' does not exist'", dev)
					}
				}
			}
		}
		newConf[k] = val
		if pend(k) {
			if v.pending == nil {
				v.pending = map[string]string{}
			}
			v.pending[k] = val
			v.pendingDel = slices.DeleteFunc(v.pendingDel, func(d string) bool { return d == k })
		} else {
			v.conf[k] = val
		}
	}
	// drop pending values equal to the config
	for k, pv := range v.pending {
		if v.conf[k] == pv {
			delete(v.pending, k)
		}
	}
	return nil
}

// unuseDrive turns a removed disk into unusedN (the volume stays).
func (s *Server) unuseDrive(v *vm, val string) {
	if isCDROM(val) || isCloudInitDrive(val) {
		if isCloudInitDrive(val) {
			s.removeVolume(v.node, parseDrive(val).file)
		}
		return
	}
	for i := 0; ; i++ {
		k := fmt.Sprintf("unused%d", i)
		if _, ok := v.conf[k]; !ok {
			v.conf[k] = parseDrive(val).file
			return
		}
	}
}

var newDiskRE = regexp.MustCompile(`^(([^/:\s]+):)?(\d+(\.\d+)?)$`)

// createDisk is create_disks for one drive option: "STORAGE:SIZE" (GiB),
// "STORAGE:0,import-from=SOURCE", "STORAGE:cloudinit", or an existing
// volume. It returns the value to store.
func (s *Server) createDisk(v *vm, key, val string, conf map[string]string, log func(string, ...any)) (string, error) {
	d := parseDrive(val)
	if d.file == "none" || d.file == "cdrom" || d.media() == "cdrom" && !strings.HasSuffix(d.file, ":cloudinit") {
		d.opts.del("size")
		return d.String(), nil
	}
	sid, volname, hasSID := strings.Cut(d.file, ":")
	if hasSID && volname == "cloudinit" {
		for k, ov := range conf {
			if k != key && isDriveKey(k) && isCloudInitDrive(ov) {
				return "", die("%s - cloud-init drive is already attached at '%s'", key, k)
			}
		}
		st, err := s.storageFor(v.node, sid)
		if err != nil {
			return "", err
		}
		vol := s.allocCloudInit(st, v.node, v.id)
		d.file = vol.volid()
		d.opts.set("media", "cdrom")
		d.opts.del("format")
		log("%s: successfully created disk '%s'", key, d.String())
		return d.String(), nil
	}
	if m := newDiskRE.FindStringSubmatch(d.file); m != nil {
		st, err := s.storageFor(v.node, m[2])
		if err != nil {
			return "", err
		}
		if !st.content["images"] {
			return "", die("storage '%s' does not support vm images", st.spec.Name)
		}
		gb, _ := strconv.ParseFloat(m[3], 64)
		size := int64(gb * (1 << 30))
		noAgent := false
		if src, ok := d.opts.get("import-from"); ok {
			d.opts.del("import-from")
			n, err := s.importSize(v.node, src)
			if err != nil {
				return "", err
			}
			size = n
			if sv := s.findVolume(v.node, src); sv != nil {
				noAgent = sv.noGuestAgent
			}
			log("importing disk '%s' to VM %d ...", src, v.id)
			log("transferred %s of %s (100.00%%)", formatHuman(size), formatHuman(size))
		}
		vol := s.allocVolume(st, v.node, v.id, size, "")
		vol.noGuestAgent = noAgent
		if v.isTemplate() {
			s.makeBase(vol)
		}
		d.file = vol.volid()
		d.opts.set("size", formatSize(size))
		d.opts.del("format")
		log("%s: successfully created disk '%s'", key, d.String())
		return d.String(), nil
	}
	if !hasSID {
		if strings.HasPrefix(d.file, "/") {
			return d.String(), nil
		}
		return "", die("unable to parse volume ID '%s'", d.file)
	}
	vol := s.findVolume(v.node, d.file)
	if vol == nil {
		return "", die("volume '%s' does not exist", d.file)
	}
	if vol.content != "images" && vol.content != "iso" {
		return "", die("cannot use volume %s - content type needs to be 'images' or 'iso'", d.file)
	}
	if vol.content == "images" {
		d.opts.set("size", formatSize(vol.size))
	}
	return d.String(), nil
}

// importSize is the size of an import-from source.
func (s *Server) importSize(node, src string) (int64, error) {
	if strings.HasPrefix(src, "/") {
		return s.cfg.ImportImageSize, nil
	}
	vol := s.findVolume(node, src)
	if vol == nil {
		return 0, die("cannot import from '%s' - no such volume '%s'", src, src)
	}
	return vol.size, nil
}

func formatHuman(n int64) string {
	return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
}

// storageFor resolves a storage ID as storage_check_enabled does.
func (s *Server) storageFor(node, sid string) (*storage, error) {
	st := s.findStorage(sid)
	if st == nil {
		return nil, die("storage '%s' does not exist", sid)
	}
	if !st.onNode(node) {
		return nil, die("storage '%s' is not available on node '%s'", sid, node)
	}
	return st, nil
}

// cloudinitRegenerate is PUT /nodes/{node}/qemu/{vmid}/cloudinit.
func (s *Server) cloudinitRegenerate(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.loadVM(req.vars["node"], req.vmid()); err != nil {
		return nil, err
	}
	return nil, nil
}

// cloudinitPending is GET /nodes/{node}/qemu/{vmid}/cloudinit.
func (s *Server) cloudinitPending(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.loadVM(req.vars["node"], req.vmid())
	if err != nil {
		return nil, err
	}
	out := []map[string]any{}
	for _, k := range sortedKeys(v.conf) {
		if cloudInitKeys[k] || strings.HasPrefix(k, "ipconfig") || k == "name" || strings.HasPrefix(k, "net") {
			out = append(out, map[string]any{"key": k, "value": v.conf[k]})
		}
	}
	return out, nil
}
