package main

// Light lab nodes for the fan-out benchmark: a network namespace with a veth
// on a host bridge, a private mount, PID, UTS and IPC namespace, an overlay
// root (the lab's root filesystem with the node-prep packages in one more
// layer) and OpenSSH sshd chrooted into it. No systemd: about 10 MB per node
// instead of an nspawn node's ~75 MB (15 MB unshared), and no inotify
// instances, which bound nspawn nodes on this host (see fanout.go).
//
// The node's PID 1 is this program itself, re-executed with lightInitArg
// inside the new namespaces: it mounts the overlay (in its own mount
// namespace, so nothing is left on the host), /proc (with /proc/sys read-only
// except net, as lab nodes have it), /sys, a minimal /dev, /run and /tmp, sets
// the host name, starts sshd and reaps orphans. Killing it ends the PID
// namespace and with it every process of the node; the network namespace and
// its veth pair go with the last process. Nothing else is made on the host
// but the node's directory.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/kthw/kthw/controller/lab"
	"github.com/kthw/kthw/controller/workspace"
	"github.com/kthw/kthw/distro/pkg"
)

// lightInitArg, as the first argument, makes this program a light node's PID 1.
const lightInitArg = "__kthw-bench-light-node-init"

// lightVethPrefix starts the host-side veth names of light nodes.
const lightVethPrefix = "kbl"

// lightNode is one running light node.
type lightNode struct {
	name string
	addr netip.Prefix
	dir  string
	veth string
	cmd  *exec.Cmd
}

// lightLab makes light nodes on one bridge.
type lightLab struct {
	dir    string // nodes/ and layers/
	lab    *lab.Lab
	bridge string
	lowers string // overlay lowerdir: the package layer, then the lab image
	nodes  []*lightNode
	log    io.Writer
}

// newLightLab returns light nodes on bridge with addresses in prefix (the
// bridge's own address), over the lab image and a layer with pkgs installed.
func newLightLab(ctx context.Context, dir, imageDir, bridge string, prefix netip.Prefix, pkgs []pkgSpec, log io.Writer) (*lightLab, error) {
	// The lab package makes the bridge and finds (or builds) the image; no
	// apt proxy is started (light nodes get their packages from a layer).
	l, err := lab.New(lab.Config{Dir: filepath.Join(dir, "lab"), ImageDir: imageDir, Bridge: bridge, BridgeAddress: prefix, ProxyPort: 3162})
	if err != nil {
		return nil, err
	}
	ll := &lightLab{dir: dir, lab: l, bridge: bridge, log: log}
	if err := ll.cleanStale(ctx); err != nil {
		return nil, err
	}
	img, err := l.EnsureImage(ctx)
	if err != nil {
		return nil, err
	}
	layer, err := ll.ensureLayer(ctx, img, pkgs)
	if err != nil {
		return nil, err
	}
	ll.lowers = layer + ":" + img.Dir
	if err := l.EnsureNetwork(ctx); err != nil {
		return nil, err
	}
	return ll, nil
}

// pkgSpec is a package of the node-prep set, with the version it must match.
type pkgSpec struct{ name, version string }

// ensureLayer returns an overlay layer over img with pkgs installed by apt in
// a chroot (services not started), built once and cached by image and
// package list with the versions they must match.
func (ll *lightLab) ensureLayer(ctx context.Context, img lab.Image, pkgs []pkgSpec) (string, error) {
	var names, specs []string
	for _, p := range pkgs {
		names = append(names, p.name)
		spec := p.name
		if p.version != "" {
			spec += "=" + p.version
		}
		specs = append(specs, spec)
	}
	key := img.Hash + "-" + strings.Join(specs, "-")
	layer := filepath.Join(ll.dir, "layers", key)
	if isDir(layer) {
		return layer, nil
	}
	tmp := layer + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return "", err
	}
	for _, d := range []string{"upper", "work", "merged"} {
		if err := os.MkdirAll(filepath.Join(tmp, d), 0o755); err != nil {
			return "", err
		}
	}
	fmt.Fprintf(ll.log, "bench: building the light node package layer (%s) in %s\n", strings.Join(names, ", "), layer)
	// A private mount namespace: the build's mounts vanish with the shell.
	script := `set -eu
mount --make-rprivate /
m=$1/merged
mount -t overlay overlay -o "lowerdir=$2,upperdir=$1/upper,workdir=$1/work" "$m"
mount -t proc proc "$m/proc"
mount --rbind /dev "$m/dev"
touch "$m/etc/resolv.conf"
mount --bind /etc/resolv.conf "$m/etc/resolv.conf"
printf '#!/bin/sh\nexit 101\n' > "$m/usr/sbin/policy-rc.d"
chmod 755 "$m/usr/sbin/policy-rc.d"
shift 2
chroot "$m" apt-get update -q
chroot "$m" apt-get install -y -q "$@"
rm -f "$m/usr/sbin/policy-rc.d"
chroot "$m" apt-get clean
rm -rf "$m"/var/lib/apt/lists/*
umount "$m/etc/resolv.conf"
rm -f "$m/etc/resolv.conf"
`
	cmd := exec.CommandContext(ctx, "sh", append([]string{"-c", script, "sh", tmp, img.Dir}, names...)...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C.UTF-8")
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build light node layer: %w\n%s", err, tailLines(string(out), 20))
	}
	// The layer is the overlay's upper dir; check what it installed.
	st, err := dpkgStatus(filepath.Join(tmp, "upper", "var/lib/dpkg/status"))
	if err != nil {
		return "", fmt.Errorf("build light node layer: %w", err)
	}
	for _, p := range pkgs {
		v, ok := st[p.name]
		if !ok && p.name == "ca-certificates" {
			continue // in the image already
		}
		if !ok || !pkg.MatchVersion(v, p.version) {
			return "", fmt.Errorf("build light node layer: %s is %q, want %q", p.name, v, p.version)
		}
	}
	if err := os.Rename(filepath.Join(tmp, "upper"), layer); err != nil {
		return "", err
	}
	if err := os.RemoveAll(tmp); err != nil {
		return "", err
	}
	// Layers of older images or package lists are of no further use.
	old, _ := filepath.Glob(filepath.Join(ll.dir, "layers", "*"))
	for _, o := range old {
		if o != layer {
			fmt.Fprintf(ll.log, "bench: removing the old light node layer %s\n", o)
			if err := os.RemoveAll(o); err != nil {
				return "", err
			}
		}
	}
	return layer, nil
}

// dpkgStatus reads installed package versions from a dpkg status file.
func dpkgStatus(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, para := range strings.Split(string(b), "\n\n") {
		var name, version, status string
		for _, l := range strings.Split(para, "\n") {
			k, v, _ := strings.Cut(l, ": ")
			switch k {
			case "Package":
				name = v
			case "Version":
				version = v
			case "Status":
				status = v
			}
		}
		if name != "" && strings.HasSuffix(status, " installed") {
			out[name] = version
		}
	}
	return out, nil
}

// start boots light nodes for specs in parallel, authorizes the workspace's
// key and pins their host keys in it.
func (ll *lightLab) start(ctx context.Context, ws *workspace.Workspace, specs []lightSpec) error {
	type res struct {
		n   *lightNode
		pub string
		err error
	}
	ch := make(chan res)
	sem := make(chan struct{}, 8)
	for _, s := range specs {
		go func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			n, pub, err := ll.startNode(ctx, s, ws.PublicKey)
			ch <- res{n, pub, err}
		}()
	}
	var errs []error
	for range specs {
		r := <-ch
		if r.n != nil {
			ll.nodes = append(ll.nodes, r.n)
		}
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		if err := ws.PinHostKey(netip.AddrPortFrom(r.n.addr.Addr(), 22).String(), r.pub); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// lightSpec names one light node.
type lightSpec struct {
	name  string
	index int
	addr  netip.Prefix
}

func (ll *lightLab) startNode(ctx context.Context, s lightSpec, authorized []byte) (*lightNode, string, error) {
	n := &lightNode{name: s.name, addr: s.addr, dir: filepath.Join(ll.dir, "nodes", s.name), veth: lightVethPrefix + strconv.Itoa(s.index)}
	if err := os.RemoveAll(n.dir); err != nil {
		return nil, "", err
	}
	upper := filepath.Join(n.dir, "upper")
	for _, d := range []string{upper, filepath.Join(n.dir, "work"), filepath.Join(n.dir, "root")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, "", err
		}
	}
	priv, pub, err := lab.GenerateHostKey()
	if err != nil {
		return nil, "", err
	}
	hosts := fmt.Sprintf("127.0.0.1\tlocalhost\n%s\t%s\n\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n", s.addr.Addr(), s.name)
	files := []struct {
		path string
		mode os.FileMode
		data string
	}{
		{"/etc/hostname", 0o644, s.name + "\n"},
		{"/etc/hosts", 0o644, hosts},
		{"/root/.ssh/authorized_keys", 0o600, string(authorized)},
		{"/etc/ssh/ssh_host_ed25519_key", 0o600, string(priv)},
		{"/etc/ssh/ssh_host_ed25519_key.pub", 0o644, string(ssh.MarshalAuthorizedKey(pub))},
		{"/etc/ssh/sshd_config.d/00-kthw-hostkey.conf", 0o644, "HostKey /etc/ssh/ssh_host_ed25519_key\n"},
	}
	for _, f := range files {
		p := filepath.Join(upper, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, "", err
		}
		if err := os.WriteFile(p, []byte(f.data), f.mode); err != nil {
			return nil, "", err
		}
	}
	if err := os.Chmod(filepath.Join(upper, "root/.ssh"), 0o700); err != nil {
		return nil, "", err
	}
	logf, err := os.Create(filepath.Join(n.dir, "node.log"))
	if err != nil {
		return nil, "", err
	}
	defer logf.Close()
	self, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	n.cmd = exec.Command(self, lightInitArg, filepath.Join(n.dir, "root"), ll.lowers, upper, filepath.Join(n.dir, "work"), s.name)
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	n.cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWNET | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC,
		Pdeathsig:  syscall.SIGKILL,
		Setpgid:    true,
	}
	if err := n.cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("start light node %s: %w", s.name, err)
	}
	if err := os.WriteFile(filepath.Join(n.dir, "pid"), []byte(strconv.Itoa(n.cmd.Process.Pid)), 0o644); err != nil {
		return n, "", err
	}
	if err := ll.plumb(n); err != nil {
		return n, "", fmt.Errorf("light node %s: %w", s.name, err)
	}
	if err := waitBanner(ctx, netip.AddrPortFrom(s.addr.Addr(), 22).String(), 30*time.Second); err != nil {
		return n, "", fmt.Errorf("light node %s: %w\n%s", s.name, err, tailFile(filepath.Join(n.dir, "node.log"), 10))
	}
	return n, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))), nil
}

// plumb gives the node its veth pair: the host side on the bridge, eth0 with
// the node's address inside its network namespace.
func (ll *lightLab) plumb(n *lightNode) error {
	br, err := netlink.LinkByName(ll.bridge)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", ll.bridge, err)
	}
	pid := n.cmd.Process.Pid
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: n.veth, MasterIndex: br.Attrs().Index},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsPid(pid),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s: %w", n.veth, err)
	}
	host, err := netlink.LinkByName(n.veth)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return err
	}
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		return err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	for _, name := range []string{"lo", "eth0"} {
		l, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("%s in the node: %w", name, err)
		}
		if name == "eth0" {
			a := n.addr
			if err := h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), 32)}}); err != nil {
				return fmt.Errorf("address %s: %w", a, err)
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			return err
		}
	}
	return nil
}

// stopAll kills every node's PID 1 (the kernel ends the rest of its PID
// namespace), waits for the veths to go and removes the node directories.
func (ll *lightLab) stopAll() error {
	var errs []error
	for _, n := range ll.nodes {
		if n.cmd != nil && n.cmd.Process != nil {
			_ = n.cmd.Process.Kill()
			_ = n.cmd.Wait()
		}
	}
	for _, n := range ll.nodes {
		if err := waitLinkGone(n.veth, 10*time.Second); err != nil {
			errs = append(errs, err)
		}
		if err := removeNodeDir(n.dir); err != nil {
			errs = append(errs, err)
		}
	}
	ll.nodes = nil
	return errors.Join(errs...)
}

// close stops the nodes and removes the bridge.
func (ll *lightLab) close(ctx context.Context) error {
	err := ll.stopAll()
	return errors.Join(err, ll.lab.RemoveNetwork(ctx), os.RemoveAll(filepath.Join(ll.dir, "nodes")))
}

// cleanStale ends light nodes a killed benchmark left: their PID 1 is
// recognized by its command line (this program's init argument and the
// node's directory), then links and directories are removed.
func (ll *lightLab) cleanStale(ctx context.Context) error {
	nodesDir := filepath.Join(ll.dir, "nodes")
	ents, err := os.ReadDir(nodesDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		dir := filepath.Join(nodesDir, e.Name())
		if b, err := os.ReadFile(filepath.Join(dir, "pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				argv := procCmdline(pid)
				if len(argv) > 2 && argv[1] == lightInitArg && argv[2] == filepath.Join(dir, "root") {
					fmt.Fprintf(ll.log, "bench: killing a stale light node %s (pid %d)\n", e.Name(), pid)
					_ = syscall.Kill(pid, syscall.SIGKILL)
					waitPIDGone(pid, 10*time.Second)
				}
			}
		}
		if err := removeNodeDir(dir); err != nil {
			errs = append(errs, err)
		}
	}
	links, err := netlink.LinkList()
	if err != nil {
		return err
	}
	for _, l := range links {
		if name := l.Attrs().Name; strings.HasPrefix(name, lightVethPrefix) && l.Type() == "veth" {
			if master, err := netlink.LinkByIndex(l.Attrs().MasterIndex); err == nil && master.Attrs().Name == ll.bridge {
				errs = append(errs, netlink.LinkDel(l))
			}
		}
	}
	return errors.Join(errs...)
}

// removeNodeDir removes a node directory, unmounting what is mounted below
// it first (nothing should be: the node's mounts live in its own namespace).
func removeNodeDir(dir string) error {
	mounts, err := lab.MountsUnder(dir)
	if err != nil {
		return err
	}
	slices.Reverse(mounts)
	for _, m := range mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", m, err)
		}
	}
	return os.RemoveAll(dir)
}

func waitLinkGone(name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return nil
		}
		if time.Now().After(deadline) {
			return netlink.LinkDel(l)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitPIDGone(pid int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func procCmdline(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// waitBanner waits until an SSH server answers on target.
func waitBanner(ctx context.Context, target string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		d := net.Dialer{Timeout: 500 * time.Millisecond}
		c, err := d.DialContext(ctx, "tcp", target)
		if err == nil {
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, 4)
			_, err = io.ReadFull(c, buf)
			c.Close()
			if err == nil && string(buf) == "SSH-" {
				return nil
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("sshd on %s did not answer within %s (last: %v)", target, timeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// lightInit is a light node's PID 1 (see the file comment). args: root,
// overlay lowerdir, upperdir, workdir, host name.
func lightInit(args []string) {
	if len(args) != 5 {
		fmt.Fprintln(os.Stderr, "light init: want root lower upper work hostname")
		os.Exit(2)
	}
	root, lower, upper, work, hostname := args[0], args[1], args[2], args[3], args[4]
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "light init: %s: %v\n", what, err)
		os.Exit(1)
	}
	const nsd = unix.MS_NOSUID | unix.MS_NODEV
	mounts := []struct {
		src, target, fstype string
		flags               uintptr
		data                string
	}{
		{"", "/", "", unix.MS_REC | unix.MS_PRIVATE, ""},
		{"overlay", root, "overlay", 0, "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work},
		{"proc", root + "/proc", "proc", nsd | unix.MS_NOEXEC, ""},
		// /proc/sys read-only except net.*, as on lab nodes: node
		// preparation must not change the host kernel's global settings.
		{root + "/proc/sys", root + "/proc/sys", "", unix.MS_BIND, ""},
		{"", root + "/proc/sys", "", unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY | nsd | unix.MS_NOEXEC, ""},
		{root + "/proc/sys/net", root + "/proc/sys/net", "", unix.MS_BIND, ""},
		{"", root + "/proc/sys/net", "", unix.MS_BIND | unix.MS_REMOUNT | nsd | unix.MS_NOEXEC, ""},
		{"sysfs", root + "/sys", "sysfs", unix.MS_RDONLY | nsd | unix.MS_NOEXEC, ""},
		{"tmpfs", root + "/dev", "tmpfs", unix.MS_NOSUID, "mode=755"},
		{"tmpfs", root + "/run", "tmpfs", nsd, "mode=755"},
		{"tmpfs", root + "/tmp", "tmpfs", nsd, "mode=1777"},
	}
	for _, m := range mounts {
		if err := unix.Mount(m.src, m.target, m.fstype, m.flags, m.data); err != nil {
			fail("mount "+m.target, err)
		}
	}
	for _, d := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		p := root + "/dev/" + d
		if err := os.WriteFile(p, nil, 0o666); err != nil {
			fail("dev", err)
		}
		if err := unix.Mount("/dev/"+d, p, "", unix.MS_BIND, ""); err != nil {
			fail("bind /dev/"+d, err)
		}
	}
	for _, d := range []string{"/dev/pts", "/dev/shm", "/run/sshd"} {
		if err := os.MkdirAll(root+d, 0o755); err != nil {
			fail(d, err)
		}
	}
	if err := unix.Mount("devpts", root+"/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620"); err != nil {
		fail("devpts", err)
	}
	if err := os.Symlink("pts/ptmx", root+"/dev/ptmx"); err != nil {
		fail("ptmx", err)
	}
	if err := unix.Mount("tmpfs", root+"/dev/shm", "tmpfs", nsd, "mode=1777"); err != nil {
		fail("shm", err)
	}
	if err := unix.Sethostname([]byte(hostname)); err != nil {
		fail("sethostname", err)
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		fail("open /dev/null", err)
	}
	pid, err := syscall.ForkExec("/usr/sbin/sshd", []string{"/usr/sbin/sshd", "-D", "-e", "-o", "UseDNS=no"}, &syscall.ProcAttr{
		Dir:   "/",
		Env:   []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"},
		Files: []uintptr{devnull.Fd(), os.Stdout.Fd(), os.Stderr.Fd()},
		Sys:   &syscall.SysProcAttr{Chroot: root},
	})
	if err != nil {
		fail("start sshd", err)
	}
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			fail("wait", err)
		}
		if got == pid {
			fmt.Fprintf(os.Stderr, "light init: sshd exited (%v)\n", ws)
			os.Exit(1)
		}
	}
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func tailFile(path string, n int) string {
	b, _ := os.ReadFile(path)
	return tailLines(string(b), n)
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
