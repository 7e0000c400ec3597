package action

import (
	"context"
	"errors"
	"fmt"
	"github.com/kthw/kthw/distro/profile"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/kthw/kthw/controller/config"
	"github.com/kthw/kthw/controller/fanout"
	"github.com/kthw/kthw/controller/node"
	"github.com/kthw/kthw/controller/phase"
	"github.com/kthw/kthw/controller/progress"
	"github.com/kthw/kthw/controller/provider"
	"github.com/kthw/kthw/controller/sshx"
	"github.com/kthw/kthw/controller/state"
	"github.com/kthw/kthw/controller/workspace"
)

// ClusterOptions are what the cluster verbs (up, status, down) share.
type ClusterOptions struct {
	Cluster   *config.Cluster
	Workspace *workspace.Workspace
	Provider  provider.Provider
	// AgentBinary is the local kthw-agent to push.
	AgentBinary       string
	ControllerVersion string
	// AcceptNew records the host key of a node not yet in known_hosts
	// (trust on first use); a changed key is still refused.
	AcceptNew bool
	// AgentDir and BlobDir override the agent's directories on the nodes.
	AgentDir, BlobDir string
	// Steps are the node phases every node walks after its agent is up
	// (node preparation, ...).
	Steps []phase.Step
	// OS is the release the profile's steps are for; a node that runs
	// another fails before its steps (zero: not checked).
	OS profile.OS
	// DryRun (plan) provisions nothing and runs the steps' Check only:
	// missing nodes are reported as "would create", existing ones get
	// the diff of what would change.
	DryRun      bool
	Concurrency int
	// NodeTimeout bounds the work on one node.
	NodeTimeout time.Duration
	Events      progress.Sink
	Logger      *slog.Logger
}

func (o *ClusterOptions) setDefaults() {
	if o.Concurrency <= 0 {
		o.Concurrency = 32
	}
	if o.NodeTimeout == 0 {
		o.NodeTimeout = 10 * time.Minute
	}
	if o.Events == nil {
		o.Events = progress.Discard{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

func (o *ClusterOptions) emit(node, step string, st progress.Status, msg string, d time.Duration) {
	o.Events.Emit(progress.Event{Time: time.Now(), Node: node, Step: step, Status: st, Message: msg, Duration: d})
}

// emitPhase turns a phase event into a progress event (and a journal entry
// when not a dry run).
func (o *ClusterOptions) emitPhase(ev phase.Event) {
	if ev.Started {
		o.emit(ev.Node, ev.Step, progress.Started, "", 0)
		return
	}
	st, msg := progress.Done, ""
	switch {
	case ev.Err != nil:
		st, msg = progress.Failed, ev.Err.Error()
	case ev.Result.Skipped != "":
		st, msg = progress.Skipped, ev.Result.Skipped
	case ev.Result.Changed:
		st, msg = progress.Changed, firstLine(ev.Result.Diff)
	}
	o.emit(ev.Node, ev.Step, st, msg, ev.Took)
	if !o.DryRun {
		js := state.StepDone
		switch st {
		case progress.Failed:
			js = state.StepFailed
		case progress.Skipped:
			js = state.StepSkipped
		}
		_, _ = o.Workspace.State.AppendJournal(context.Background(), state.JournalEntry{Node: ev.Node, Step: ev.Step, Status: js, Message: msg})
	}
}

func firstLine(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			return s[:i] + " ..."
		}
	}
	return s
}

// nodeOptions returns how to reach a provider's node.
func (o *ClusterOptions) nodeOptions(n provider.Node) (sshx.Target, node.Options, error) {
	t := sshx.Target{User: n.User, Host: n.Host, Port: n.Port}
	so := sshx.Options{KnownHostsFile: o.Workspace.KnownHostsPath(), AcceptNew: o.AcceptNew, ConnectTimeout: 10 * time.Second}
	if n.IdentityFile != "" {
		so.IdentityFiles = []string{n.IdentityFile}
	} else {
		so.IdentityFiles = []string{o.Workspace.KeyPath()}
	}
	if n.Jump != "" {
		j, err := sshx.ParseTarget(n.Jump)
		if err != nil {
			return t, node.Options{}, fmt.Errorf("node %s: jump %q: %w", n.Name, n.Jump, err)
		}
		so.Jump = &j
	}
	return t, node.Options{
		SSH:               so,
		AgentBinary:       o.AgentBinary,
		AgentHashStamp:    o.Workspace.AgentHashStampPath(),
		AgentDir:          o.AgentDir,
		BlobDir:           o.BlobDir,
		ControllerVersion: o.ControllerVersion,
		Logger:            o.Logger,
	}, nil
}

// pin records a host key the provider learned out of band.
func (o *ClusterOptions) pin(n provider.Node) error {
	if n.HostKey == "" {
		return nil
	}
	return o.Workspace.PinHostKey(o.pinAddr(n), n.HostKey)
}

// pinAddr is the known_hosts address of a provider's node.
func (o *ClusterOptions) pinAddr(n provider.Node) string {
	return net.JoinHostPort(n.Host, strconv.Itoa(n.Port))
}

// NodeReport is one node's outcome of a cluster verb.
type NodeReport struct {
	Name     string
	Role     config.Role
	Provider provider.Node
	// Agent, Facts and Status are set when the agent answered.
	AgentVersion string
	AgentSHA256  string
	Uploaded     bool
	Facts        *FactsView
	Status       *StatusView
	Changed      bool
	// Steps are the node phases' outcomes.
	Steps []phase.StepReport
	Err   error
	Took  time.Duration
}

// FactsView is the part of an agent's facts the cluster verbs report.
type FactsView struct {
	OS       string `json:"os"`
	Version  string `json:"version"`
	Kernel   string `json:"kernel"`
	Arch     string `json:"arch"`
	Hostname string `json:"hostname"`
	CPUs     int32  `json:"cpus"`
	Memory   uint64 `json:"memory_bytes"`
	Systemd  bool   `json:"systemd"`
	PkgMgr   string `json:"package_manager"`
}

// StatusView is the part of an agent's status the cluster verbs report.
type StatusView struct {
	UnitsAvailable bool              `json:"units_available"`
	UnitsDetail    string            `json:"units_detail,omitempty"`
	Units          map[string]string `json:"units,omitempty"`
}

// errFailedNodes is wrapped by the error of a verb some of whose nodes failed.
var errFailedNodes = errors.New("node(s) failed")

// ErrWrongOS is wrapped by the error of a node that runs another release
// than the cluster's profile is for.
var ErrWrongOS = errors.New("node runs another release than the profile")

// IsNodeFailure tells a verb that ran but had failing nodes (already
// reported per node) from one that could not run.
func IsNodeFailure(err error) bool { return errors.Is(err, errFailedNodes) }

// nodeReports collects a verb's per-node outcomes in the order of specs. A
// node whose work never started (the run was cancelled first) still carries
// its name and role.
func nodeReports(specs []config.NodeSpec, out []fanout.Outcome[NodeReport]) []NodeReport {
	reports := make([]NodeReport, len(out))
	for i, r := range out {
		reports[i] = r.Value
		reports[i].Name, reports[i].Role = specs[i].Name, specs[i].Role
		if r.Err != nil {
			reports[i].Err = r.Err
		}
	}
	return reports
}

func failedNodes(reports []NodeReport) error {
	n := 0
	for _, r := range reports {
		if r.Err != nil {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	return fmt.Errorf("%d of %d %w", n, len(reports), errFailedNodes)
}
