// Package cli is the kthw-controller command line. Verbs only fill option
// structs and hand them to the packages that do the work; all I/O is injected.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"

	"github.com/spf13/cobra"
)

// ErrSomeFailed is returned when at least one target failed; the failures were
// already reported per target.
var ErrSomeFailed = errors.New("one or more targets failed")

// CLI is the controller's command line with injected I/O.
type CLI struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	version        string
	getenv         func(string) string
}

// New returns the command line for the given version and streams.
func New(version string, stdin io.Reader, stdout, stderr io.Writer) *CLI {
	return &CLI{stdin: stdin, stdout: stdout, stderr: stderr, version: version, getenv: os.Getenv}
}

// Run executes args (without the program name).
func (c *CLI) Run(ctx context.Context, args []string) error {
	g := &globalOptions{}
	root := c.root(g)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if perr := g.stopProfile(); perr != nil && err == nil {
		err = perr
	}
	return err
}

type globalOptions struct {
	agentBinary string
	logLevel    string
	// cpuProfile is a file for a pprof CPU profile of the whole run
	// (hidden: for scripts/bench and performance work).
	cpuProfile string
	profile    *os.File
}

// startProfile starts the CPU profile when --cpuprofile is set.
func (g *globalOptions) startProfile() error {
	if g.cpuProfile == "" || g.profile != nil {
		return nil
	}
	f, err := os.Create(g.cpuProfile)
	if err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return fmt.Errorf("cpu profile: %w", err)
	}
	g.profile = f
	return nil
}

// stopProfile writes out the CPU profile, if one runs.
func (g *globalOptions) stopProfile() error {
	if g.profile == nil {
		return nil
	}
	pprof.StopCPUProfile()
	err := g.profile.Close()
	g.profile = nil
	if err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	return nil
}

func (c *CLI) root(g *globalOptions) *cobra.Command {
	root := &cobra.Command{
		Use:   "kthw-controller",
		Short: "Build and run Kubernetes clusters on Proxmox VE and local lab nodes",
		Long: "kthw-controller provisions nodes, pushes kthw-agent to them over SSH and drives every agent\n" +
			"over gRPC on that SSH session. Nodes listen on no port of kthw's.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(c.stdin)
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	root.PersistentFlags().StringVar(&g.agentBinary, "agent-binary", "", "kthw-agent binary to push (default: $KTHW_AGENT_BINARY, then kthw-agent beside this program, then $PATH)")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "warn", "log level on stderr: debug, info, warn, error")
	root.PersistentFlags().StringVar(&g.cpuProfile, "cpuprofile", "", "write a pprof CPU profile of the run to this file")
	root.PersistentFlags().MarkHidden("cpuprofile")
	root.PersistentPreRunE = func(*cobra.Command, []string) error { return g.startProfile() }
	root.AddCommand(c.versionCmd(), c.upCmd(g), c.planCmd(g), c.statusCmd(g), c.downCmd(g), c.doctorCmd(g), c.profilesCmd(), c.agentCmd(g), c.templateCmd(g), c.etcdCmd(g))
	return root
}

func (c *CLI) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the controller version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "kthw-controller %s\n", c.version)
			return err
		},
	}
}

func (c *CLI) logger(g *globalOptions) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, fmt.Errorf("bad --log-level %q: want debug, info, warn or error", g.logLevel)
	}
	return slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: lv})), nil
}

// agentBinary finds the kthw-agent to push.
func (c *CLI) agentBinary(g *globalOptions) (string, error) {
	if g.agentBinary != "" {
		return checkBinary(g.agentBinary)
	}
	if p := c.getenv("KTHW_AGENT_BINARY"); p != "" {
		return checkBinary(p)
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "kthw-agent")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("kthw-agent"); err == nil {
		return p, nil
	}
	return "", errors.New("kthw-agent binary not found: build it (make build) or pass --agent-binary")
}

func checkBinary(p string) (string, error) {
	st, err := os.Stat(p)
	if err != nil {
		return "", fmt.Errorf("agent binary: %w", err)
	}
	if st.IsDir() {
		return "", fmt.Errorf("agent binary %s is a directory", p)
	}
	return p, nil
}
