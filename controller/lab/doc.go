// Package lab is the local lab substrate: real Kubernetes-capable nodes on this machine, each a
// systemd-nspawn container booting systemd from an overlay on a shared, cached root filesystem,
// with its own address on a host-only bridge, sshd with a host key the caller generated (so it
// is pinned before the first connection), and apt through a shared apt-cacher-ng on the host.
//
// One Lab value owns one directory (default /var/lib/kthw/lab):
//
//	rootfs/<hash>/          cached root filesystems, by recipe hash (Config.ImageDir)
//	rootfs/.tmp-*           a build in progress (removed by the next build when stale)
//	proxy/                  apt-cacher-ng: conf/, cache/, log/, run/ (pid file, socket)
//	nodes/                  a shared bind mount of itself while nodes exist (see
//	                        ensureSharedMount), unmounted with the last node
//	nodes/<name>/           one node: node.json, upper/, work/, root/ (overlay mount point),
//	                        nspawn.pid, console.log, lock
//
// Node names are systemd-nspawn machine names and name the host side of the node's link
// (vb-<name>, shortened by nspawn when long), so they must be unique on the machine, across
// labs.
//
// The host needs no systemd as PID 1: nodes run with --register=no --keep-unit and are
// stopped by signals to the recorded PIDs. Nothing is NATed or firewalled: traffic flows only
// between the host and the nodes on the bridge. /proc/sys inside a node is read-only except
// /proc/sys/net (systemd-nspawn's default with a private network, which this package relies on
// and never overrides), so a node cannot change host-global kernel settings; the image masks
// the kernel debug and tracing mounts for the same reason. Nodes keep all capabilities
// (containerd needs them), so this guards against node preparation that writes global settings,
// not against a hostile root inside a node.
//
// Every method that touches the host takes a context first; all need root. Doctor reports what
// is missing before any of them is tried.
package lab
