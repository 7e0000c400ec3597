package proxmox

import (
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"

	pve "github.com/luthermonson/go-proxmox"
)

// settings are the VM settings of one node, all applied before its first
// start (cloud-init reads its drive once, at first boot).
type settings struct {
	name         string
	cores        int
	memoryMiB    int
	diskGiB      int
	ipconfig0    string
	nameserver   string // space-separated; empty: Proxmox's default
	searchdomain string // empty: Proxmox's default
	ciuser       string
	sshkeys      string // authorized_keys lines, not encoded
	tags         string
	description  string
}

// IPConfig renders cloud-init's ipconfig0 for a static address:
// "ip=10.200.0.11/24,gw=10.200.0.1".
func IPConfig(addr netip.Prefix, gw netip.Addr) string {
	s := "ip=" + addr.String()
	if gw.IsValid() {
		s += ",gw=" + gw.String()
	}
	return s
}

// changeKind says what applying a change takes.
type changeKind int

const (
	// live changes apply to a running VM (name, tags, description).
	live changeKind = iota
	// hardware changes (cores, memory) need a stop and start.
	hardware
	// cloudInit changes reach the guest only on a fresh first boot.
	cloudInit
)

// change is one setting that differs from what the VM has.
type change struct {
	key      string
	from, to string
	kind     changeKind
	value    any // what to send
}

func (c change) String() string { return fmt.Sprintf("%s %q -> %q", c.key, c.from, c.to) }

// diffConfig lists what differs between a VM's config and the settings.
// Values Proxmox may write differently (tag order, key order of ipconfig0,
// URL-encoded sshkeys) are compared by meaning.
func diffConfig(cur *pve.VirtualMachineConfig, want settings) []change {
	if cur == nil {
		cur = &pve.VirtualMachineConfig{}
	}
	var out []change
	add := func(key, from, to string, kind changeKind, value any) {
		out = append(out, change{key: key, from: from, to: to, kind: kind, value: value})
	}
	if cur.Name != want.name {
		add("name", cur.Name, want.name, live, want.name)
	}
	cores := 1 // Proxmox's default
	if cur.Cores != nil {
		cores = *cur.Cores
	}
	if cores != want.cores {
		add("cores", strconv.Itoa(cores), strconv.Itoa(want.cores), hardware, want.cores)
	}
	mem := int(cur.Memory)
	if mem == 0 {
		mem = 512 // Proxmox's default
	}
	if mem != want.memoryMiB {
		add("memory", strconv.Itoa(mem), strconv.Itoa(want.memoryMiB), hardware, want.memoryMiB)
	}
	if ip := cur.IPConfigs["ipconfig0"]; !samePropString(ip, want.ipconfig0) {
		add("ipconfig0", ip, want.ipconfig0, cloudInit, want.ipconfig0)
	}
	if want.nameserver != "" && !slices.Equal(strings.Fields(cur.Nameserver), strings.Fields(want.nameserver)) {
		add("nameserver", cur.Nameserver, want.nameserver, cloudInit, want.nameserver)
	}
	if want.searchdomain != "" && cur.Searchdomain != want.searchdomain {
		add("searchdomain", cur.Searchdomain, want.searchdomain, cloudInit, want.searchdomain)
	}
	if cur.CIUser != want.ciuser {
		add("ciuser", cur.CIUser, want.ciuser, cloudInit, want.ciuser)
	}
	if have := decodeSSHKeys(cur.SSHKeys); !slices.Equal(have, keyLines(want.sshkeys)) {
		add("sshkeys", strings.Join(have, "\n"), want.sshkeys, cloudInit, pve.EncodeSSHKeys(keyLines(want.sshkeys)...))
	}
	if !sameTags(cur.Tags, want.tags) {
		add("tags", cur.Tags, want.tags, live, want.tags)
	}
	if strings.TrimSpace(cur.Description) != strings.TrimSpace(want.description) {
		add("description", cur.Description, want.description, live, want.description)
	}
	return out
}

// options turns changes into the config request's parameters.
func options(cs []change) []pve.VirtualMachineOption {
	out := make([]pve.VirtualMachineOption, len(cs))
	for i, c := range cs {
		out[i] = pve.VirtualMachineOption{Name: c.key, Value: c.value}
	}
	return out
}

// keyLines splits authorized_keys text into its non-empty lines, sorted.
func keyLines(s string) []string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

// decodeSSHKeys reads the sshkeys value of a VM config (URL-encoded as
// Proxmox stores it).
func decodeSSHKeys(s string) []string {
	if d, err := url.PathUnescape(s); err == nil {
		s = d
	}
	return keyLines(s)
}

// parsePropString parses a Proxmox property string, "virtio=BC:24:11:00:00:01,bridge=vmbr0":
// key=value pairs separated by ','. A part without '=' is returned under
// the key "" (the default key, e.g. the volume of a disk).
func parsePropString(s string) map[string]string {
	out := map[string]string{}
	for p := range strings.SplitSeq(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			out[""] = p
			continue
		}
		out[k] = v
	}
	return out
}

func samePropString(a, b string) bool {
	pa, pb := parsePropString(a), parsePropString(b)
	if len(pa) != len(pb) {
		return false
	}
	for k, v := range pa {
		if w, ok := pb[k]; !ok || !strings.EqualFold(v, w) {
			return false
		}
	}
	return true
}

// diskKeys are the disk buses in the order a boot disk is looked for.
var diskKeys = []string{"scsi", "virtio", "sata", "ide"}

// deviceValue returns the config value of a device key (scsi0, net0, ide2).
func deviceValue(cfg *pve.VirtualMachineConfig, key string) string {
	for _, m := range []map[string]string{cfg.SCSIs, cfg.VirtIOs, cfg.SATAs, cfg.IDEs, cfg.Nets} {
		if v, ok := m[key]; ok {
			return v
		}
	}
	return ""
}

// isCDROM reports whether a drive value is a CD-ROM or the cloud-init drive.
func isCDROM(v string) bool {
	return strings.Contains(v, "media=cdrom") || isCloudInitDrive(v)
}

// isCloudInitDrive reports whether a drive value is a cloud-init drive
// ("local-lvm:vm-9000-cloudinit,media=cdrom").
func isCloudInitDrive(v string) bool {
	vol := parsePropString(v)[""]
	return strings.Contains(vol, "cloudinit")
}

// hasCloudInitDrive reports whether a VM config has a cloud-init drive.
func hasCloudInitDrive(cfg *pve.VirtualMachineConfig) bool {
	for _, m := range []map[string]string{cfg.IDEs, cfg.SCSIs, cfg.SATAs, cfg.VirtIOs} {
		for _, v := range m {
			if isCloudInitDrive(v) {
				return true
			}
		}
	}
	return false
}

// agentEnabled reports whether a VM config enables the QEMU guest agent
// ("1", "enabled=1,fstrim_cloned_disks=1").
func agentEnabled(cfg *pve.VirtualMachineConfig) bool {
	p := parsePropString(cfg.Agent)
	v, ok := p["enabled"]
	if !ok {
		v = p[""]
	}
	return v == "1" || v == "true" || v == "on" || v == "yes"
}

// bootDisk finds the VM's boot disk: the first disk of the boot order that
// is not a CD-ROM, else the first disk present of scsi0, virtio0, sata0,
// ide0.
func bootDisk(cfg *pve.VirtualMachineConfig) (key, value string, ok bool) {
	if order, found := parsePropString(cfg.Boot)["order"]; found {
		for dev := range strings.SplitSeq(order, ";") {
			if v := deviceValue(cfg, dev); v != "" && !strings.HasPrefix(dev, "net") && !isCDROM(v) {
				return dev, v, true
			}
		}
	}
	for _, bus := range diskKeys {
		k := bus + "0"
		if v := deviceValue(cfg, k); v != "" && !isCDROM(v) {
			return k, v, true
		}
	}
	return "", "", false
}

// diskBytes reads the size of a disk value ("...,size=2252M"); ok is false
// when it has none.
func diskBytes(v string) (int64, bool) {
	s, found := parsePropString(v)["size"]
	if !found || s == "" {
		return 0, false
	}
	mult := int64(1)
	switch s[len(s)-1] {
	case 'K', 'k':
		mult = 1 << 10
	case 'M', 'm':
		mult = 1 << 20
	case 'G', 'g':
		mult = 1 << 30
	case 'T', 't':
		mult = 1 << 40
	}
	if mult != 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return int64(n * float64(mult)), true
}

// net0MAC reads the MAC address of net0 ("virtio=BC:24:11:3A:5F:01,bridge=vmbr0").
func net0MAC(cfg *pve.VirtualMachineConfig) string {
	for k, v := range parsePropString(cfg.Nets["net0"]) {
		switch k {
		case "virtio", "e1000", "e1000e", "rtl8139", "vmxnet3", "macaddr":
			return v
		}
	}
	return ""
}
