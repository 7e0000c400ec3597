package pvelab

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"

	"github.com/spf13/cobra"

	"github.com/kthw/kthw/controller/lab"
	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
)

// Defaults of kthw-pvesim's --lab flags: a bridge, range, apt proxy port and lab directory of
// their own, apart from the default lab's (kthw0, 10.200.0.0/24, 3142) and the tests'; the
// image cache is the default lab's.
const (
	DefaultBridge    = "kthwpve0"
	DefaultCIDR      = "10.200.50.1/24"
	DefaultProxyPort = 3150
	DefaultDir       = "/var/lib/kthw/pvesim-lab"
	DefaultImageDir  = lab.DefaultDir + "/rootfs"
)

// Extension is kthw-pvesim's --lab: its flags, and with --lab a Backend on lab nodes that is
// torn down (nodes, apt proxy, bridge) when the simulator stops.
type Extension struct {
	enabled   bool
	dir       string
	imageDir  string
	bridge    string
	cidr      string
	proxyPort int
	prefix    string
	user      string
}

var _ pvesim.Extension = (*Extension)(nil)

// AddFlags implements pvesim.Extension.
func (e *Extension) AddFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.BoolVar(&e.enabled, "lab", false, "back started VMs with real lab nodes (systemd-nspawn, needs root): cloud-init's address, user and keys, an SSH host key read through the guest agent")
	f.StringVar(&e.dir, "lab-dir", DefaultDir, "with --lab: the lab directory (nodes, apt proxy)")
	f.StringVar(&e.imageDir, "lab-image-dir", DefaultImageDir, "with --lab: the cache of node root filesystems (shared with kthw's local lab)")
	f.StringVar(&e.bridge, "lab-bridge", DefaultBridge, "with --lab: the host bridge of the nodes")
	f.StringVar(&e.cidr, "lab-cidr", DefaultCIDR, "with --lab: the bridge's address and prefix; VMs' ipconfig0 addresses must be in it (the cluster's nodeCIDR)")
	f.IntVar(&e.proxyPort, "lab-proxy-port", DefaultProxyPort, "with --lab: the port of the nodes' apt proxy (apt-cacher-ng) on 127.0.0.1 and the bridge address")
	f.StringVar(&e.prefix, "lab-prefix", DefaultMachinePrefix, "with --lab: lab node names are PREFIX<vmid>")
	f.StringVar(&e.user, "lab-default-user", "debian", "with --lab: the user a VM without ciuser gets its keys for")
}

// Configure implements pvesim.Extension.
func (e *Extension) Configure(ctx context.Context, cfg *pvesim.Config, stdout io.Writer) (func(context.Context) error, error) {
	if !e.enabled {
		return nil, nil
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("--lab needs root: it mounts overlays, makes a bridge and runs systemd-nspawn")
	}
	bridge, err := netip.ParsePrefix(e.cidr)
	if err != nil {
		return nil, fmt.Errorf("--lab-cidr %q: %w (want the bridge address with its prefix, e.g. %s)", e.cidr, err, DefaultCIDR)
	}
	l, err := lab.New(lab.Config{Dir: e.dir, ImageDir: e.imageDir, Bridge: e.bridge, BridgeAddress: bridge,
		ProxyPort: e.proxyPort, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	if err := lab.Problems(l.Doctor(ctx)); err != nil {
		return nil, fmt.Errorf("--lab: this machine cannot run lab nodes:\n%w", err)
	}
	b, err := New(l, Options{MachinePrefix: e.prefix, DefaultUser: e.user, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(stdout, "Lab: preparing %s (bridge %s %s, apt proxy port %d; the first run builds the node image, about a minute)\n",
		e.dir, e.bridge, bridge, e.proxyPort)
	if err := b.Prepare(ctx); err != nil {
		return b.Teardown, fmt.Errorf("--lab: %w", err)
	}
	fmt.Fprintf(stdout, "Lab: VMs boot as lab nodes %s<vmid> on %s; use nodeCIDR %s\n", e.prefix, e.bridge, bridge.Masked())
	cfg.Backend = b
	return b.Teardown, nil
}
