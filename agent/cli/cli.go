// Package cli holds the kthw-agent command line: `version`,
// `serve --stdio` and `etcd` (snapshots and status of kubeadm's etcd).
// main only builds it with the process's I/O and maps the returned error
// to an exit code.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// CLI is the agent's command line with injected I/O.
type CLI struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	version        string
}

// New returns the command line for the given version and streams.
func New(version string, stdin io.Reader, stdout, stderr io.Writer) *CLI {
	return &CLI{stdin: stdin, stdout: stdout, stderr: stderr, version: version}
}

// Run executes args (without the program name).
func (c *CLI) Run(ctx context.Context, args []string) error {
	root := c.root()
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}

func (c *CLI) root() *cobra.Command {
	root := &cobra.Command{
		Use:           "kthw-agent",
		Short:         "kthw node agent: carries out the modules the controller sends",
		Long:          "kthw-agent runs on a node for the length of one controller session. It listens on no port:\nthe controller starts it over SSH with `serve --stdio` and speaks gRPC over yamux on its stdio.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(c.stdin)
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	root.AddCommand(c.versionCmd(), c.serveCmd(), c.etcdCmd())
	return root
}

func (c *CLI) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the agent version and API version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "kthw-agent %s (api %s)\n", c.version, agentv1.APIVersion)
			return err
		},
	}
}

func (c *CLI) serveCmd() *cobra.Command {
	var (
		useStdio bool
		opts     serveOptions
		level    string
	)
	cmd := &cobra.Command{
		Use:   "serve --stdio",
		Short: "Serve the agent API on stdin/stdout until stdin closes",
		Long: "Serve the agent API on this process's stdin/stdout (yamux, gRPC on its streams) and exit when\n" +
			"stdin closes. Logs go to stderr. This is how the controller starts the agent over SSH.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !useStdio {
				return errors.New("serve: --stdio is required (the agent never listens on a port)")
			}
			var lv slog.Level
			if err := lv.UnmarshalText([]byte(level)); err != nil {
				return fmt.Errorf("serve: bad --log-level %q", level)
			}
			opts.logger = slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: lv}))
			opts.version = c.version
			return serveStdio(cmd.Context(), opts)
		},
	}
	cmd.Flags().BoolVar(&useStdio, "stdio", false, "serve on stdin/stdout")
	cmd.Flags().StringVar(&level, "log-level", "info", "log level on stderr: debug, info, warn, error")
	cmd.Flags().StringVar(&opts.blobDir, "blob-dir", "/var/lib/kthw/blobs", "where uploaded blobs are stored")
	return cmd
}
