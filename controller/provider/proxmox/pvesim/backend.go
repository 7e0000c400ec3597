package pvesim

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// Backend is what a started VM runs on. The simulator calls Start when a
// start (or reboot) task brings the VM up, Stop when it goes down and
// Destroy when the VM is deleted. Calls for one VM never overlap.
type Backend interface {
	// Start boots the guest with the VM's cloud-init settings and returns
	// what its guest agent reports. An error fails the start task with
	// "start failed: <error>" and the VM stays stopped.
	Start(ctx context.Context, vm VMInfo) (GuestInfo, error)
	// Stop powers the guest off.
	Stop(ctx context.Context, vmid int) error
	// Destroy removes whatever backs the VM.
	Destroy(ctx context.Context, vmid int) error
}

// AgentProber is a Backend whose running guests can gain a guest agent
// after they booted: while a running VM's agent does not answer, the
// simulator asks whether the guest has one now, the way qemu-guest-agent
// answers as soon as its package is installed (its unit starts on the
// agent's virtio port).
type AgentProber interface {
	GuestAgentInstalled(ctx context.Context, vmid int) bool
}

// VMInfo is a VM as cloud-init would see it on its NoCloud drive.
type VMInfo struct {
	VMID int
	Node string
	// Name is the VM name (the guest's hostname).
	Name string
	// MAC is net0's MAC address as configured (upper case).
	MAC string
	// Address and Gateway come from ipconfig0 (zero when absent or dhcp).
	Address netip.Prefix
	Gateway netip.Addr
	// DHCP is set when ipconfig0 asks for ip=dhcp or sets no address
	// at all (Proxmox's cloud-init default).
	DHCP bool
	// Nameservers and SearchDomain from nameserver/searchdomain.
	Nameservers  []string
	SearchDomain string
	// User is ciuser; SSHKeys are the decoded sshkeys, one key a line.
	User    string
	SSHKeys []string
	// HasCloudInit reports whether the VM has a cloud-init drive; without
	// one a real guest would not get any of the settings above.
	HasCloudInit bool
	// Disk is the boot disk.
	Disk DiskInfo
	// Config is the whole VM config, Proxmox-formatted.
	Config map[string]string
}

// DiskInfo is what the simulator knows of a VM's boot disk.
type DiskInfo struct {
	// Volume is its volume ID; empty when the VM has no disk.
	Volume string
	// GuestAgent says the disk's operating system carries
	// qemu-guest-agent, as far as the simulator knows: the import image
	// it came from did (ImportImage.GuestAgent). What a guest installs
	// later only its backend sees.
	GuestAgent bool
	// Lineage are the VMIDs whose disks this disk was cloned from,
	// nearest first (a clone of template 9000: [9000]).
	Lineage []int
}

// GuestInfo is what the guest agent reports.
type GuestInfo struct {
	// Interfaces other than lo, in the order the agent lists them.
	Interfaces []GuestInterface
	// Hostname for get-host-name; empty means the VM name.
	Hostname string
	// Files the agent can read (agent/file-read), by absolute path; a
	// path not here fails as a missing file does.
	Files map[string]string
	// NoGuestAgent: the guest has no qemu-guest-agent, so none answers
	// ("QEMU guest agent is not running") though the VM's agent option
	// is on.
	NoGuestAgent bool
	// HostKeys are the SSH host public keys (authorized_keys format)
	// cloud-init prints on the serial console at the instance's first
	// boot; empty means the one in Files[HostKeyFile].
	HostKeys []string
}

// Files a cloud-init guest has once it booted, which kthw's provider reads
// through the guest agent.
const (
	// BootFinishedFile is written by cloud-init's last stage.
	BootFinishedFile = "/var/lib/cloud/instance/boot-finished"
	// HostKeyFile is the guest's SSH ed25519 host public key.
	HostKeyFile = "/etc/ssh/ssh_host_ed25519_key.pub"
)

// BootFinished renders boot-finished as cloud-init writes it:
// "<uptime> - <RFC 2822 date> - v. <version>".
func BootFinished(uptime time.Duration, at time.Time) string {
	return fmt.Sprintf("%.2f - %s - v. 22.4.2\n", uptime.Seconds(), at.UTC().Format("Mon, 02 Jan 2006 15:04:05 -0700"))
}

// GuestInterface is one NIC as network-get-interfaces reports it.
type GuestInterface struct {
	Name string
	// MAC as the agent reports it (the real agent uses lower case).
	MAC       string
	Addresses []netip.Prefix
}

// DefaultBackend reports the ipconfig0 address (or, for ip=dhcp, an address
// from 10.99.0.0/16 derived from the VMID) on "ens18" with net0's MAC in
// lower case, plus the IPv6 link-local address a real guest has. Its agent
// reads cloud-init's boot-finished and an SSH host public key derived from
// the VM's smbios1 uuid (stable across restarts, new for every clone, as
// the keys a guest generates on its first boot). It boots nothing.
type DefaultBackend struct{}

var _ Backend = DefaultBackend{}

// Start implements Backend.
func (DefaultBackend) Start(_ context.Context, vm VMInfo) (GuestInfo, error) {
	gi := GuestInterface{Name: "ens18", MAC: strings.ToLower(vm.MAC)}
	switch {
	case vm.Address.IsValid():
		gi.Addresses = append(gi.Addresses, vm.Address)
	case vm.DHCP || !vm.HasCloudInit:
		a := netip.AddrFrom4([4]byte{10, 99, byte(vm.VMID >> 8), byte(vm.VMID)})
		gi.Addresses = append(gi.Addresses, netip.PrefixFrom(a, 16))
	}
	if ll, ok := linkLocal(vm.MAC); ok {
		gi.Addresses = append(gi.Addresses, ll)
	}
	files := map[string]string{BootFinishedFile: BootFinished(3*time.Second, time.Now())}
	if pub, err := DefaultHostKey(vm); err == nil {
		files[HostKeyFile] = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))) + " root@" + hostLabel(vm.Name) + "\n"
	}
	return GuestInfo{Interfaces: []GuestInterface{gi}, Files: files, NoGuestAgent: vm.Disk.Volume != "" && !vm.Disk.GuestAgent}, nil
}

// DefaultHostKey is the SSH host key DefaultBackend's guests have: derived
// from the VM's smbios1 uuid and VMID.
func DefaultHostKey(vm VMInfo) (ssh.PublicKey, error) {
	uuid, _ := parseProps(vm.Config["smbios1"]).get("uuid")
	seed := sha256.Sum256([]byte(fmt.Sprintf("pvesim host key %d %s", vm.VMID, uuid)))
	priv := ed25519.NewKeyFromSeed(seed[:])
	return ssh.NewPublicKey(priv.Public())
}

// hostLabel is the host name a guest derives from the VM name: its first
// label.
func hostLabel(name string) string {
	h, _, _ := strings.Cut(name, ".")
	return h
}

// Stop implements Backend.
func (DefaultBackend) Stop(context.Context, int) error { return nil }

// Destroy implements Backend.
func (DefaultBackend) Destroy(context.Context, int) error { return nil }

// linkLocal returns the EUI-64 IPv6 link-local address of a MAC.
func linkLocal(mac string) (netip.Prefix, bool) {
	var b [6]byte
	if _, err := fmt.Sscanf(strings.ToLower(mac), "%02x:%02x:%02x:%02x:%02x:%02x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]); err != nil {
		return netip.Prefix{}, false
	}
	a := [16]byte{0xfe, 0x80, 8: b[0] ^ 0x02, 9: b[1], 10: b[2], 11: 0xff, 12: 0xfe, 13: b[3], 14: b[4], 15: b[5]}
	return netip.PrefixFrom(netip.AddrFrom16(a), 64), true
}

// vmInfo extracts the cloud-init view of a config.
func vmInfo(vmid int, node string, conf map[string]string) VMInfo {
	info := VMInfo{VMID: vmid, Node: node, Name: conf["name"], User: conf["ciuser"], SearchDomain: conf["searchdomain"], Config: cloneMap(conf)}
	if info.Name == "" {
		info.Name = fmt.Sprintf("VM%d", vmid)
	}
	if n, ok := parseNet(conf["net0"]); ok {
		info.MAC = n.mac
	}
	ipc := parseProps(conf["ipconfig0"])
	_, has6 := ipc.get("ip6")
	if ip, ok := ipc.get("ip"); !ok && !has6 {
		info.DHCP = true // cloud-init's default without an address
	} else if ok {
		if ip == "dhcp" {
			info.DHCP = true
		} else if p, err := netip.ParsePrefix(ip); err == nil {
			info.Address = p
		}
	}
	if gw, ok := ipc.get("gw"); ok {
		if a, err := netip.ParseAddr(gw); err == nil {
			info.Gateway = a
		}
	}
	info.Nameservers = strings.Fields(conf["nameserver"])
	if raw := conf["sshkeys"]; raw != "" {
		if dec, err := url.PathUnescape(raw); err == nil {
			for _, l := range strings.Split(dec, "\n") {
				if l = strings.TrimSpace(l); l != "" {
					info.SSHKeys = append(info.SSHKeys, l)
				}
			}
		}
	}
	for k, v := range conf {
		if isDriveKey(k) && isCloudInitDrive(v) {
			info.HasCloudInit = true
		}
	}
	return info
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
