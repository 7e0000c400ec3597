// Package phase runs a cluster's work as one pipeline per node: an ordered
// list of steps that each node walks on its own (one goroutine and one agent
// session per node, no lockstep between nodes). Steps that need another
// node's result wait for it through Outputs: kubeadm init publishes its join
// token and CA hash, and joins on other nodes wait for them; when the
// publishing node fails, the waiters fail at once instead of hanging.
//
// Every step honours the dry-run guard: with DryRun set, module steps run
// Check only and report the diff; nothing on the node changes.
package phase

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/kthw/kthw/controller/config"
	"github.com/kthw/kthw/controller/node"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// Step is one unit of a node's pipeline.
type Step struct {
	// Name identifies the step in progress events and the journal, e.g.
	// "sysctl" or "kubeadm/join".
	Name string
	// When, if set, decides whether the step applies to the node (a role,
	// a distro); a step that does not apply is skipped silently.
	When func(n *Node) bool
	// Produces names the outputs the step publishes; they are failed if
	// the step (or an earlier one on the node) fails, so waiters return.
	Produces []string
	// Run does the step.
	Run func(ctx context.Context, n *Node) (Result, error)
}

// Result is what a step did.
type Result struct {
	Changed bool
	// Diff describes the change (or, in a dry run, what would change).
	Diff string
	// Skipped says why the step did nothing, if it did nothing on purpose.
	Skipped string
}

// Node is a node walking its pipeline.
type Node struct {
	Name  string
	Role  config.Role
	Agent agentv1.AgentServiceClient
	Facts *agentv1.FactsResponse
	// DryRun makes module steps run Check only.
	DryRun  bool
	Outputs *Outputs
	// Log receives the agent's log lines of module steps (may be nil).
	Log func(step string, line *agentv1.LogLine)
}

// Event reports a step's start and end.
type Event struct {
	Node, Step string
	// Started is true for the start event; the end event carries Result,
	// Err and Took.
	Started bool
	Result  Result
	Err     error
	Took    time.Duration
}

// Report is a node's outcome of a pipeline.
type Report struct {
	Steps   []StepReport
	Changed bool
	Err     error
}

// StepReport is one step's outcome.
type StepReport struct {
	Name   string
	Result Result
	Err    error
	Took   time.Duration
}

// Run walks n through steps in order, stopping at the first failure, and
// calls emit for each step's start and end. Steps after a failure are not
// run; outputs they would produce are failed.
func Run(ctx context.Context, n *Node, steps []Step, emit func(Event)) Report {
	if emit == nil {
		emit = func(Event) {}
	}
	var rep Report
	for i, s := range steps {
		if s.When != nil && !s.When(n) {
			continue
		}
		if err := ctx.Err(); err != nil {
			rep.Err = err
			failRest(n, steps[i:], err)
			return rep
		}
		emit(Event{Node: n.Name, Step: s.Name, Started: true})
		start := time.Now()
		res, err := s.Run(ctx, n)
		took := time.Since(start)
		emit(Event{Node: n.Name, Step: s.Name, Result: res, Err: err, Took: took})
		rep.Steps = append(rep.Steps, StepReport{Name: s.Name, Result: res, Err: err, Took: took})
		if res.Changed {
			rep.Changed = true
		}
		if err != nil {
			rep.Err = fmt.Errorf("%s: %w", s.Name, err)
			failRest(n, steps[i:], rep.Err)
			return rep
		}
	}
	return rep
}

func failRest(n *Node, steps []Step, err error) {
	if n.Outputs == nil {
		return
	}
	for _, s := range steps {
		if s.When != nil && !s.When(n) {
			continue
		}
		for _, key := range s.Produces {
			n.Outputs.Fail(key, fmt.Errorf("node %s: %w", n.Name, err))
		}
	}
}

// Module returns a step that runs the module build returns through the
// node's agent: Check in a dry run, Apply otherwise. build may return nil to
// skip the step on this node.
func Module(name string, build func(n *Node) (*agentv1.RunModuleRequest, error)) Step {
	return Step{Name: name, Run: func(ctx context.Context, n *Node) (Result, error) {
		req, err := build(n)
		if err != nil {
			return Result{}, err
		}
		if req == nil {
			return Result{Skipped: "not needed on this node"}, nil
		}
		req.CheckOnly = n.DryRun
		if req.Name == "" {
			req.Name = name
		}
		res, err := node.RunModule(ctx, n.Agent, req, func(ev *agentv1.RunModuleEvent) {
			if l := ev.GetLog(); l != nil && n.Log != nil {
				n.Log(name, l)
			}
		})
		out := Result{Changed: res.GetChanged(), Diff: res.GetDiff(), Skipped: res.GetSkippedReason()}
		return out, err
	}}
}

// ErrOutputFailed is wrapped by Wait when the output's producer failed.
var ErrOutputFailed = errors.New("output failed")

// Outputs passes values between nodes' pipelines: one node Sets a key, any
// number Wait for it.
type Outputs struct {
	mu   sync.Mutex
	vals map[string]*output
}

type output struct {
	done chan struct{}
	val  string
	err  error
}

// NewOutputs returns an empty set of outputs.
func NewOutputs() *Outputs { return &Outputs{vals: map[string]*output{}} }

func (o *Outputs) get(key string) *output {
	o.mu.Lock()
	defer o.mu.Unlock()
	v, ok := o.vals[key]
	if !ok {
		v = &output{done: make(chan struct{})}
		o.vals[key] = v
	}
	return v
}

// Set publishes key; the first Set or Fail wins.
func (o *Outputs) Set(key, val string) { o.finish(key, val, nil) }

// Fail marks key as never coming, with the reason.
func (o *Outputs) Fail(key string, err error) { o.finish(key, "", err) }

func (o *Outputs) finish(key, val string, err error) {
	v := o.get(key)
	o.mu.Lock()
	defer o.mu.Unlock()
	select {
	case <-v.done:
		return
	default:
	}
	v.val, v.err = val, err
	close(v.done)
}

// Wait blocks until key is set or failed, or ctx is done.
func (o *Outputs) Wait(ctx context.Context, key string) (string, error) {
	v := o.get(key)
	select {
	case <-v.done:
		if v.err != nil {
			return "", fmt.Errorf("wait for %s: %w: %w", key, ErrOutputFailed, v.err)
		}
		return v.val, nil
	case <-ctx.Done():
		return "", fmt.Errorf("wait for %s: %w", key, ctx.Err())
	}
}
