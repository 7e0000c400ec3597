package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kthw/kthw/controller/action"
	"github.com/kthw/kthw/controller/config"
	"github.com/kthw/kthw/controller/provider/proxmox"
	"github.com/kthw/kthw/controller/state"
	"github.com/kthw/kthw/controller/workspace"
)

func (c *CLI) templateCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "template",
		Short: "Build the Proxmox VM templates nodes are cloned from",
	}
	var (
		file, profileName, output, wsDir, address, gateway string
		noBake                                             bool
		o                                                  proxmox.BuildOptions
	)
	build := &cobra.Command{
		Use:   "build --profile NAME -f cluster.yaml",
		Short: "Create the profile's VM template on Proxmox through its API",
		Long: "Create the profile's VM template (its name from the profile, or provider.proxmox.template) on the\n" +
			"Proxmox node of the cluster file: a VM with the guest agent on, virtio-scsi, a serial console, the\n" +
			"profile's cloud image (images/proxmox/<profile>.yaml) imported as its disk and a cloud-init drive,\n" +
			"converted to a template. The image is downloaded onto the import storage when it is not there.\n\n" +
			"An image without qemu-guest-agent (debian, ubuntu, suse) is baked first: the VM boots once with\n" +
			"the cluster's SSH user, the workspace's key and a static address (--address; default the first\n" +
			"address of network.nodeCIDR after the nodes' addresses, gateway network.gateway); its SSH host key\n" +
			"is read from its serial console (cloud-init prints it) and pinned, kthw's agent installs the\n" +
			"guest agent and cleans the image (cloud-init state, host keys, machine-id, the key), and the VM\n" +
			"is shut down and its one-boot settings removed. Reading the console needs a password login\n" +
			"(provider.proxmox.username and passwordRef): Proxmox's termproxy takes no API tokens.\n" +
			"A template that exists is left alone; a failed or killed build's VM is removed.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "" && output != "json" {
				return fmt.Errorf("bad -o %q: want json or nothing", output)
			}
			if file == "" {
				return errors.New("template build needs the Proxmox connection: give -f cluster.yaml with provider.type proxmox")
			}
			f := clusterFlags{file: file, profile: profileName}
			cl, err := f.loadCluster()
			if err != nil {
				return err
			}
			if cl.Provider.Type != config.ProviderProxmox {
				return fmt.Errorf("template build needs a cluster file with provider.type proxmox; %s has %s", file, cl.Provider.Type)
			}
			log, err := c.logger(g)
			if err != nil {
				return err
			}
			r, err := proxmox.LoadRecipe(nil, cl.Profile)
			if err != nil {
				return err
			}
			events := c.progressSink(output)
			defer events.Close()
			if noBake {
				r.Image.GuestAgent = true
			}
			var authorized []byte
			if !r.Image.GuestAgent {
				if cl.Provider.Proxmox.Username == "" {
					return fmt.Errorf("%s has no qemu-guest-agent, so template build boots it once to install it and reads its host key from its serial console; %w",
						r.Image.File, proxmox.ErrTokenConsole)
				}
				if o.Address, o.Gateway, err = buildAddress(cl, address, gateway); err != nil {
					return err
				}
				bin, err := c.agentBinary(g)
				if err != nil {
					return err
				}
				dir, err := state.ResolveWorkspace(wsDir, cl.Name, state.WorkspaceEnv{Getenv: c.getenv, Root: os.Geteuid() == 0})
				if err != nil {
					return err
				}
				ws, err := workspace.Open(dir)
				if err != nil {
					return err
				}
				defer ws.Close()
				authorized = ws.PublicKey
				o.Baker = &action.SSHBaker{Workspace: ws, AgentBinary: bin, ControllerVersion: c.version, Events: events, Logger: log}
			}
			p, err := proxmox.New(cl, authorized, proxmox.Options{Logger: log, Secrets: c.secrets()})
			if err != nil {
				return err
			}
			res, err := action.TemplateBuild(cmd.Context(), action.TemplateOptions{
				Recipe: r, Provider: p, Build: o, Events: events,
			})
			if err != nil {
				return err
			}
			if output == "json" {
				return json.NewEncoder(c.stdout).Encode(map[string]any{
					"name": res.Name, "vmid": res.VMID, "node": res.Node, "created": res.Created,
					"downloaded": res.Downloaded, "volume": res.Volume, "baked": res.Baked,
				})
			}
			if res.Created && res.Baked {
				fmt.Fprintf(c.stdout, "template %s: created VMID %d on %s from %s, with %s baked in\n", res.Name, res.VMID, res.Node, res.Volume, strings.Join(r.Bake.Packages, ", "))
			} else if res.Created {
				fmt.Fprintf(c.stdout, "template %s: created VMID %d on %s from %s\n", res.Name, res.VMID, res.Node, res.Volume)
			} else {
				fmt.Fprintf(c.stdout, "template %s: exists, VMID %d on %s\n", res.Name, res.VMID, res.Node)
			}
			return nil
		},
	}
	fl := build.Flags()
	fl.StringVarP(&file, "file", "f", "", "cluster file with provider.type proxmox: where to build (endpoint, node, storage, bridge, credentials)")
	fl.StringVar(&profileName, "profile", "", "distro profile whose template to build (overrides the file's profile)")
	fl.StringVarP(&output, "output", "o", "", "output: json")
	fl.IntVar(&o.VMID, "vmid", 0, "the template's VMID (default: the next free one)")
	fl.StringVar(&o.ImportStorage, "import-storage", proxmox.DefaultImportStorage, "storage holding the cloud image as import content")
	fl.StringVar(&o.Volume, "volume", "", "import this volume (e.g. local:import/my-image.qcow2) instead of the recipe's image")
	fl.BoolVar(&noBake, "no-bake", false, "the image (--volume) carries qemu-guest-agent already: import and convert it without booting it")
	fl.StringVar(&address, "address", "", "the builder VM's address for its one boot, CIDR (default: the first address of network.nodeCIDR after the nodes')")
	fl.StringVar(&gateway, "gateway", "", "the builder VM's gateway (default network.gateway)")
	fl.StringVar(&wsDir, "workspace", "", "workspace directory whose SSH key and known_hosts the bake uses (default as for up)")
	fl.DurationVar(&o.ConsoleTimeout, "console-timeout", 0, "how long to wait for the builder VM's host keys on its serial console (default provider.proxmox.bootTimeout)")
	cmd.AddCommand(build)
	return cmd
}

// buildAddress is the builder VM's address: given, or the first address of
// the node network after the cluster's nodes (skipping the gateway).
func buildAddress(cl *config.Cluster, address, gateway string) (netip.Prefix, netip.Addr, error) {
	gw, err := netip.ParseAddr(cl.Network.Gateway)
	if gateway != "" {
		gw, err = netip.ParseAddr(gateway)
	}
	if err != nil {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("--gateway: %w", err)
	}
	if address != "" {
		p, err := netip.ParsePrefix(address)
		if err != nil || !p.Addr().Is4() {
			return netip.Prefix{}, netip.Addr{}, fmt.Errorf("--address %q: want an IPv4 address with its prefix length, e.g. 10.200.0.250/24", address)
		}
		return p, gw, nil
	}
	specs, err := cl.Nodes()
	if err != nil {
		return netip.Prefix{}, netip.Addr{}, err
	}
	nodeNet, err := netip.ParsePrefix(cl.Network.NodeCIDR)
	if err != nil {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("network.nodeCIDR: %w", err)
	}
	nodeNet = nodeNet.Masked()
	last := nodeNet.Addr()
	for _, n := range specs {
		if a := n.Address.Addr(); last.Less(a) {
			last = a
		}
	}
	for a := last.Next(); a.IsValid() && nodeNet.Contains(a); a = a.Next() {
		if a == gw || !nodeNet.Contains(a.Next()) { // the gateway; the broadcast address
			continue
		}
		return netip.PrefixFrom(a, nodeNet.Bits()), gw, nil
	}
	return netip.Prefix{}, netip.Addr{}, fmt.Errorf("network.nodeCIDR %s has no address left after the nodes' for the builder VM; give --address", nodeNet)
}
