package cli

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kthw/kthw/controller/action"
	"github.com/kthw/kthw/controller/config"
	"github.com/kthw/kthw/controller/provider/proxmox"
)

func (c *CLI) templateCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "template",
		Short: "Build the Proxmox VM templates nodes are cloned from",
	}
	var (
		file, profileName, output string
		o                         proxmox.BuildOptions
	)
	build := &cobra.Command{
		Use:   "build --profile NAME -f cluster.yaml",
		Short: "Create the profile's VM template on Proxmox through its API",
		Long: "Create the profile's VM template (its name from the profile, or provider.proxmox.template) on the\n" +
			"Proxmox node of the cluster file: a VM with the guest agent on, virtio-scsi, a serial console, the\n" +
			"profile's cloud image (images/proxmox/<profile>.yaml) imported as its disk and a cloud-init drive,\n" +
			"converted to a template. The image must be on the import storage first, unless the recipe allows\n" +
			"downloading it. A template that exists is left alone.",
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
			p, err := proxmox.New(cl, nil, proxmox.Options{Logger: log, Secrets: c.secrets()})
			if err != nil {
				return err
			}
			events := c.progressSink(output)
			defer events.Close()
			res, err := action.TemplateBuild(cmd.Context(), action.TemplateOptions{
				Profile: cl.Profile, Provider: p, Build: o, Events: events,
			})
			if err != nil {
				return err
			}
			if output == "json" {
				return json.NewEncoder(c.stdout).Encode(map[string]any{
					"name": res.Name, "vmid": res.VMID, "node": res.Node, "created": res.Created,
					"downloaded": res.Downloaded, "volume": res.Volume,
				})
			}
			if res.Created {
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
	cmd.AddCommand(build)
	return cmd
}
