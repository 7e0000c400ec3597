package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/kthw/kthw/controller/action"
	"github.com/kthw/kthw/controller/config"
	"github.com/kthw/kthw/controller/nodeprep"
	"github.com/kthw/kthw/controller/progress"
	"github.com/kthw/kthw/controller/provider"
	"github.com/kthw/kthw/controller/provider/local"
	"github.com/kthw/kthw/controller/provider/proxmox"
	"github.com/kthw/kthw/controller/provider/static"
	"github.com/kthw/kthw/controller/push"
	"github.com/kthw/kthw/controller/secret"
	"github.com/kthw/kthw/controller/state"
	"github.com/kthw/kthw/controller/workspace"
	"github.com/kthw/kthw/distro/profile"
)

// clusterFlags select the cluster and its workspace.
type clusterFlags struct {
	file      string
	profile   string
	workspace string
	output    string
	acceptNew bool
	agentDir  string
	blobDir   string
	noPrep    bool
}

func (f *clusterFlags) register(cmd *cobra.Command, outputs string) {
	fl := cmd.Flags()
	fl.StringVarP(&f.file, "file", "f", "", "cluster file (YAML, kind Cluster); without it, the default lab cluster: 1 control plane + 2 workers on local lab nodes")
	fl.StringVar(&f.profile, "profile", "", "distro profile: debian, ubuntu, suse or rocky (overrides the file's profile)")
	fl.StringVar(&f.workspace, "workspace", "", "workspace directory (default $KTHW_WORKSPACE, else /var/lib/kthw/workspaces/<cluster> as root, ~/.local/share/kthw/workspaces/<cluster> otherwise)")
	fl.StringVarP(&f.output, "output", "o", "", "output: "+outputs)
	fl.BoolVar(&f.acceptNew, "accept-new", false, "trust and record the host key of a node not yet known (static machines; a changed key is still refused)")
	fl.BoolVar(&f.noPrep, "no-node-prep", false, "only provision the nodes and start their agents; skip node preparation")
	fl.StringVar(&f.agentDir, "agent-dir", "", "root-owned directory on nodes for agent binaries (default /var/lib/kthw/agent)")
	fl.StringVar(&f.blobDir, "blob-dir", "", "directory on nodes for uploaded blobs (default /var/lib/kthw/blobs)")
	fl.MarkHidden("agent-dir")
	fl.MarkHidden("blob-dir")
}

// loadCluster reads, defaults and validates the cluster.
func (f *clusterFlags) loadCluster() (*config.Cluster, error) {
	var c *config.Cluster
	if f.file != "" {
		var err error
		if c, err = config.Load(f.file); err != nil {
			return nil, err
		}
		if f.profile != "" {
			c.Profile = f.profile
		}
	} else {
		if f.profile == "" {
			return nil, fmt.Errorf("give --profile (%s) or a cluster file with -f", strings.Join(profile.List(), ", "))
		}
		c = config.Default(f.profile)
	}
	c.SetDefaults()
	if err := c.Validate(profile.List()); err != nil {
		return nil, fmt.Errorf("invalid cluster:\n%w", err)
	}
	return c, nil
}

// clusterEnv is an opened cluster: config, locked workspace, provider.
type clusterEnv struct {
	opts action.ClusterOptions
	ws   *workspace.Workspace
}

func (e *clusterEnv) close() {
	e.opts.Events.Close()
	e.ws.Close()
}

// openCluster validates everything that can be validated before touching
// the machine, then opens the workspace and builds the provider.
func (c *CLI) openCluster(g *globalOptions, f *clusterFlags, events progress.Sink, preflight bool) (*clusterEnv, error) {
	cl, err := f.loadCluster()
	if err != nil {
		return nil, err
	}
	if cl.Provider.Type == config.ProviderLocal && os.Geteuid() != 0 {
		return nil, errors.New("the local provider needs root: it mounts overlays, makes a bridge and runs systemd-nspawn; run kthw-controller as root")
	}
	bin, err := c.agentBinary(g)
	if err != nil {
		return nil, err
	}
	log, err := c.logger(g)
	if err != nil {
		return nil, err
	}
	if preflight && cl.Provider.Type == config.ProviderLocal {
		// Fail on a missing prerequisite before anything is made.
		p, err := local.New(cl, nil, log)
		if err != nil {
			return nil, err
		}
		if err := findingsError(p.Doctor(context.Background())); err != nil {
			return nil, fmt.Errorf("this machine cannot run lab nodes (see kthw-controller doctor):\n%w", err)
		}
	}
	specs, err := cl.Nodes()
	if err != nil {
		return nil, err
	}
	params, err := nodeprep.FromProfile(cl, specs)
	if err != nil {
		return nil, fmt.Errorf("node preparation: %w", err)
	}
	steps := nodeprep.Steps(params)
	prof, err := profile.Get(cl.Profile)
	if err != nil {
		return nil, err
	}
	dir, err := state.ResolveWorkspace(f.workspace, cl.Name, state.WorkspaceEnv{Getenv: c.getenv, Root: os.Geteuid() == 0})
	if err != nil {
		return nil, err
	}
	ws, err := workspace.Open(dir)
	if err != nil {
		return nil, err
	}
	if s := cl.Etcd.Snapshots; s != nil {
		// The timer runs the agent at its content-addressed path.
		loc, err := push.Locate(bin, f.agentDir, ws.AgentHashStampPath())
		if err != nil {
			ws.Close()
			return nil, err
		}
		steps = append(steps, nodeprep.EtcdSnapshotSteps(s, loc.RemotePath)...)
	}
	if f.noPrep {
		steps = nil
	}
	var p provider.Provider
	switch cl.Provider.Type {
	case config.ProviderLocal:
		p, err = local.New(cl, ws.PublicKey, log)
	case config.ProviderStatic:
		p, err = static.New(cl)
	case config.ProviderProxmox:
		p, err = proxmox.New(cl, ws.PublicKey, proxmox.Options{IDs: ws.State, Logger: log, Secrets: c.secrets()})
	}
	if err != nil {
		ws.Close()
		return nil, err
	}
	return &clusterEnv{ws: ws, opts: action.ClusterOptions{
		Cluster: cl, Workspace: ws, Provider: p, AgentBinary: bin, AcceptNew: f.acceptNew,
		AgentDir: f.agentDir, BlobDir: f.blobDir, Steps: steps, OS: prof.OS,
		ControllerVersion: c.version, Events: events, Logger: log,
	}}, nil
}

// progressSink picks the progress format: JSON events, a live board on a
// terminal, plain lines otherwise.
func (c *CLI) progressSink(output string) progress.Sink {
	if output == "json" {
		return progress.NewJSON(c.stdout)
	}
	if f, ok := c.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return progress.NewBoard(c.stderr)
	}
	return progress.NewPlain(c.stderr)
}

func (c *CLI) upCmd(g *globalOptions) *cobra.Command {
	var (
		f      clusterFlags
		dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "up [--profile NAME] [-f cluster.yaml]",
		Short: "Create or converge the cluster: provision nodes, push agents, run the node phases",
		Long: "Bring the cluster to what its file (or the default lab cluster) describes. Every node runs its own\n" +
			"pipeline in parallel; a node recorded by an earlier run is adopted, never duplicated. A re-run with\n" +
			"nothing to do is a fast no-op. Progress goes to stderr (-o json: JSON events on stdout).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.output != "" && f.output != "json" {
				return fmt.Errorf("bad -o %q: want json or nothing", f.output)
			}
			if dryRun {
				return c.plan(cmd.Context(), g, &f)
			}
			env, err := c.openCluster(g, &f, c.progressSink(f.output), true)
			if err != nil {
				return err
			}
			defer env.close()
			start := time.Now()
			reports, err := action.Up(cmd.Context(), env.opts)
			if err != nil && !action.IsNodeFailure(err) {
				return err
			}
			if f.output != "json" {
				writeUpSummary(c.stdout, env.opts.Cluster, reports, time.Since(start))
			}
			return err
		},
	}
	f.register(cmd, "json (events)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "change nothing: show per node what up would do (same as plan)")
	return cmd
}

func (c *CLI) planCmd(g *globalOptions) *cobra.Command {
	var f clusterFlags
	cmd := &cobra.Command{
		Use:   "plan [--profile NAME] [-f cluster.yaml]",
		Short: "Show per node what up would change, changing nothing",
		Long: "Run every node phase's Check on the nodes that exist and print the diff per node; nodes that do not\n" +
			"exist yet are reported as to be created. Nothing on the nodes is changed (the agent is pushed where\n" +
			"missing, as it is kthw's own tool). Exits 0 whether or not there are changes.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.plan(cmd.Context(), g, &f)
		},
	}
	f.register(cmd, "json (events)")
	return cmd
}

// plan runs up as a dry run and prints what would change.
func (c *CLI) plan(ctx context.Context, g *globalOptions, f *clusterFlags) error {
	env, err := c.openCluster(g, f, c.progressSink(f.output), false)
	if err != nil {
		return err
	}
	defer env.close()
	env.opts.DryRun = true
	reports, err := action.Up(ctx, env.opts)
	if err != nil && !action.IsNodeFailure(err) {
		return err
	}
	if f.output != "json" {
		writePlan(c.stdout, reports)
	}
	return err
}

func writePlan(w io.Writer, reports []action.NodeReport) {
	for _, r := range reports {
		switch {
		case r.Err != nil:
			fmt.Fprintf(w, "%s: cannot plan: %v\n", r.Name, r.Err)
			continue
		case r.Changed && len(r.Steps) == 0:
			fmt.Fprintf(w, "%s: will be %s\n", r.Name, map[bool]string{true: "created", false: "started"}[r.Provider.State == provider.StateMissing])
			continue
		case !r.Changed:
			fmt.Fprintf(w, "%s: up to date\n", r.Name)
			continue
		}
		fmt.Fprintf(w, "%s:\n", r.Name)
		for _, s := range r.Steps {
			if !s.Result.Changed {
				continue
			}
			fmt.Fprintf(w, "  ~ %s\n", s.Name)
			for _, l := range splitLines(s.Result.Diff) {
				if l != "" {
					fmt.Fprintf(w, "      %s\n", l)
				}
			}
		}
	}
}

func writeUpSummary(w io.Writer, cl *config.Cluster, reports []action.NodeReport, took time.Duration) {
	ok := 0
	for _, r := range reports {
		if r.Err == nil {
			ok++
		}
	}
	fmt.Fprintf(w, "cluster %s (%s, %s provider): %d/%d nodes ready in %s\n", cl.Name, cl.Profile, cl.Provider.Type, ok, len(reports), took.Round(10*time.Millisecond))
	writeNodeTable(w, reports)
}

func writeNodeTable(w io.Writer, reports []action.NodeReport) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tROLE\tSTATE\tADDRESS\tAGENT\tOS\tKERNEL\tUNITS")
	for _, r := range reports {
		st := string(r.Provider.State)
		if st == "" {
			st = "-"
		}
		if r.Err != nil {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\tERROR\t-\t-\t%s\n", r.Name, r.Role, st, dash(r.Provider.Host), oneLine(r.Err.Error()))
			continue
		}
		osName, kernel := "-", "-"
		if r.Facts != nil {
			osName, kernel = r.Facts.OS+" "+r.Facts.Version, r.Facts.Kernel
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Role, st, dash(r.Provider.Host), r.AgentVersion, osName, kernel, unitsText(r.Status))
	}
	tw.Flush()
}

func unitsText(s *action.StatusView) string {
	if s == nil {
		return "-"
	}
	if !s.UnitsAvailable {
		return "not available: " + s.UnitsDetail
	}
	keys := make([]string, 0, len(s.Units))
	for k := range s.Units {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, strings.TrimSuffix(k, ".service")+"="+s.Units[k])
	}
	return strings.Join(parts, " ")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}

func (c *CLI) statusCmd(g *globalOptions) *cobra.Command {
	var (
		f       clusterFlags
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status [--profile NAME] [-f cluster.yaml] [-o table|json]",
		Short: "Show every node: provider state, address, agent, facts and unit status",
		Long:  "Ask every node's provider and agent how it is. A node that does not answer is named with the reason;\nthe others still answer. Exits non-zero when any node failed.",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.output == "" {
				f.output = "table"
			}
			if f.output != "table" && f.output != "json" {
				return fmt.Errorf("bad -o %q: want table or json", f.output)
			}
			env, err := c.openCluster(g, &f, progress.Discard{}, false)
			if err != nil {
				return err
			}
			defer env.close()
			reports, err := action.Status(cmd.Context(), env.opts, timeout)
			if err != nil && !action.IsNodeFailure(err) {
				return err
			}
			if f.output == "json" {
				if werr := writeClusterJSON(c.stdout, env.opts.Cluster, reports); werr != nil {
					return werr
				}
			} else {
				writeNodeTable(c.stdout, reports)
			}
			for _, r := range reports {
				if r.Err != nil {
					fmt.Fprintf(c.stderr, "%s: %v\n", r.Name, r.Err)
				}
			}
			return err
		},
	}
	f.register(cmd, "table or json")
	cmd.Flags().DurationVar(&timeout, "timeout", 15*time.Second, "time limit per node")
	return cmd
}

type nodeJSON struct {
	Name         string             `json:"name"`
	Role         string             `json:"role"`
	State        string             `json:"state"`
	Address      string             `json:"address"`
	ProviderID   string             `json:"provider_id,omitempty"`
	OK           bool               `json:"ok"`
	Error        string             `json:"error,omitempty"`
	AgentVersion string             `json:"agent_version,omitempty"`
	AgentSHA256  string             `json:"agent_sha256,omitempty"`
	Uploaded     bool               `json:"agent_uploaded"`
	Facts        *action.FactsView  `json:"facts,omitempty"`
	Status       *action.StatusView `json:"status,omitempty"`
}

func writeClusterJSON(w io.Writer, cl *config.Cluster, reports []action.NodeReport) error {
	out := struct {
		Cluster  string     `json:"cluster"`
		Profile  string     `json:"profile"`
		Provider string     `json:"provider"`
		Nodes    []nodeJSON `json:"nodes"`
	}{Cluster: cl.Name, Profile: cl.Profile, Provider: string(cl.Provider.Type), Nodes: []nodeJSON{}}
	for _, r := range reports {
		j := nodeJSON{Name: r.Name, Role: string(r.Role), State: string(r.Provider.State), Address: r.Provider.Host,
			ProviderID: r.Provider.ID, OK: r.Err == nil, AgentVersion: r.AgentVersion, AgentSHA256: r.AgentSHA256,
			Uploaded: r.Uploaded, Facts: r.Facts, Status: r.Status}
		if r.Err != nil {
			j.Error = r.Err.Error()
		}
		out.Nodes = append(out.Nodes, j)
	}
	return writeJSON(w, out)
}

func (c *CLI) downCmd(g *globalOptions) *cobra.Command {
	var (
		f   clusterFlags
		yes bool
	)
	cmd := &cobra.Command{
		Use:   "down [--profile NAME] [-f cluster.yaml] [--yes]",
		Short: "Destroy every node of the cluster and what the provider made for them",
		Long: "Destroy the cluster's nodes (their disks too), forget them in the workspace and remove the lab's\n" +
			"bridge and apt proxy once no node uses them. Static machines are left alone; only their records go.\n" +
			"Asks for confirmation on a terminal unless --yes.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !yes {
				if err := c.confirm("destroy", "destroy every node of the cluster?"); err != nil {
					return err
				}
			}
			env, err := c.openCluster(g, &f, c.progressSink(f.output), false)
			if err != nil {
				return err
			}
			defer env.close()
			return action.Down(cmd.Context(), env.opts)
		},
	}
	f.register(cmd, "json (events)")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

// confirm asks question on a terminal; without one it refuses to do what
// (destroy, restore).
func (c *CLI) confirm(what, question string) error {
	in, ok := c.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(in.Fd())) {
		return fmt.Errorf("refusing to %s without confirmation: pass --yes", what)
	}
	fmt.Fprintf(c.stderr, "%s [y/N] ", question)
	line, _ := bufio.NewReader(in).ReadString('\n')
	if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
		return errors.New("not confirmed")
	}
	return nil
}

func (c *CLI) doctorCmd(g *globalOptions) *cobra.Command {
	var f clusterFlags
	cmd := &cobra.Command{
		Use:   "doctor [--profile NAME] [-f cluster.yaml]",
		Short: "Check this machine for what the cluster's provider needs, and say what to install",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.profile == "" && f.file == "" {
				f.profile = "debian"
			}
			cl, err := f.loadCluster()
			if err != nil {
				return err
			}
			return c.doctor(cmd.Context(), g, cl)
		},
	}
	f.register(cmd, "unused")
	return cmd
}

func (c *CLI) doctor(ctx context.Context, g *globalOptions, cl *config.Cluster) error {
	var findings []provider.Finding
	if _, err := c.agentBinary(g); err != nil {
		findings = append(findings, provider.Finding{Check: "kthw-agent", Detail: err.Error(), Fix: "make build, or pass --agent-binary"})
	} else {
		findings = append(findings, provider.Finding{Check: "kthw-agent", OK: true, Detail: "found"})
	}
	log, err := c.logger(g)
	if err != nil {
		return err
	}
	switch cl.Provider.Type {
	case config.ProviderLocal:
		p, err := local.New(cl, nil, log)
		if err != nil {
			return err
		}
		findings = append(findings, p.Doctor(ctx)...)
	case config.ProviderProxmox:
		p, err := proxmox.New(cl, nil, proxmox.Options{Logger: log, Secrets: c.secrets()})
		if err != nil {
			return err
		}
		findings = append(findings, p.Doctor(ctx)...)
	}
	failed := 0
	for _, fd := range findings {
		if fd.OK {
			fmt.Fprintf(c.stdout, "ok    %-15s %s\n", fd.Check, fd.Detail)
			continue
		}
		failed++
		fmt.Fprintf(c.stdout, "FAIL  %-15s %s\n      fix: %s\n", fd.Check, fd.Detail, fd.Fix)
	}
	if failed > 0 {
		return fmt.Errorf("%d check(s) failed", failed)
	}
	return nil
}

func findingsError(findings []provider.Finding) error {
	var errs []error
	for _, f := range findings {
		if !f.OK {
			errs = append(errs, fmt.Errorf("%s: %s (fix: %s)", f.Check, f.Detail, f.Fix))
		}
	}
	return errors.Join(errs...)
}

// secrets resolves the cluster file's secret references from this CLI's
// environment.
func (c *CLI) secrets() secret.Resolver { return secret.Resolver{Getenv: c.getenv} }
