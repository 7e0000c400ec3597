package pvesim

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// resize is PUT /nodes/{node}/qemu/{vmid}/resize: a task on PVE 8, null
// (synchronous) before.
func (s *Server) resize(req *request) (any, error) {
	if err := validate(req.params, map[string]pspec{
		"disk":     {typ: tString, pattern: driveKeyRE},
		"size":     {typ: tString, pattern: regexp.MustCompile(`^\+?\d+(\.\d+)?[KMGT]?$`)},
		"digest":   {typ: tString, optional: true, maxLen: 40},
		"skiplock": {typ: tBool, optional: true},
	}); err != nil {
		if ae, ok := err.(*apiError); ok && ae.errors["disk"] == "value does not match the regex pattern" {
			ae.errors["disk"] = fmt.Sprintf("value '%s' does not have a value in the enumeration '%s'", req.str("disk"), strings.Join(validDriveNames(), ", "))
		}
		return nil, err
	}
	node, vmid := req.vars["node"], req.vmid()
	disk, sizeStr := req.str("disk"), req.str("size")
	update := func(log func(string, ...any)) error {
		if err := s.lockVM(vmid, true, s.lockWait()); err != nil {
			return err
		}
		defer s.unlockVM(vmid, true)
		s.mu.Lock()
		defer s.mu.Unlock()
		v, err := s.loadVM(node, vmid)
		if err != nil {
			return err
		}
		if dg := req.str("digest"); dg != "" && dg != v.digest() {
			return die("checksum mismatch (file change by other user?)")
		}
		if !req.boolean("skiplock") {
			if err := checkLock(v); err != nil {
				return err
			}
		}
		val, ok := v.conf[disk]
		if !ok {
			return die("disk '%s' does not exist", disk)
		}
		if isCDROM(val) || isCloudInitDrive(val) {
			return die("you can't resize a cdrom")
		}
		d := parseDrive(val)
		vol := s.findVolume(v.node, d.file)
		var cur int64
		if vol != nil {
			cur = vol.size
		} else if sz, ok := d.opts.get("size"); ok {
			cur, _ = parseSize(sz)
		}
		plus := strings.HasPrefix(sizeStr, "+")
		n, _ := parseSize(strings.TrimPrefix(sizeStr, "+"))
		if plus {
			n += cur
		}
		if n < cur {
			return die("shrinking disks is not supported")
		}
		if n == cur {
			return nil
		}
		if vol != nil {
			vol.size = n
		}
		d.opts.set("size", formatSize(n))
		v.conf[disk] = d.String()
		log("update VM %d: resize --disk %s --size %s", vmid, disk, sizeStr)
		return nil
	}
	if s.pveMajor < 8 {
		if err := update(func(string, ...any) {}); err != nil {
			return nil, err
		}
		return nil, nil
	}
	return s.startTask(req, node, "resize", strconv.Itoa(vmid), func(tc *taskCtx) error {
		if err := tc.sleep(0.5); err != nil {
			return err
		}
		if err := update(func(f string, a ...any) { tc.t.log = append(tc.t.log, fmt.Sprintf(f, a...)) }); err != nil {
			return err
		}
		return tc.sleep(0.5)
	})
}

func validDriveNames() []string {
	var out []string
	for i := 0; i < 4; i++ {
		out = append(out, fmt.Sprintf("ide%d", i))
	}
	for i := 0; i < 6; i++ {
		out = append(out, fmt.Sprintf("sata%d", i))
	}
	for i := 0; i <= 30; i++ {
		out = append(out, fmt.Sprintf("scsi%d", i))
	}
	for i := 0; i < 16; i++ {
		out = append(out, fmt.Sprintf("virtio%d", i))
	}
	return append(out, "efidisk0", "tpmstate0")
}
