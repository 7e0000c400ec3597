package action

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path"
	"strconv"
	"time"

	"github.com/kthw/kthw/controller/node"
	"github.com/kthw/kthw/controller/progress"
	"github.com/kthw/kthw/controller/provider/proxmox"
	"github.com/kthw/kthw/controller/push"
	"github.com/kthw/kthw/controller/sshx"
	"github.com/kthw/kthw/controller/workspace"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// SSHBaker bakes a template's image over SSH with kthw's agent: the host
// keys the provider read from the builder VM's console are pinned in the
// workspace's known_hosts before the first connection, the agent is
// pushed, and the recipe's steps run as typed modules (packages with the
// distro's package manager, systemd units, commands). Last, the build
// user's authorized key and the agent's directories are removed, and the
// builder's address is unpinned again.
type SSHBaker struct {
	Workspace *workspace.Workspace
	// AgentBinary is the local kthw-agent to push.
	AgentBinary       string
	AgentDir, BlobDir string
	ControllerVersion string
	// ConnectTimeout bounds the wait for the builder's sshd (default 2m).
	ConnectTimeout time.Duration
	Events         progress.Sink
	Logger         *slog.Logger
}

var _ proxmox.Baker = (*SSHBaker)(nil)

// Bake implements proxmox.Baker.
func (b *SSHBaker) Bake(ctx context.Context, vm proxmox.BakeTarget, steps *proxmox.RecipeBake) (err error) {
	log := b.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	events := b.Events
	if events == nil {
		events = progress.Discard{}
	}
	addr := net.JoinHostPort(vm.Host, strconv.Itoa(vm.Port))
	if err := b.Workspace.PinHostKeys(addr, vm.HostKeys...); err != nil {
		return err
	}
	defer func() {
		if uerr := b.Workspace.UnpinHost(addr); uerr != nil {
			err = errors.Join(err, uerr)
		}
	}()
	t := sshx.Target{User: vm.User, Host: vm.Host, Port: vm.Port}
	opts := node.Options{
		SSH: sshx.Options{KnownHostsFile: b.Workspace.KnownHostsPath(), IdentityFiles: []string{b.Workspace.KeyPath()},
			ConnectTimeout: 10 * time.Second},
		AgentBinary: b.AgentBinary, AgentDir: b.AgentDir, BlobDir: b.BlobDir,
		ControllerVersion: b.ControllerVersion, Logger: log,
	}
	conn, err := b.connect(ctx, t, opts)
	if err != nil {
		return err
	}
	defer conn.Close()

	run := func(name string, req *agentv1.RunModuleRequest) error {
		start := time.Now()
		req.Name = name
		emit := func(st progress.Status, msg string) {
			events.Emit(progress.Event{Time: time.Now(), Node: vm.Host, Step: "bake " + name, Status: st, Message: msg, Duration: time.Since(start)})
		}
		emit(progress.Started, "")
		res, err := node.RunModule(ctx, conn.Agent, req, nil)
		switch {
		case err != nil:
			emit(progress.Failed, err.Error())
			return err
		case res.GetSkippedReason() != "":
			emit(progress.Skipped, res.GetSkippedReason())
		case res.GetChanged():
			emit(progress.Changed, "")
		default:
			emit(progress.Done, "")
		}
		log.InfoContext(ctx, "bake step done", "step", name, "changed", res.GetChanged(), "skipped", res.GetSkippedReason())
		return nil
	}
	var pkgs []*agentv1.Package
	for _, p := range steps.Packages {
		pkgs = append(pkgs, &agentv1.Package{Name: p})
	}
	if err := run("packages", &agentv1.RunModuleRequest{Module: &agentv1.RunModuleRequest_Packages{
		Packages: &agentv1.PackagesModule{Packages: pkgs}}}); err != nil {
		return err
	}
	for _, u := range steps.Enable {
		on := true
		if err := run("enable "+u, &agentv1.RunModuleRequest{Module: &agentv1.RunModuleRequest_SystemdUnit{
			SystemdUnit: &agentv1.SystemdUnitModule{Name: u, Enabled: &on}}}); err != nil {
			return err
		}
	}
	cmds := append([]proxmox.RecipeCommand(nil), steps.Clean...)
	agentDir, blobDir := b.AgentDir, b.BlobDir
	if agentDir == "" {
		agentDir = push.DefaultDir
	}
	if blobDir == "" {
		blobDir = node.DefaultBlobDir
	}
	cmds = append(cmds,
		// The build user keeps its account (clones' cloud-init gives it
		// their key again), not the workspace's key.
		proxmox.RecipeCommand{Argv: []string{"sh", "-c", `home=$(getent passwd "$1" | cut -d: -f6) && rm -f -- "$home/.ssh/authorized_keys"`, "sh", vm.User}},
		// kthw's agent (it keeps running from the removed file until the
		// session ends).
		proxmox.RecipeCommand{Argv: []string{"rm", "-rf", "--", path.Clean(agentDir), path.Clean(blobDir)}},
		proxmox.RecipeCommand{Argv: []string{"sh", "-c", `rmdir /var/lib/kthw 2>/dev/null || true`}},
	)
	for i, c := range cmds {
		if err := run(fmt.Sprintf("clean %d", i+1), &agentv1.RunModuleRequest{Module: &agentv1.RunModuleRequest_Command{
			Command: &agentv1.CommandModule{Argv: c.Argv, Removes: c.Removes, TimeoutSeconds: 600}}}); err != nil {
			return err
		}
	}
	return nil
}

// connect waits for the builder's sshd (it may start after cloud-init
// printed the keys) and starts the agent.
func (b *SSHBaker) connect(ctx context.Context, t sshx.Target, o node.Options) (*node.Conn, error) {
	timeout := b.ConnectTimeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	deadline := time.Now().Add(timeout)
	for {
		conn, err := node.Connect(ctx, t, o)
		if err == nil {
			return conn, nil
		}
		var hk *sshx.HostKeyError
		if errors.As(err, &hk) || errors.Is(err, sshx.ErrSudoPassword) || time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("connect to the builder VM at %s: %w", t, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
