package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/kthw/kthw/controller/action"
	"github.com/kthw/kthw/controller/etcd"
	"github.com/kthw/kthw/controller/progress"
	"github.com/kthw/kthw/proto/kthw/agent/v1/etcdsnap"
)

// etcdCmd is `kthw-controller etcd`: snapshots of the control-plane nodes'
// etcd, pulled back into the workspace, and restores from them.
func (c *CLI) etcdCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "etcd",
		Short: "Snapshots and restores of the cluster's etcd (kubeadm stacked etcd)",
		Long: "Take etcd snapshots on a control-plane node and pull them back into the workspace\n" +
			"(<workspace>/etcd-snapshots/<node>/), list them, and restore a cluster from one. See docs/etcd.md.",
	}
	cmd.AddCommand(c.etcdSnapshotCmd(g), c.etcdSnapshotsCmd(g), c.etcdRestoreCmd(g))
	return cmd
}

func (c *CLI) etcdSnapshotCmd(g *globalOptions) *cobra.Command {
	var (
		f      clusterFlags
		so     action.EtcdSnapshotOptions
		noPull bool
	)
	cmd := &cobra.Command{
		Use:   "snapshot [--node NAME] [--profile NAME | -f cluster.yaml]",
		Short: "Save an etcd snapshot on a control-plane node and pull it back into the workspace",
		Long: "Have the node's agent save a snapshot of its etcd member into the node's snapshot directory (etcd's\n" +
			"own discipline: one member, .part file, sha256 trailer checked, fsync, rename; a manifest; retention),\n" +
			"then stream it back into <workspace>/etcd-snapshots/<node>/, verified against the manifest's sha256\n" +
			"and etcd's trailer. Without --node, the first control-plane node.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.output != "" && f.output != "json" {
				return fmt.Errorf("bad -o %q: want json or nothing", f.output)
			}
			env, err := c.openCluster(g, &f, c.progressSink(f.output), false)
			if err != nil {
				return err
			}
			defer env.close()
			so.NoPull = noPull
			rep, err := action.EtcdSnapshot(cmd.Context(), env.opts, so)
			if err != nil {
				return err
			}
			if f.output == "json" {
				return writeJSON(c.stdout, map[string]any{"node": rep.Node, "remote_path": rep.RemotePath, "local_path": rep.LocalPath,
					"manifest": jsonRaw(etcdsnap.MarshalManifest(rep.Manifest)), "snapshot_seconds": rep.SnapshotTook.Seconds(), "pull_seconds": rep.PullTook.Seconds()})
			}
			m := rep.Manifest
			fmt.Fprintf(c.stdout, "%s: saved %s (revision %d, %s, sha256 %s) in %s\n", rep.Node, rep.RemotePath, m.GetRevision(),
				humanize.Bytes(uint64(m.GetSize())), m.GetSha256(), rep.SnapshotTook.Round(time.Millisecond))
			if rep.LocalPath != "" {
				fmt.Fprintf(c.stdout, "pulled to %s in %s (%s/s), sha256 and etcd's trailer verified\n", rep.LocalPath,
					rep.PullTook.Round(time.Millisecond), humanize.Bytes(uint64(float64(m.GetSize())/max(rep.PullTook.Seconds(), 1e-3))))
			}
			return nil
		},
	}
	f.register(cmd, "json")
	cmd.Flags().StringVar(&so.Node, "node", "", "control-plane node to snapshot (default: the first)")
	cmd.Flags().StringVar(&so.Dir, "dir", "", "snapshot directory on the node (default: the cluster file's etcd.snapshots.dir, else "+action.NodeSnapshotDir+")")
	cmd.Flags().IntVar(&so.Keep, "keep", 0, "snapshots the node keeps (default: the cluster file's etcd.snapshots.keep, else all)")
	cmd.Flags().BoolVar(&noPull, "no-pull", false, "leave the snapshot on the node only")
	cmd.Flags().DurationVar(&so.Timeout, "timeout", 30*time.Minute, "time limit")
	return cmd
}

func (c *CLI) etcdSnapshotsCmd(g *globalOptions) *cobra.Command {
	var (
		f         clusterFlags
		nodeName  string
		dir       string
		localOnly bool
		timeout   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "snapshots [--node NAME] [--local] [--profile NAME | -f cluster.yaml]",
		Short: "List the etcd snapshots in the workspace and on the control-plane nodes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.output != "" && f.output != "json" {
				return fmt.Errorf("bad -o %q: want json or nothing", f.output)
			}
			env, err := c.openCluster(g, &f, progress.Discard{}, false)
			if err != nil {
				return err
			}
			defer env.close()
			local, nodes, err := action.EtcdSnapshots(cmd.Context(), env.opts, nodeName, dir, localOnly, timeout)
			if err != nil && !action.IsNodeFailure(err) {
				return err
			}
			if f.output == "json" {
				if werr := writeSnapshotsJSON(c.stdout, local, nodes); werr != nil {
					return werr
				}
			} else {
				writeSnapshots(c.stdout, env.ws.EtcdSnapshotsPath(), local, nodes)
			}
			for _, n := range nodes {
				if n.Err != nil {
					fmt.Fprintf(c.stderr, "%s: %v\n", n.Node, n.Err)
				}
			}
			return err
		},
	}
	f.register(cmd, "json")
	cmd.Flags().StringVar(&nodeName, "node", "", "only this control-plane node (default: all)")
	cmd.Flags().StringVar(&dir, "dir", "", "snapshot directory on the nodes (default: the cluster file's etcd.snapshots.dir, else "+action.NodeSnapshotDir+")")
	cmd.Flags().BoolVar(&localOnly, "local", false, "only the snapshots in the workspace; contact no node")
	cmd.Flags().DurationVar(&timeout, "timeout", 15*time.Second, "time limit per node")
	return cmd
}

func writeSnapshots(w io.Writer, storeDir string, local []etcd.Local, nodes []action.NodeSnapshots) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WHERE\tNODE\tFILE\tTIME\tREVISION\tSIZE\tSHA256")
	for _, l := range local {
		t, rev, sum := l.ModTime.UTC().Format(time.RFC3339), "-", "("+l.ManifestError+")"
		if m := l.Manifest; m != nil {
			t, rev, sum = m.GetTime(), fmt.Sprint(m.GetRevision()), short(m.GetSha256())
		}
		fmt.Fprintf(tw, "workspace\t%s\t%s\t%s\t%s\t%s\t%s\n", l.Node, l.Path, t, rev, humanize.Bytes(uint64(l.Size)), sum)
	}
	for _, n := range nodes {
		if n.Err != nil {
			fmt.Fprintf(tw, "node\t%s\t-\t-\t-\t-\tERROR: %s\n", n.Node, oneLine(n.Err.Error()))
			continue
		}
		for _, s := range n.Snapshots {
			t, rev, sum := s.GetModTime(), "-", "("+s.GetManifestError()+")"
			if m := s.GetManifest(); m != nil {
				t, rev, sum = m.GetTime(), fmt.Sprint(m.GetRevision()), short(m.GetSha256())
			}
			fmt.Fprintf(tw, "node\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Node, s.GetPath(), t, rev, humanize.Bytes(uint64(s.GetSize())), sum)
		}
	}
	tw.Flush()
	if len(local) == 0 {
		fmt.Fprintf(w, "(no snapshots in %s)\n", storeDir)
	}
}

func writeSnapshotsJSON(w io.Writer, local []etcd.Local, nodes []action.NodeSnapshots) error {
	type snap struct {
		Where    string  `json:"where"`
		Node     string  `json:"node"`
		Path     string  `json:"path"`
		Size     int64   `json:"size"`
		Manifest jsonRaw `json:"manifest,omitempty"`
		Error    string  `json:"error,omitempty"`
	}
	out := []snap{}
	for _, l := range local {
		s := snap{Where: "workspace", Node: l.Node, Path: l.Path, Size: l.Size, Error: l.ManifestError}
		if l.Manifest != nil {
			s.Manifest = etcdsnap.MarshalManifest(l.Manifest)
		}
		out = append(out, s)
	}
	for _, n := range nodes {
		if n.Err != nil {
			out = append(out, snap{Where: "node", Node: n.Node, Error: n.Err.Error()})
			continue
		}
		for _, f := range n.Snapshots {
			s := snap{Where: "node", Node: n.Node, Path: f.GetPath(), Size: f.GetSize(), Error: f.GetManifestError()}
			if f.GetManifest() != nil {
				s.Manifest = etcdsnap.MarshalManifest(f.GetManifest())
			}
			out = append(out, s)
		}
	}
	return writeJSON(w, out)
}

func (c *CLI) etcdRestoreCmd(g *globalOptions) *cobra.Command {
	var (
		f   clusterFlags
		ro  action.EtcdRestoreOptions
		yes bool
		dry bool
	)
	cmd := &cobra.Command{
		Use:   "restore --from FILE [--node NAME] [--profile NAME | -f cluster.yaml]",
		Short: "Restore the cluster's etcd from a snapshot (kubeadm stacked etcd)",
		Long: "Restore a control-plane node's etcd from a snapshot file on this machine, the way the Kubernetes\n" +
			"documentation describes it for kubeadm: the snapshot must verify (etcd's sha256 trailer, and its\n" +
			"manifest when it has one); it is restored here into a fresh data directory with etcdutl's library\n" +
			"(the revision bumped by 1,000,000,000 and marked compacted, so watchers relist); on the node the etcd\n" +
			"and kube-apiserver static-pod manifests are moved out, the data directory is put next to the old one\n" +
			"(which stays), the etcd manifest's data hostPath is pointed at it, and the manifests are moved back.\n" +
			"The restored etcd is a one-member cluster: other control-plane nodes must be reset and joined again.\n" +
			"Asks for confirmation on a terminal unless --yes; --dry-run shows what would change.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ro.From == "" {
				return fmt.Errorf("give the snapshot with --from FILE (see kthw-controller etcd snapshots)")
			}
			if f.output != "" && f.output != "json" {
				return fmt.Errorf("bad -o %q: want json or nothing", f.output)
			}
			if _, err := etcdsnap.Verify(ro.From); err != nil {
				return fmt.Errorf("refusing to restore: %w", err)
			}
			if !yes && !dry {
				if err := c.confirm("restore", fmt.Sprintf("restore etcd from %s? The API server is down while it runs", ro.From)); err != nil {
					return err
				}
			}
			env, err := c.openCluster(g, &f, c.progressSink(f.output), false)
			if err != nil {
				return err
			}
			defer env.close()
			env.opts.DryRun = dry
			rep, err := action.EtcdRestore(cmd.Context(), env.opts, ro)
			if rep != nil && f.output == "json" {
				if werr := writeJSON(c.stdout, rep); werr != nil {
					return werr
				}
			} else if rep != nil && err == nil {
				writeRestore(c.stdout, rep, dry)
			}
			return err
		},
	}
	f.register(cmd, "json")
	fl := cmd.Flags()
	fl.StringVar(&ro.From, "from", "", "snapshot file on this machine (e.g. from <workspace>/etcd-snapshots/)")
	fl.StringVar(&ro.Node, "node", "", "control-plane node to restore (required when there are several)")
	fl.StringVar(&ro.DataDir, "data-dir", "", "new data directory on the node (default: <old>-restore-<time>, next to the old one)")
	fl.Uint64Var(&ro.RevisionBump, "bump-revision", 0, "how far to move the revision forward (default 1000000000); marks it compacted")
	fl.BoolVar(&ro.NoRevisionBump, "no-bump-revision", false, "restore the revision as it was (not recommended with a running Kubernetes)")
	fl.DurationVar(&ro.StopTimeout, "stop-timeout", 2*time.Minute, "how long to wait for the kubelet to stop etcd")
	fl.BoolVar(&dry, "dry-run", false, "restore locally and show what would change on the node, changing nothing there")
	fl.BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

func writeRestore(w io.Writer, rep *action.EtcdRestoreReport, dry bool) {
	if dry {
		fmt.Fprintf(w, "%s: would restore etcd member %s from %s (revision bump %d):\n", rep.Node, rep.Member.Name, rep.Snapshot.Path, rep.RevisionBump)
		for _, l := range splitLines(rep.Diff) {
			fmt.Fprintf(w, "    %s\n", l)
		}
		return
	}
	if !rep.Changed {
		fmt.Fprintf(w, "%s: etcd already runs from %s; nothing to do\n", rep.Node, rep.DataDir)
		return
	}
	fmt.Fprintf(w, "%s: restored etcd member %s from %s into %s (revision bump %d)\n", rep.Node, rep.Member.Name, rep.Snapshot.Path, rep.DataDir, rep.RevisionBump)
	fmt.Fprintf(w, "  local restore %s, pack %s (%s), upload %s, swap on the node %s\n", rep.RestoreTook.Round(time.Millisecond),
		rep.PackTook.Round(time.Millisecond), humanize.Bytes(uint64(rep.ArchiveBytes)), rep.UploadTook.Round(time.Millisecond), rep.SwapTook.Round(time.Millisecond))
	fmt.Fprintf(w, "  the old data directory %s is left in place; the original manifest is %s/etcd.yaml.orig\n", rep.OldDataDir, rep.HoldingDir)
}

// jsonRaw embeds JSON that is already rendered.
type jsonRaw = json.RawMessage

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func splitLines(s string) []string {
	return strings.Split(strings.TrimRight(s, "\n"), "\n")
}
