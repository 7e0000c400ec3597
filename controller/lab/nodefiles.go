package lab

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"
)

// nodeFile is one file Start writes into a node's tree.
type nodeFile struct {
	Path string
	Mode os.FileMode
	Data string
	// Link makes the file a symbolic link to this target instead.
	Link string
}

// markerFile identifies a node's tree from the host, through /proc/<pid>/root, so that a
// container orphaned by a killed systemd-nspawn can be found.
const markerFile = "/etc/kthw-lab-node"

// cgroupUnit remounts the cgroup v1 controllers read-write at boot: systemd-nspawn mounts them
// read-only on a cgroup v1 host, and containerd/runc must create cgroups.
const cgroupUnit = `[Unit]
Description=Remount cgroup v1 controllers read-write (kthw lab node)
DefaultDependencies=no
Before=sysinit.target containerd.service
ConditionPathIsMountPoint=/sys/fs/cgroup

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'for c in /sys/fs/cgroup/*/; do mount -o remount,bind,rw "$$c" || true; done'

[Install]
WantedBy=sysinit.target
`

// aptProxy is the lab's apt proxy and the mirror hosts it serves.
type aptProxy struct {
	url   string
	hosts []string
}

// conf renders apt's proxy configuration: only the mirror hosts go through
// the proxy (it serves nothing else); every other repository a cluster adds
// (pkgs.k8s.io, a local mirror) is fetched directly.
func (p aptProxy) conf() string {
	var b strings.Builder
	b.WriteString("// Written by kthw: the lab's apt proxy serves the host's Debian mirror only.\n")
	for _, h := range p.hosts {
		fmt.Fprintf(&b, "Acquire::http::Proxy::%s %q;\n", h, p.url)
	}
	return b.String()
}

// archiveHosts returns the distinct hosts of the archives' URIs.
func archiveHosts(archives []ResolvedArchive) []string {
	var hosts []string
	for _, a := range archives {
		u, err := url.Parse(a.URI)
		if err != nil || u.Host == "" || slices.Contains(hosts, u.Host) {
			continue
		}
		hosts = append(hosts, u.Host)
	}
	return hosts
}

// nodeFiles renders the files of a node from its spec. proxy is the apt proxy and marker the
// node's marker content.
func nodeFiles(s NodeSpec, pub ssh.PublicKey, proxy aptProxy, marker string) []nodeFile {
	network := fmt.Sprintf("[Match]\nName=host0\n\n[Network]\nAddress=%s\n", s.Address)
	if s.Gateway.IsValid() {
		network += fmt.Sprintf("Gateway=%s\n", s.Gateway)
	}
	network += "LinkLocalAddressing=no\nIPv6AcceptRA=no\n"
	hosts := fmt.Sprintf("127.0.0.1\tlocalhost\n%s\t%s\n\n"+
		"::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
		s.Address.Addr(), s.Hostname)
	authorized := string(s.AuthorizedKeys)
	if !strings.HasSuffix(authorized, "\n") {
		authorized += "\n"
	}
	return []nodeFile{
		{Path: "/etc/hostname", Mode: 0o644, Data: s.Hostname + "\n"},
		{Path: "/etc/hosts", Mode: 0o644, Data: hosts},
		{Path: "/root/.ssh/authorized_keys", Mode: 0o600, Data: authorized},
		{Path: "/etc/ssh/ssh_host_ed25519_key", Mode: 0o600, Data: string(s.HostKey)},
		{Path: "/etc/ssh/ssh_host_ed25519_key.pub", Mode: 0o644, Data: string(ssh.MarshalAuthorizedKey(pub))},
		// Only the pinned key: sshd would otherwise also look for RSA and ECDSA keys.
		{Path: "/etc/ssh/sshd_config.d/00-kthw-hostkey.conf", Mode: 0o644,
			Data: "# Written by kthw: the controller pinned this key before the first connection.\nHostKey /etc/ssh/ssh_host_ed25519_key\n"},
		{Path: "/etc/systemd/network/10-kthw-host0.network", Mode: 0o644, Data: network},
		{Path: "/etc/apt/apt.conf.d/00kthw-proxy", Mode: 0o644, Data: proxy.conf()},
		{Path: "/etc/systemd/system/kthw-cgroup-rw.service", Mode: 0o644, Data: cgroupUnit},
		{Path: "/etc/systemd/system/sysinit.target.wants/kthw-cgroup-rw.service", Link: "/etc/systemd/system/kthw-cgroup-rw.service"},
		{Path: markerFile, Mode: 0o644, Data: marker + "\n"},
	}
}

// writeNodeFiles writes files into the tree at root. Paths resolve inside the tree only: a
// symbolic link planted by the node cannot redirect a write onto the host.
func writeNodeFiles(root string, files []nodeFile) error {
	r, err := os.OpenRoot(root)
	if err != nil {
		return fmt.Errorf("write node files: %w", err)
	}
	defer r.Close()
	for _, f := range files {
		name := strings.TrimPrefix(f.Path, "/")
		if err := r.MkdirAll(path.Dir(name), 0o755); err != nil {
			return fmt.Errorf("write %s: %w", f.Path, err)
		}
		if err := r.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("write %s: %w", f.Path, err)
		}
		if f.Link != "" {
			if err := r.Symlink(f.Link, name); err != nil {
				return fmt.Errorf("write %s: %w", f.Path, err)
			}
			continue
		}
		if err := r.WriteFile(name, []byte(f.Data), f.Mode); err != nil {
			return fmt.Errorf("write %s: %w", f.Path, err)
		}
		if err := r.Chmod(name, f.Mode); err != nil {
			return fmt.Errorf("write %s: %w", f.Path, err)
		}
		if err := r.Lchown(name, 0, 0); err != nil {
			return fmt.Errorf("write %s: %w", f.Path, err)
		}
	}
	// sshd refuses keys below a group- or world-accessible ~/.ssh.
	if err := r.Chmod("root/.ssh", 0o700); err != nil {
		return fmt.Errorf("write /root/.ssh: %w", err)
	}
	return nil
}
