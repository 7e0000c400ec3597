package pvesim

import (
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

type node struct {
	name, ip string
	id       int
	cpus     int
	mem      int64
}

type storage struct {
	spec    StorageSpec
	content map[string]bool
}

func (st *storage) onNode(n string) bool {
	return len(st.spec.Nodes) == 0 || slices.Contains(st.spec.Nodes, n)
}

// fileBased storages name images "VMID/vm-VMID-disk-N.qcow2".
func (st *storage) fileBased() bool {
	switch st.spec.Type {
	case "dir", "nfs", "cifs", "glusterfs", "btrfs":
		return true
	}
	return false
}

// canClone reports whether linked clones work on the storage.
func (st *storage) canClone() bool {
	return st.spec.Type != "lvm" && st.spec.Type != "iscsi"
}

// volume is a storage volume: a VM disk, a cloud-init drive or a file.
type volume struct {
	storage string
	node    string // for storages that are not shared
	name    string // volname: "vm-101-disk-0", "import/debian.qcow2"
	vmid    int
	size    int64
	format  string
	content string // images, import, iso, vztmpl
	ctime   int64
	// base is the volname of the base image of a linked clone.
	base string
	// noGuestAgent: the disk's operating system lacks qemu-guest-agent
	// (an import image made without it, and the disks made from one).
	noGuestAgent bool
	// lineage are the VMIDs whose disks this one was cloned from, nearest
	// first.
	lineage []int
}

func (v *volume) volid() string { return v.storage + ":" + v.name }

// vm is one guest.
type vm struct {
	id   int
	node string
	conf map[string]string
	// pending holds changes a running VM takes at its next start.
	pending    map[string]string
	pendingDel []string
	running    bool
	pid        int
	startedAt  time.Time
	agentAt    time.Time // guest agent answers from then on
	ipAt       time.Time // NICs carry their addresses from then on
	noAgent    bool      // no guest agent answers: a fault, or the guest has none
	guest      GuestInfo
	// console is the serial console (serial0: socket); boots counts the
	// starts (cloud-init prints the host keys at an instance's first).
	console *console
	boots   int
	// bootGen changes at every start and stop: output scheduled for an
	// earlier boot is dropped.
	bootGen int
	pool    string
	created time.Time
}

// cfgLock emulates flock on /var/lock/qemu-server/lock-VMID.conf.
type cfgLock struct {
	excl   bool
	shared int
}

func (s *Server) init(cfg Config) error {
	if cfg.PVEVersion == "" {
		cfg.PVEVersion = "8.2.4"
	}
	s.pveMajor, _ = strconv.Atoi(strings.SplitN(cfg.PVEVersion, ".", 2)[0])
	if cfg.NextIDLower == 0 {
		cfg.NextIDLower = 100
	}
	if cfg.ImportImageSize == 0 {
		cfg.ImportImageSize = 2 << 30
	}
	if cfg.MACPrefix == "" {
		cfg.MACPrefix = "BC:24:11"
	}
	if len(cfg.Nodes) == 0 {
		cfg.Nodes = []NodeSpec{{Name: "pve1"}}
	}
	if len(cfg.Storages) == 0 {
		cfg.Storages = DefaultStorages()
	}
	s.backend = cfg.Backend
	if s.backend == nil {
		s.backend = DefaultBackend{}
	}
	s.log = cfg.Logger
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.faults = cfg.Faults.clone()
	for i, n := range cfg.Nodes {
		if fmtNodeName(n.Name) != "" {
			return fmt.Errorf("node %q: invalid name", n.Name)
		}
		if s.findNode(n.Name) != nil {
			return fmt.Errorf("node %q: duplicate", n.Name)
		}
		nd := &node{name: n.Name, ip: n.IP, id: i + 1, cpus: n.CPUs, mem: n.MemoryBytes}
		if nd.ip == "" {
			nd.ip = fmt.Sprintf("10.0.0.%d", 11+i)
		}
		if nd.cpus == 0 {
			nd.cpus = 16
		}
		if nd.mem == 0 {
			nd.mem = 64 << 30
		}
		s.nodes = append(s.nodes, nd)
	}
	for _, sp := range cfg.Storages {
		if fmtStorageID(sp.Name) != "" {
			return fmt.Errorf("storage %q: invalid name", sp.Name)
		}
		if sp.TotalBytes == 0 {
			sp.TotalBytes = 1 << 40
		}
		if sp.Type == "" {
			sp.Type = "dir"
		}
		st := &storage{spec: sp, content: map[string]bool{}}
		for _, c := range splitList(sp.Content) {
			st.content[c] = true
		}
		s.storages = append(s.storages, st)
	}
	for _, p := range cfg.Pools {
		s.pools[p] = true
	}
	s.cfg = cfg
	for _, im := range cfg.ImportImages {
		if err := s.seedImportImage(im); err != nil {
			return fmt.Errorf("import image %s: %w", im.File, err)
		}
	}
	for _, t := range cfg.Templates {
		if err := s.seedTemplate(t); err != nil {
			return fmt.Errorf("template %d: %w", t.VMID, err)
		}
	}
	return nil
}

// seedTemplate creates a template the way images/ recipes build one.
func (s *Server) seedTemplate(t TemplateSpec) error {
	if t.VMID < 100 {
		return errors.New("VMID must be at least 100")
	}
	if _, ok := s.vms[t.VMID]; ok {
		return errors.New("VMID in use")
	}
	if t.Node == "" {
		t.Node = s.nodes[0].name
	}
	if s.findNode(t.Node) == nil {
		return fmt.Errorf("no node %q", t.Node)
	}
	if t.Storage == "" {
		for _, st := range s.storages {
			if st.onNode(t.Node) && st.content["images"] {
				t.Storage = st.spec.Name
				break
			}
		}
	}
	st := s.findStorage(t.Storage)
	if st == nil || !st.onNode(t.Node) {
		return fmt.Errorf("no storage %q on node %s", t.Storage, t.Node)
	}
	if t.DiskSize == 0 {
		t.DiskSize = 2 << 30
	}
	if t.Name == "" {
		t.Name = fmt.Sprintf("template-%d", t.VMID)
	}
	disk := s.allocVolume(st, t.Node, t.VMID, t.DiskSize, "")
	disk.noGuestAgent = t.NoGuestAgentInImage
	s.makeBase(disk)
	conf := map[string]string{
		"boot":     "order=scsi0",
		"cores":    "2",
		"cpu":      "x86-64-v2-AES",
		"memory":   "2048",
		"meta":     fmt.Sprintf("creation-qemu=9.0.2,ctime=%d", time.Now().Add(-24*time.Hour).Unix()),
		"name":     t.Name,
		"net0":     netDev{model: "virtio", mac: randomMAC(s.cfg.MACPrefix), opts: props{{"bridge", "vmbr0"}}}.String(),
		"ostype":   "l26",
		"scsi0":    drive{file: disk.volid(), opts: props{{"discard", "on"}, {"size", formatSize(t.DiskSize)}}}.String(),
		"scsihw":   "virtio-scsi-single",
		"serial0":  "socket",
		"smbios1":  "uuid=" + randomUUID(),
		"template": "1",
		"vga":      "serial0",
		"vmgenid":  randomUUID(),
	}
	if !t.NoAgent {
		conf["agent"] = "1"
	}
	if !t.NoCloudInit {
		ci := s.allocCloudInit(st, t.Node, t.VMID)
		conf["ide2"] = drive{file: ci.volid(), opts: props{{"media", "cdrom"}}}.String()
	}
	if t.Tags != "" {
		conf["tags"] = uniqueTags(t.Tags)
	}
	for k, v := range t.Config {
		if v == "" {
			delete(conf, k)
		} else {
			conf[k] = v
		}
	}
	s.vms[t.VMID] = &vm{id: t.VMID, node: t.Node, conf: conf, created: time.Now().Add(-24 * time.Hour)}
	return nil
}

// seedImportImage puts a cloud image on an import storage.
func (s *Server) seedImportImage(im ImportImage) error {
	if im.Download {
		return nil // appears when downloaded
	}
	if !importExtRE.MatchString(im.File) {
		return errors.New("not an import image file name")
	}
	sid := im.Storage
	if sid == "" {
		sid = "local"
	}
	st := s.findStorage(sid)
	if st == nil || !st.content["import"] {
		return fmt.Errorf("no storage %q with import content", sid)
	}
	size := im.Size
	if size == 0 {
		size = s.cfg.ImportImageSize
	}
	nodes := []string{""}
	if !st.spec.Shared {
		nodes = nodes[:0]
		for _, n := range s.nodes {
			if st.onNode(n.name) {
				nodes = append(nodes, n.name)
			}
		}
	}
	for _, n := range nodes {
		s.addVolume(st, &volume{node: n, name: "import/" + im.File, size: size, content: "import",
			format: strings.TrimPrefix(importExtRE.FindString(im.File), "."), noGuestAgent: !im.GuestAgent})
	}
	return nil
}

// importImage is what the simulator knows of an import image file.
func (s *Server) importImage(file string) (ImportImage, bool) {
	for _, im := range s.cfg.ImportImages {
		if im.File == file {
			return im, true
		}
	}
	return ImportImage{}, false
}

func (s *Server) findNode(name string) *node {
	for _, n := range s.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

func (s *Server) findStorage(name string) *storage {
	for _, st := range s.storages {
		if st.spec.Name == name {
			return st
		}
	}
	return nil
}

// resolveNode answers like pveproxy does for a node it cannot proxy to.
func (s *Server) resolveNode(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.findNode(name) == nil {
		return die("hostname lookup '%s' failed - failed to get address info for: %s: Name or service not known", name, name)
	}
	if code, ok := s.faults.OfflineNodes[name]; ok {
		s.stats["offline_node"]++
		if code == 595 {
			return &apiError{status: 595, msg: "Errors during connection establishment, proxy handshake: No route to host", rawBody: true}
		}
		return &apiError{status: 596, msg: "Broken pipe", rawBody: true}
	}
	return nil
}

func (s *Server) nodeOnline(name string) bool {
	_, off := s.faults.OfflineNodes[name]
	return !off
}

// configPath is the pmxcfs path in "does not exist" errors.
func configPath(node string, vmid int) string {
	return fmt.Sprintf("nodes/%s/qemu-server/%d.conf", node, vmid)
}

// loadVM is PVE::QemuConfig->load_config for the node of the request.
// Callers hold s.mu.
func (s *Server) loadVM(node string, vmid int) (*vm, error) {
	v, ok := s.vms[vmid]
	if !ok || v.node != node {
		return nil, die("Configuration file '%s' does not exist", configPath(node, vmid))
	}
	return v, nil
}

func checkLock(v *vm) error {
	if l := v.conf["lock"]; l != "" {
		return die("VM is locked (%s)", l)
	}
	return nil
}

func (v *vm) isTemplate() bool { return v.conf["template"] == "1" }

// digest is the SHA-1 of the config file as pmxcfs would hold it.
func (v *vm) digest() string {
	var b strings.Builder
	if d := v.conf["description"]; d != "" {
		for _, l := range strings.Split(d, "\n") {
			b.WriteString("#" + l + "\n")
		}
	}
	keys := make([]string, 0, len(v.conf))
	for k := range v.conf {
		if k != "description" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %s\n", k, v.conf[k])
	}
	if len(v.pending) > 0 || len(v.pendingDel) > 0 {
		b.WriteString("\n[PENDING]\n")
		pk := make([]string, 0, len(v.pending))
		for k := range v.pending {
			pk = append(pk, k)
		}
		slices.Sort(pk)
		for _, k := range pk {
			fmt.Fprintf(&b, "%s: %s\n", k, v.pending[k])
		}
		if len(v.pendingDel) > 0 {
			fmt.Fprintf(&b, "delete: %s\n", strings.Join(v.pendingDel, ","))
		}
	}
	sum := sha1.Sum([]byte(b.String()))
	return hex.EncodeToString(sum[:])
}

// currentConfig is the config with pending changes applied, as GET
// .../config answers by default.
func (v *vm) currentConfig() map[string]string {
	c := cloneMap(v.conf)
	for k, val := range v.pending {
		c[k] = val
	}
	for _, k := range v.pendingDel {
		delete(c, k)
	}
	return c
}

// applyPending moves pending changes into the config (at VM start).
func (v *vm) applyPending() {
	for k, val := range v.pending {
		v.conf[k] = val
	}
	for _, k := range v.pendingDel {
		delete(v.conf, k)
	}
	v.pending, v.pendingDel = nil, nil
}

func volKey(st *storage, node, volid string) string {
	if st.spec.Shared {
		return volid
	}
	return node + "/" + volid
}

// findVolume looks a volume up by volid as seen from node.
func (s *Server) findVolume(node, volid string) *volume {
	sid, _, ok := strings.Cut(volid, ":")
	if !ok {
		return nil
	}
	st := s.findStorage(sid)
	if st == nil {
		return nil
	}
	return s.volumes[volKey(st, node, volid)]
}

func (s *Server) addVolume(st *storage, v *volume) *volume {
	v.storage = st.spec.Name
	if v.ctime == 0 {
		v.ctime = time.Now().Unix()
	}
	s.volumes[volKey(st, v.node, v.volid())] = v
	return v
}

func (s *Server) removeVolume(node, volid string) {
	sid, _, _ := strings.Cut(volid, ":")
	if st := s.findStorage(sid); st != nil {
		delete(s.volumes, volKey(st, node, volid))
	}
}

// freeDiskName finds the first free "vm-VMID-disk-N" on a storage, as
// find_free_diskname does.
func (s *Server) freeDiskName(st *storage, node string, vmid int) string {
	for i := 0; ; i++ {
		name := fmt.Sprintf("vm-%d-disk-%d", vmid, i)
		base := fmt.Sprintf("base-%d-disk-%d", vmid, i)
		taken := false
		for _, v := range s.volumes {
			if v.storage != st.spec.Name || (!st.spec.Shared && v.node != node) {
				continue
			}
			leaf := v.name[strings.LastIndex(v.name, "/")+1:]
			leaf = strings.TrimSuffix(strings.TrimSuffix(leaf, ".qcow2"), ".raw")
			if leaf == name || leaf == base {
				taken = true
				break
			}
		}
		if !taken {
			return name
		}
	}
}

// allocVolume allocates a new image for vmid; base, when set, makes it a
// linked clone of that base volname.
func (s *Server) allocVolume(st *storage, node string, vmid int, size int64, base string) *volume {
	name := s.freeDiskName(st, node, vmid)
	v := &volume{node: node, vmid: vmid, size: size, content: "images", format: "raw"}
	if st.fileBased() {
		v.format = "qcow2"
		name = fmt.Sprintf("%d/%s.qcow2", vmid, name)
	}
	if base != "" {
		v.base = base
		name = base + "/" + name
	}
	v.name = name
	return s.addVolume(st, v)
}

// allocCloudInit allocates "vm-VMID-cloudinit" (4 MiB).
func (s *Server) allocCloudInit(st *storage, node string, vmid int) *volume {
	v := &volume{node: node, vmid: vmid, size: 4 << 20, content: "images", format: "raw"}
	v.name = fmt.Sprintf("vm-%d-cloudinit", vmid)
	if st.fileBased() {
		v.format = "qcow2"
		v.name = fmt.Sprintf("%d/vm-%d-cloudinit.qcow2", vmid, vmid)
	}
	return s.addVolume(st, v)
}

// makeBase renames a VM image to its base name (template conversion).
func (s *Server) makeBase(v *volume) {
	st := s.findStorage(v.storage)
	delete(s.volumes, volKey(st, v.node, v.volid()))
	if i := strings.LastIndex(v.name, "/"); i >= 0 && v.base != "" {
		v.name = v.name[i+1:]
		v.base = ""
	}
	v.name = strings.Replace(v.name, fmt.Sprintf("vm-%d-disk-", v.vmid), fmt.Sprintf("base-%d-disk-", v.vmid), 1)
	s.addVolume(st, v)
}

// isBaseVolume reports whether a volname is a template's base image.
func isBaseVolume(volname string) bool {
	leaf := volname[strings.LastIndex(volname, "/")+1:]
	return strings.HasPrefix(leaf, "base-")
}

// vmidTaken reports whether a VMID is used anywhere in the cluster.
func (s *Server) vmidTaken(id int) bool {
	_, ok := s.vms[id]
	return ok
}

// lockVM takes the config lock of vmid, waiting up to timeout like flock
// with a timeout does.
func (s *Server) lockVM(vmid int, excl bool, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		s.mu.Lock()
		l := s.locks[vmid]
		if l == nil {
			l = &cfgLock{}
			s.locks[vmid] = l
		}
		if !l.excl && (!excl || l.shared == 0) {
			if excl {
				l.excl = true
			} else {
				l.shared++
			}
			s.mu.Unlock()
			return nil
		}
		s.mu.Unlock()
		if time.Now().After(deadline) {
			return lockTimeout(vmid)
		}
		select {
		case <-s.closing:
			return errors.New("interrupted by signal")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (s *Server) unlockVM(vmid int, excl bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.locks[vmid]
	if l == nil {
		return
	}
	if excl {
		l.excl = false
	} else if l.shared > 0 {
		l.shared--
	}
	if !l.excl && l.shared == 0 {
		delete(s.locks, vmid)
	}
}

// lockWait is how long lock_config waits (clone and create wait a tenth).
func (s *Server) lockWait() time.Duration {
	if s.cfg.LockTimeout > 0 {
		return s.cfg.LockTimeout
	}
	return 10 * time.Second
}

func lockTimeout(vmid int) error {
	return fmt.Errorf("can't lock file '/var/lock/qemu-server/lock-%d.conf' - got timeout", vmid)
}

// busy returns the mutex that serializes backend calls for one VM.
func (s *Server) busy(vmid int) *sync.Mutex {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.vmBusy[vmid]
	if m == nil {
		m = &sync.Mutex{}
		s.vmBusy[vmid] = m
	}
	return m
}
