package proxmox

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"

	pve "github.com/luthermonson/go-proxmox"
)

func TestIPConfig(t *testing.T) {
	for _, tt := range []struct {
		addr, gw, want string
	}{
		{"10.200.0.11/24", "10.200.0.1", "ip=10.200.0.11/24,gw=10.200.0.1"},
		{"192.168.50.10/23", "192.168.50.254", "ip=192.168.50.10/23,gw=192.168.50.254"},
		{"10.0.0.5/8", "", "ip=10.0.0.5/8"},
	} {
		var gw netip.Addr
		if tt.gw != "" {
			gw = netip.MustParseAddr(tt.gw)
		}
		if got := IPConfig(netip.MustParsePrefix(tt.addr), gw); got != tt.want {
			t.Errorf("IPConfig(%s, %s) = %q, want %q", tt.addr, tt.gw, got, tt.want)
		}
	}
}

// configJSON decodes a config the way go-proxmox does from the API.
func configJSON(t *testing.T, s string) *pve.VirtualMachineConfig {
	t.Helper()
	var c pve.VirtualMachineConfig
	if err := json.Unmarshal([]byte(s), &c); err != nil {
		t.Fatal(err)
	}
	return &c
}

const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG9yJc1Wvv0cX0rBa9dXn9cFp7XEjyd5PjlqH6Qv5Dx0 kthw@ws"

func testSettings() settings {
	return settings{
		name: "cp-1", cores: 2, memoryMiB: 2048, diskGiB: 20,
		ipconfig0: "ip=10.200.0.11/24,gw=10.200.0.1", nameserver: "10.200.0.1 1.1.1.1", searchdomain: "lab.example",
		ciuser: "kthw", sshkeys: testKey, tags: "kthw;lab;control-plane",
		description: Marker{Cluster: "lab", Node: "cp-1", Role: "control-plane"}.Description(),
	}
}

func keysOf(cs []change) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.key)
	}
	return out
}

func TestDiffConfigFreshClone(t *testing.T) {
	// A fresh clone: the template's config with the clone's name and
	// description.
	cur := configJSON(t, `{"name":"cp-1","cores":1,"memory":"2048","agent":"1","scsi0":"local-lvm:vm-101-disk-0,size=2G",
		"ide2":"local-lvm:vm-101-cloudinit,media=cdrom","net0":"virtio=BC:24:11:3A:5F:01,bridge=vmbr0",
		"description":"kthw node cp-1 of cluster lab (control-plane)\nMade by kthw-controller"}`)
	cs := diffConfig(cur, testSettings())
	want := []string{"cores", "ipconfig0", "nameserver", "searchdomain", "ciuser", "sshkeys", "tags", "description"}
	if got := keysOf(cs); !slices.Equal(got, want) {
		t.Fatalf("changes %v, want %v", got, want)
	}
	for _, c := range cs {
		switch c.key {
		case "cores":
			if c.kind != hardware || c.value != 2 {
				t.Errorf("cores change %+v", c)
			}
		case "sshkeys":
			if c.kind != cloudInit || c.value != pve.EncodeSSHKeys(testKey) || strings.Contains(c.value.(string), "+") {
				t.Errorf("sshkeys change %+v: want the key URL-encoded with %%20, no '+'", c)
			}
		case "tags", "description":
			if c.kind != live {
				t.Errorf("%s is not a live change", c.key)
			}
		}
	}
}

func TestDiffConfigSameMeaning(t *testing.T) {
	// What Proxmox gives back for the settings: tags reordered, keys of
	// ipconfig0 in another order, sshkeys URL-encoded, a description with
	// a trailing newline, memory as a string.
	cur := configJSON(t, `{"name":"cp-1","cores":2,"memory":"2048","ciuser":"kthw",
		"ipconfig0":"gw=10.200.0.1,ip=10.200.0.11/24","nameserver":"10.200.0.1 1.1.1.1","searchdomain":"lab.example",
		"sshkeys":"`+pve.EncodeSSHKeys(testKey)+`%0A","tags":"control-plane;kthw;lab",
		"description":"`+strings.ReplaceAll(testSettings().description, "\n", `\n`)+`\n"}`)
	if cs := diffConfig(cur, testSettings()); len(cs) != 0 {
		t.Fatalf("changes %v, want none", cs)
	}
}

func TestDiffConfigHostDefaults(t *testing.T) {
	// No nameserver or search domain in the cluster file: whatever the VM
	// has is left.
	want := testSettings()
	want.nameserver, want.searchdomain = "", ""
	cur := configJSON(t, `{"name":"cp-1","cores":2,"memory":2048,"ciuser":"kthw","ipconfig0":"ip=10.200.0.11/24,gw=10.200.0.1",
		"nameserver":"9.9.9.9","sshkeys":"`+pve.EncodeSSHKeys(testKey)+`","tags":"kthw;lab;control-plane",
		"description":"`+strings.ReplaceAll(want.description, "\n", `\n`)+`"}`)
	if cs := diffConfig(cur, want); len(cs) != 0 {
		t.Fatalf("changes %v, want none", cs)
	}
	cur.Cores = nil // Proxmox's default, 1
	cur.Memory = 0  // Proxmox's default, 512
	cs := diffConfig(cur, want)
	if got := keysOf(cs); !slices.Equal(got, []string{"cores", "memory"}) || cs[0].from != "1" || cs[1].from != "512" {
		t.Fatalf("changes %v, want cores 1 -> 2 and memory 512 -> 2048", cs)
	}
}

func TestBootDiskAndSize(t *testing.T) {
	for _, tt := range []struct {
		name, cfg, key string
		bytes          int64
	}{
		{"boot order", `{"boot":"order=scsi0;ide2;net0","scsi0":"local-lvm:vm-101-disk-0,size=2G","ide2":"local-lvm:vm-101-cloudinit,media=cdrom"}`, "scsi0", 2 << 30},
		{"cdrom first", `{"boot":"order=ide2;virtio0","virtio0":"ceph:vm-101-disk-0,size=2252M","ide2":"local:iso/x.iso,media=cdrom"}`, "virtio0", 2252 << 20},
		{"no boot order", `{"scsi0":"local-lvm:vm-101-disk-0,size=40G"}`, "scsi0", 40 << 30},
		{"terabytes", `{"scsi0":"local-lvm:vm-101-disk-0,size=1T"}`, "scsi0", 1 << 40},
		{"fraction", `{"sata0":"local:101/vm-101-disk-0.qcow2,size=1.5G"}`, "sata0", 3 << 29},
	} {
		t.Run(tt.name, func(t *testing.T) {
			key, v, ok := bootDisk(configJSON(t, tt.cfg))
			if !ok || key != tt.key {
				t.Fatalf("bootDisk = %q, %v; want %s", key, ok, tt.key)
			}
			if b, ok := diskBytes(v); !ok || b != tt.bytes {
				t.Fatalf("diskBytes(%q) = %d, %v; want %d", v, b, ok, tt.bytes)
			}
		})
	}
	if _, _, ok := bootDisk(configJSON(t, `{"ide2":"local-lvm:vm-101-cloudinit,media=cdrom"}`)); ok {
		t.Fatal("found a boot disk in a config with only a cloud-init drive")
	}
	if _, ok := diskBytes("local-lvm:vm-101-disk-0"); ok {
		t.Fatal("diskBytes without size= succeeded")
	}
}

func TestTemplateChecks(t *testing.T) {
	good := configJSON(t, `{"agent":"1","ide2":"local-lvm:vm-9000-cloudinit,media=cdrom","scsi0":"local-lvm:base-9000-disk-0,size=2G"}`)
	if !hasCloudInitDrive(good) || !agentEnabled(good) {
		t.Fatal("good template judged unfit")
	}
	for _, cfg := range []string{
		`{"agent":"1","ide2":"local:iso/debian.iso,media=cdrom"}`,
		`{"agent":"1","ide2":"none,media=cdrom"}`,
		`{"agent":"1"}`,
	} {
		if hasCloudInitDrive(configJSON(t, cfg)) {
			t.Errorf("hasCloudInitDrive(%s) = true", cfg)
		}
	}
	if !hasCloudInitDrive(configJSON(t, `{"scsi1":"ceph:vm-9000-cloudinit,media=cdrom"}`)) {
		t.Error("a cloud-init drive on scsi1 not found")
	}
	for cfg, want := range map[string]bool{
		`{"agent":"1"}`: true, `{"agent":"enabled=1,fstrim_cloned_disks=1"}`: true, `{"agent":"1,type=virtio"}`: true,
		`{"agent":"0"}`: false, `{"agent":"enabled=0"}`: false, `{}`: false,
	} {
		if got := agentEnabled(configJSON(t, cfg)); got != want {
			t.Errorf("agentEnabled(%s) = %v, want %v", cfg, got, want)
		}
	}
}

func TestNet0MAC(t *testing.T) {
	for cfg, want := range map[string]string{
		`{"net0":"virtio=BC:24:11:3A:5F:01,bridge=vmbr0"}`:           "BC:24:11:3A:5F:01",
		`{"net0":"bridge=vmbr0,e1000=bc:24:11:3a:5f:02,firewall=1"}`: "bc:24:11:3a:5f:02",
		`{"net1":"virtio=BC:24:11:3A:5F:03,bridge=vmbr0"}`:           "",
	} {
		if got := net0MAC(configJSON(t, cfg)); got != want {
			t.Errorf("net0MAC(%s) = %q, want %q", cfg, got, want)
		}
	}
}
