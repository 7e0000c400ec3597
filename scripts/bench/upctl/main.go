// Command upctl is `kthw-controller up -f FILE` for the benchmarks, with one
// difference: -no-containerd leaves the containerd module out of node
// preparation (its versioned package stays in the one package transaction). The light
// lab nodes of the fan-out benchmark (network namespace + chroot + sshd, no
// systemd) run every other node-prep module; the containerd module needs
// systemd (D-Bus) and a running containerd.
//
// Everything else is the controller's own code path: config.Load, the
// workspace and its state, the local or static provider, action.Up with the
// default concurrency, plain progress lines on stderr (or JSON events on
// stdout with -o json) and the summary table, so its CPU time and memory are
// those of kthw-controller up. scripts/bench builds it like `make build`
// builds the controller (CGO_ENABLED=0, -trimpath, -s -w).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"syscall"
	"time"

	"github.com/kthw/kthw/controller/action"
	"github.com/kthw/kthw/controller/config"
	"github.com/kthw/kthw/controller/nodeprep"
	"github.com/kthw/kthw/controller/phase"
	"github.com/kthw/kthw/controller/progress"
	"github.com/kthw/kthw/controller/provider"
	"github.com/kthw/kthw/controller/provider/local"
	"github.com/kthw/kthw/controller/provider/static"
	"github.com/kthw/kthw/controller/workspace"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "upctl:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("upctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "cluster file (required)")
	wsDir := fs.String("workspace", "", "workspace directory (required)")
	agent := fs.String("agent-binary", "", "kthw-agent binary to push (required)")
	noContainerd := fs.Bool("no-containerd", false, "leave the containerd module out of node preparation (its package stays)")
	output := fs.String("o", "", "json: JSON progress events on stdout")
	cpuProfile := fs.String("cpuprofile", "", "write a pprof CPU profile of the run to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *file == "" || *wsDir == "" || *agent == "" {
		return errors.New("-f, -workspace and -agent-binary are required")
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}

	cl, err := config.Load(*file)
	if err != nil {
		return err
	}
	cl.SetDefaults()
	if err := cl.Validate(config.DefaultProfiles()); err != nil {
		return fmt.Errorf("invalid cluster:\n%w", err)
	}
	specs, err := cl.Nodes()
	if err != nil {
		return err
	}
	params, err := nodeprep.FromProfile(cl, specs)
	if err != nil {
		return fmt.Errorf("node preparation: %w", err)
	}
	steps := nodeprep.Steps(params)
	if *noContainerd {
		steps = slices.DeleteFunc(steps, func(s phase.Step) bool { return s.Name == "containerd" })
	}

	ws, err := workspace.Open(*wsDir)
	if err != nil {
		return err
	}
	defer ws.Close()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var p provider.Provider
	switch cl.Provider.Type {
	case config.ProviderLocal:
		p, err = local.New(cl, ws.PublicKey, log)
	case config.ProviderStatic:
		p, err = static.New(cl)
	default:
		err = fmt.Errorf("provider %s is not supported here", cl.Provider.Type)
	}
	if err != nil {
		return err
	}
	var events progress.Sink = progress.NewPlain(stderr)
	if *output == "json" {
		events = progress.NewJSON(stdout)
	}
	defer events.Close()
	start := time.Now()
	reports, err := action.Up(ctx, action.ClusterOptions{
		Cluster: cl, Workspace: ws, Provider: p, AgentBinary: *agent, Steps: steps,
		ControllerVersion: "upctl", Events: events, Logger: log,
	})
	if err != nil && !action.IsNodeFailure(err) {
		return err
	}
	if *output != "json" {
		ok := 0
		for _, r := range reports {
			if r.Err == nil {
				ok++
			} else {
				fmt.Fprintf(stdout, "%s: %v\n", r.Name, r.Err)
			}
		}
		fmt.Fprintf(stdout, "cluster %s: %d/%d nodes ready in %s\n", cl.Name, ok, len(reports), time.Since(start).Round(10*time.Millisecond))
	}
	return err
}
