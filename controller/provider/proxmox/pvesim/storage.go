package pvesim

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// storageUsed sums the volumes on a storage as seen from node.
func (s *Server) storageUsed(st *storage, node string) int64 {
	used := int64(0)
	for _, v := range s.volumes {
		if v.storage == st.spec.Name && (st.spec.Shared || v.node == node) {
			if v.base != "" {
				used += v.size / 10
			} else {
				used += v.size
			}
		}
	}
	return used
}

func (s *Server) storageEntry(st *storage, node string) map[string]any {
	used := s.storageUsed(st, node)
	total := st.spec.TotalBytes
	return map[string]any{
		"storage": st.spec.Name, "type": st.spec.Type, "content": st.spec.Content,
		"active": 1, "enabled": 1, "shared": boolInt(st.spec.Shared),
		"total": total, "used": used, "avail": total - used,
		"used_fraction": float64(used) / float64(total),
	}
}

// storageList is GET /nodes/{node}/storage.
func (s *Server) storageList(req *request) (any, error) {
	if err := validate(req.params, map[string]pspec{
		"content": {typ: tString, optional: true},
		"enabled": {typ: tBool, optional: true},
		"format":  {typ: tBool, optional: true},
		"storage": {typ: tString, optional: true},
		"target":  {typ: tString, optional: true},
	}); err != nil {
		return nil, err
	}
	node := req.vars["node"]
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []map[string]any{}
	for _, st := range s.storages {
		if !st.onNode(node) {
			continue
		}
		if c := req.str("content"); c != "" {
			match := false
			for _, want := range splitList(c) {
				match = match || st.content[want]
			}
			if !match {
				continue
			}
		}
		if sid := req.str("storage"); sid != "" && sid != st.spec.Name {
			continue
		}
		out = append(out, s.storageEntry(st, node))
	}
	return out, nil
}

// storageLookup resolves {storage} on {node}. Callers hold s.mu.
func (s *Server) storageLookup(req *request) (*storage, error) {
	sid := req.vars["storage"]
	st := s.findStorage(sid)
	if st == nil {
		return nil, die("storage '%s' does not exist", sid)
	}
	if !st.onNode(req.vars["node"]) {
		return nil, die("storage '%s' is not available on node '%s'", sid, req.vars["node"])
	}
	return st, nil
}

// storageStatus is GET /nodes/{node}/storage/{storage}/status.
func (s *Server) storageStatus(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.storageLookup(req)
	if err != nil {
		return nil, err
	}
	e := s.storageEntry(st, req.vars["node"])
	delete(e, "storage")
	delete(e, "used_fraction")
	return e, nil
}

func (s *Server) volumeEntry(v *volume) map[string]any {
	e := map[string]any{"volid": v.volid(), "content": v.content, "format": v.format, "size": v.size, "ctime": v.ctime}
	if v.vmid > 0 {
		e["vmid"] = v.vmid
	}
	if v.content == "images" {
		if v.base != "" {
			e["used"] = v.size / 10
			e["parent"] = v.base + "@__base__"
		} else {
			e["used"] = v.size
		}
	}
	return e
}

// storageContent is GET /nodes/{node}/storage/{storage}/content.
func (s *Server) storageContent(req *request) (any, error) {
	if err := validate(req.params, map[string]pspec{
		"content": {typ: tString, optional: true},
		"vmid":    optional(vmidSpec),
	}); err != nil {
		return nil, err
	}
	node := req.vars["node"]
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.storageLookup(req)
	if err != nil {
		return nil, err
	}
	var vols []*volume
	for _, v := range s.volumes {
		if v.storage != st.spec.Name || (!st.spec.Shared && v.node != node) {
			continue
		}
		if c := req.str("content"); c != "" && c != v.content {
			continue
		}
		if id := req.str("vmid"); id != "" && fmt.Sprint(v.vmid) != id {
			continue
		}
		vols = append(vols, v)
	}
	slices.SortFunc(vols, func(a, b *volume) int { return strings.Compare(a.volid(), b.volid()) })
	out := []map[string]any{}
	for _, v := range vols {
		out = append(out, s.volumeEntry(v))
	}
	return out, nil
}

// volumeInfo is GET /nodes/{node}/storage/{storage}/content/{volume}.
func (s *Server) volumeInfo(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.storageLookup(req)
	if err != nil {
		return nil, err
	}
	volid := req.vars["volume"]
	if !strings.Contains(volid, ":") {
		volid = st.spec.Name + ":" + volid
	}
	v := s.findVolume(req.vars["node"], volid)
	if v == nil {
		return nil, die("volume '%s' does not exist", volid)
	}
	path := "/dev/pve/" + v.name
	if st.fileBased() {
		path = "/var/lib/vz/" + map[string]string{"images": "images/", "iso": "template/iso/", "import": "import/", "vztmpl": "template/cache/"}[v.content] + v.name[strings.Index(v.name, "/")+1:]
	}
	return map[string]any{"path": path, "size": v.size, "used": v.size, "format": v.format}, nil
}

// volumeDelete is DELETE /nodes/{node}/storage/{storage}/content/{volume}.
func (s *Server) volumeDelete(req *request) (any, error) {
	s.mu.Lock()
	st, err := s.storageLookup(req)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	volid := req.vars["volume"]
	if !strings.Contains(volid, ":") {
		volid = st.spec.Name + ":" + volid
	}
	v := s.findVolume(req.vars["node"], volid)
	s.mu.Unlock()
	if v == nil {
		return nil, die("volume '%s' does not exist", volid)
	}
	node := req.vars["node"]
	return s.startTask(req, node, "imgdel", volid, func(tc *taskCtx) error {
		if err := tc.sleep(1); err != nil {
			return err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if v.vmid > 0 {
			if owner, ok := s.vms[v.vmid]; ok {
				for k, val := range owner.conf {
					if (isDriveKey(k) && parseDrive(val).file == volid) || val == volid {
						return fmt.Errorf("unable to delete '%s' - volume is still in use (referenced in VM %d)", volid, v.vmid)
					}
				}
			}
		}
		s.removeVolume(node, volid)
		return nil
	})
}

var importExtRE = regexp.MustCompile(`\.(ova|ovf|qcow2|raw|vmdk|img)(\.(gz|lzo|zst|bz2))?$`)

// downloadURL is POST /nodes/{node}/storage/{storage}/download-url. The
// simulator does not fetch anything; the file appears when the task ends.
func (s *Server) downloadURL(req *request) (any, error) {
	if err := validate(req.params, map[string]pspec{
		"url":                 {typ: tString, pattern: regexp.MustCompile(`^https?://.+`)},
		"content":             {typ: tString, enum: []string{"iso", "vztmpl", "import"}},
		"filename":            {typ: tString, maxLen: 255},
		"checksum":            {typ: tString, optional: true},
		"checksum-algorithm":  {typ: tString, optional: true, enum: []string{"md5", "sha1", "sha224", "sha256", "sha384", "sha512"}},
		"compression":         {typ: tString, optional: true},
		"verify-certificates": {typ: tBool, optional: true},
		"storage":             {typ: tString},
	}); err != nil {
		return nil, err
	}
	node, content, filename := req.vars["node"], req.str("content"), req.str("filename")
	switch content {
	case "iso":
		if !strings.HasSuffix(filename, ".iso") && !strings.HasSuffix(filename, ".img") {
			return nil, paramErr(map[string]string{"filename": "wrong file extension"})
		}
	case "import":
		if !importExtRE.MatchString(filename) {
			return nil, paramErr(map[string]string{"filename": "invalid filename or wrong extension"})
		}
	}
	s.mu.Lock()
	st, err := s.storageLookup(req)
	if err == nil && !st.content[content] {
		err = die("storage '%s' does not support '%s' content", st.spec.Name, content)
	}
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	url := req.str("url")
	return s.startTask(req, node, "download", st.spec.Name, func(tc *taskCtx) error {
		tc.logf("downloading %s to %s", url, "/var/lib/vz/"+map[string]string{"iso": "template/iso/", "vztmpl": "template/cache/", "import": "import/"}[content]+filename)
		if err := tc.sleep(1); err != nil {
			return err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		size := s.cfg.ImportImageSize
		format := strings.TrimPrefix(importExtRE.FindString(filename), ".")
		if content == "iso" {
			format, size = "iso", 600<<20
		}
		noAgent := false
		if im, ok := s.importImage(filename); ok && content == "import" {
			noAgent = !im.GuestAgent
			if im.Size > 0 {
				size = im.Size
			}
		}
		s.addVolume(st, &volume{node: node, name: content + "/" + filename, size: size, format: format, content: content,
			ctime: time.Now().Unix(), noGuestAgent: noAgent})
		tc.t.log = append(tc.t.log, "download of '"+url+"' to '"+filename+"' finished")
		return nil
	})
}

// clusterStorage is GET /storage.
func (s *Server) clusterStorage(*request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []map[string]any{}
	for _, st := range s.storages {
		e := map[string]any{"storage": st.spec.Name, "type": st.spec.Type, "content": st.spec.Content, "digest": randomHex(20)[:40]}
		if st.spec.Shared {
			e["shared"] = 1
		}
		if len(st.spec.Nodes) > 0 {
			e["nodes"] = strings.Join(st.spec.Nodes, ",")
		}
		switch st.spec.Type {
		case "dir":
			e["path"] = "/var/lib/vz"
		case "lvmthin":
			e["thinpool"], e["vgname"] = "data", "pve"
		}
		out = append(out, e)
	}
	return out, nil
}
