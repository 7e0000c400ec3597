package action

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/kthw/kthw/controller/config"
	"github.com/kthw/kthw/controller/fanout"
	"github.com/kthw/kthw/controller/node"
	"github.com/kthw/kthw/controller/phase"
	"github.com/kthw/kthw/controller/progress"
	"github.com/kthw/kthw/controller/provider"
	"github.com/kthw/kthw/controller/state"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// Up brings the cluster to the state its file describes: it provisions the
// nodes (adopting what exists), pushes and starts the agents and runs the
// node phases, every node in its own goroutine. Each node is recorded in
// state with intent before the provider is asked to create it, so a killed
// run is finished, not duplicated, by the next one.
func Up(ctx context.Context, o ClusterOptions) ([]NodeReport, error) {
	o.setDefaults()
	specs, err := o.Cluster.Nodes()
	if err != nil {
		return nil, err
	}
	if !o.DryRun {
		if err := o.Workspace.State.SetMeta(ctx, state.Meta{ClusterName: o.Cluster.Name}); err != nil {
			return nil, err
		}
		if err := cleanHalfMade(ctx, o, specs); err != nil {
			return nil, err
		}
		start := time.Now()
		o.emit("", "prepare", progress.Started, o.Provider.Name()+" provider", 0)
		if err := o.Provider.Prepare(ctx, specs); err != nil {
			o.emit("", "prepare", progress.Failed, err.Error(), time.Since(start))
			return nil, fmt.Errorf("prepare %s provider: %w", o.Provider.Name(), err)
		}
		o.emit("", "prepare", progress.Done, "", time.Since(start))
	}

	outputs := phase.NewOutputs()
	out := fanout.Each(ctx, len(specs), o.Concurrency, func(ctx context.Context, i int) (NodeReport, error) {
		ctx, cancel := context.WithTimeout(ctx, o.NodeTimeout)
		defer cancel()
		return upNode(ctx, o, specs[i], outputs)
	})
	reports := nodeReports(specs, out)
	return reports, failedNodes(reports)
}

// cleanHalfMade destroys nodes of this cluster that are in state with intent
// "creating" or "destroying" but are no longer in the cluster file: a killed
// run's leftovers. Nodes still in the file are adopted by Ensure instead.
func cleanHalfMade(ctx context.Context, o ClusterOptions, specs []config.NodeSpec) error {
	recs, err := o.Workspace.State.ListNodes(ctx)
	if err != nil {
		return err
	}
	for _, r := range recs {
		wanted := slices.ContainsFunc(specs, func(s config.NodeSpec) bool { return s.Name == r.Name })
		if wanted || r.Phase == state.PhaseCreated {
			continue
		}
		o.emit(r.Name, "cleanup", progress.Started, "left "+string(r.Phase)+" by an earlier run", 0)
		if err := destroyNode(ctx, o, r.Name, r.PinnedAddr()); err != nil {
			return err
		}
		o.emit(r.Name, "cleanup", progress.Done, "", 0)
	}
	existing, err := o.Provider.Existing(ctx)
	if err != nil {
		return err
	}
	for _, name := range existing {
		if !slices.ContainsFunc(specs, func(s config.NodeSpec) bool { return s.Name == name }) {
			o.emit(name, "provision", progress.Info, "exists but is not in the cluster file; left alone (down removes it)", 0)
		}
	}
	return nil
}

func upNode(ctx context.Context, o ClusterOptions, spec config.NodeSpec, outputs *phase.Outputs) (NodeReport, error) {
	rep := NodeReport{Name: spec.Name, Role: spec.Role}
	st := o.Workspace.State
	began := time.Now()

	if o.DryRun {
		n, err := o.Provider.Observe(ctx, spec)
		if err != nil {
			return rep, err
		}
		rep.Provider = n
		if n.State != provider.StateRunning && n.State != provider.StateUnknown {
			rep.Changed = true
			o.emit(spec.Name, "provision", progress.Changed, "would "+map[bool]string{true: "create", false: "start"}[n.State == provider.StateMissing]+" the node", 0)
			return rep, nil
		}
		return connectAndRun(ctx, o, spec, outputs, rep, began)
	}

	// Intent first: a run killed after this line is adopted by the next.
	rec, err := st.GetNode(ctx, spec.Name)
	if errors.Is(err, state.ErrNotFound) || (err == nil && rec.Phase != state.PhaseCreated) {
		n := state.Node{Name: spec.Name, Role: string(spec.Role), Provider: o.Provider.Name(),
			Phase: state.PhaseCreating, Address: spec.Address}
		if err == nil && rec.Provider == n.Provider {
			// A killed run's record: keep the identifier its provider recorded (a VMID
			// whose clone may still be under way), or the next Ensure cannot find it.
			n.ProviderID = rec.ProviderID
		}
		err = st.PutNode(ctx, n)
	}
	if err != nil {
		return rep, err
	}

	if err := o.nodeStep(ctx, spec.Name, "provision", func() (string, error) {
		n, err := o.Provider.Ensure(ctx, spec)
		if err != nil {
			return "", err
		}
		rep.Provider = n
		if err := o.pin(n); err != nil {
			return "", err
		}
		return n.Host, st.UpdateNode(ctx, spec.Name, func(r *state.Node) error {
			r.Phase, r.ProviderID, r.HostKey, r.PinnedAt = state.PhaseCreated, n.ID, n.HostKey, ""
			if n.HostKey != "" {
				r.PinnedAt = o.pinAddr(n)
			}
			return nil
		})
	}); err != nil {
		return rep, err
	}

	return connectAndRun(ctx, o, spec, outputs, rep, began)
}

// connectAndRun starts the node's agent, reads its facts and walks the node
// phases.
func connectAndRun(ctx context.Context, o ClusterOptions, spec config.NodeSpec, outputs *phase.Outputs, rep NodeReport, began time.Time) (NodeReport, error) {
	st := o.Workspace.State
	var conn *node.Conn
	if err := o.nodeStep(ctx, spec.Name, "agent", func() (string, error) {
		t, opts, err := o.nodeOptions(rep.Provider)
		if err != nil {
			return "", err
		}
		conn, err = node.Connect(ctx, t, opts)
		if err != nil {
			return "", err
		}
		rep.AgentVersion = conn.Handshake.GetAgentVersion()
		rep.AgentSHA256 = conn.Handshake.GetBinarySha256()
		rep.Uploaded = conn.Push.Uploaded
		msg := "agent " + rep.AgentVersion + " running"
		if conn.Push.Uploaded {
			msg = fmt.Sprintf("pushed %d bytes, %s", conn.Push.Bytes, msg)
		}
		if o.DryRun {
			return msg, nil
		}
		return msg, st.UpdateNode(ctx, spec.Name, func(r *state.Node) error {
			r.AgentSHA256 = rep.AgentSHA256
			return nil
		})
	}); err != nil {
		return rep, err
	}
	defer conn.Close()

	var facts *agentv1.FactsResponse
	if err := o.nodeStep(ctx, spec.Name, "facts", func() (string, error) {
		f, err := conn.Agent.Facts(ctx, &agentv1.FactsRequest{})
		if err != nil {
			return "", fmt.Errorf("facts: %w", err)
		}
		facts = f
		rep.Facts = factsView(f)
		if len(o.Steps) > 0 && o.OS.ID != "" && !o.OS.Matches(f.GetOs().GetId(), f.GetOs().GetVersionId()) {
			return "", fmt.Errorf("%w: the node runs %s %s, and profile %q is for %s: use the profile of the nodes' release (kthw-controller profiles list), or nodes of %s",
				ErrWrongOS, f.GetOs().GetId(), f.GetOs().GetVersionId(), o.Cluster.Profile, o.OS, o.OS)
		}
		return fmt.Sprintf("%s %s, %s, %d CPUs", rep.Facts.OS, rep.Facts.Version, rep.Facts.Kernel, rep.Facts.CPUs), nil
	}); err != nil {
		return rep, err
	}

	pn := &phase.Node{Name: spec.Name, Role: spec.Role, Agent: conn.Agent, Facts: facts, DryRun: o.DryRun, Outputs: outputs,
		Log: func(step string, l *agentv1.LogLine) {
			o.Logger.DebugContext(ctx, l.GetText(), "node", spec.Name, "step", step)
		}}
	pr := phase.Run(ctx, pn, o.Steps, func(ev phase.Event) { o.emitPhase(ev) })
	rep.Steps, rep.Changed = pr.Steps, pr.Changed
	if pr.Err != nil {
		return rep, pr.Err
	}
	rep.Took = time.Since(began)
	o.emit(spec.Name, "ready", progress.Done, "", rep.Took)
	return rep, nil
}

// nodeStep runs one of a node's own steps (provision, agent, facts)
// between its progress events; a failure is also journaled unless this is
// a dry run. fn returns the message of the done event.
func (o *ClusterOptions) nodeStep(ctx context.Context, nodeName, step string, fn func() (string, error)) error {
	t := time.Now()
	o.emit(nodeName, step, progress.Started, "", 0)
	msg, err := fn()
	if err != nil {
		o.emit(nodeName, step, progress.Failed, err.Error(), time.Since(t))
		if !o.DryRun {
			o.Workspace.State.AppendJournal(context.WithoutCancel(ctx), state.JournalEntry{Node: nodeName, Step: step, Status: state.StepFailed, Message: err.Error()})
		}
		return err
	}
	o.emit(nodeName, step, progress.Done, msg, time.Since(t))
	return nil
}

func factsView(f *agentv1.FactsResponse) *FactsView {
	return &FactsView{
		OS: f.GetOs().GetId(), Version: f.GetOs().GetVersionId(), Kernel: f.GetKernel(), Arch: f.GetArch(),
		Hostname: f.GetHostname(), CPUs: f.GetCpus(), Memory: f.GetMemoryBytes(),
		Systemd: f.GetSystemdUsable(), PkgMgr: f.GetPackageManager(),
	}
}

func statusView(s *agentv1.StatusResponse) *StatusView {
	v := &StatusView{UnitsAvailable: s.GetUnitsAvailable(), UnitsDetail: s.GetUnitsDetail()}
	if len(s.GetUnits()) > 0 {
		v.Units = map[string]string{}
		for _, u := range s.GetUnits() {
			state := u.GetActiveState()
			if u.GetLoadState() == "not-found" {
				state = "not-found"
			}
			v.Units[u.GetName()] = state
		}
	}
	return v
}
