package cli

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kthw/kthw/distro/profile"
)

func (c *CLI) profilesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "profiles",
		Short: "List and show the distro profiles (debian, ubuntu, suse, rocky)",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the profiles with their OS and default Kubernetes version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PROFILE\tOS\tPACKAGES\tKUBERNETES\tCONTAINERD\tTEMPLATE")
			for _, name := range profile.List() {
				p, err := profile.Get(name)
				if err != nil {
					return err
				}
				m, err := p.Versions(nil)
				if err != nil {
					return err
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.Description, p.PackageManager, m.Kubernetes, m.Containerd, p.Template)
			}
			return tw.Flush()
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "show NAME",
		Short: "Show a profile: version matrix and ranges, packages, repositories, kernel modules, sysctls, firewall",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := profile.Get(args[0])
			if err != nil {
				return err
			}
			m, err := p.Versions(nil)
			if err != nil {
				return err
			}
			return writeProfile(cmd.OutOrStdout(), p, m)
		},
	})
	return cmd
}

func writeProfile(w io.Writer, p *profile.Profile, m profile.Matrix) error {
	fmt.Fprintf(w, "profile:         %s (%s)\n", p.Name, p.Description)
	fmt.Fprintf(w, "os:              %s %s %s\n", p.OS.ID, p.OS.Version, p.OS.Codename)
	fmt.Fprintf(w, "package manager: %s\n", p.PackageManager)
	fmt.Fprintf(w, "vm template:     %s\n", p.Template)
	fmt.Fprintf(w, "selinux:         %s\n", p.SELinux)
	fmt.Fprintf(w, "firewall:        %s\n", p.Firewall.Tool)
	fmt.Fprintln(w, "\nversions (override in the cluster file's versions:):")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  COMPONENT\tDEFAULT\tSUPPORTED")
	for _, comp := range profile.Components() {
		r, ok := p.VersionRanges[comp]
		rng := "follows kubernetes (skew policy)"
		if ok {
			rng = r.Min + " .. " + r.Max
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", comp, m.Get(comp), rng)
	}
	tw.Flush()
	fmt.Fprintln(w, "\npackages:")
	fmt.Fprintf(w, "  base:        %s\n", strings.Join(p.Packages.Base, " "))
	fmt.Fprintf(w, "  containerd:  %s\n", strings.Join(p.Packages.Containerd, " "))
	fmt.Fprintf(w, "  kubernetes:  %s\n", strings.Join(p.Packages.Kubernetes, " "))
	fmt.Fprintln(w, "\nrepositories:")
	for _, r := range p.Repositories {
		fmt.Fprintf(w, "  %s (%s): %s", r.Name, r.Purpose, strings.ReplaceAll(r.URI, "{minor}", m.KubernetesMinor()))
		if r.Suite != "" {
			fmt.Fprintf(w, " %s", r.Suite)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "\nkernel modules:  %s\n", strings.Join(p.KernelModules, " "))
	fmt.Fprintln(w, "sysctls:")
	keys := make([]string, 0, len(p.Sysctls))
	vals := map[string]string{}
	for _, s := range p.Sysctls {
		keys = append(keys, s.Key)
		vals[s.Key] = s.Value
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %s = %s\n", k, vals[k])
	}
	if p.Firewall.Tool != "none" && p.Firewall.Tool != "" {
		fmt.Fprintln(w, "firewall ports:")
		for _, set := range []struct {
			role  string
			ports []profile.Port
		}{{"all", p.Firewall.All}, {"control-plane", p.Firewall.ControlPlane}, {"worker", p.Firewall.Worker}} {
			for _, port := range set.ports {
				fmt.Fprintf(w, "  %-13s %s/%s  %s\n", set.role, port.Port, port.Protocol, port.Purpose)
			}
		}
	}
	return nil
}
