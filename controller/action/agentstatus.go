// Package action holds what the controller's verbs do, as functions of an
// options struct. The CLI fills the options and renders the results.
package action

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/kthw/kthw/controller/fanout"
	"github.com/kthw/kthw/controller/node"
	"github.com/kthw/kthw/controller/sshx"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// AgentStatusOptions are the inputs of AgentStatus.
type AgentStatusOptions struct {
	Targets     []sshx.Target
	Node        node.Options
	Concurrency int
	Timeout     time.Duration
	Logger      *slog.Logger
}

// TargetReport is what one target answered, or why it did not.
type TargetReport struct {
	Target       string
	Err          error
	AgentVersion string
	APIVersion   string
	SHA256       string
	Uploaded     bool
	UploadBytes  int64
	Facts        *agentv1.FactsResponse
	Status       *agentv1.StatusResponse
	Dial         time.Duration
	Push         time.Duration
	Start        time.Duration
}

// AgentStatus connects to every target in parallel (pushing the agent where
// needed) and asks each for its facts and status. One target's failure is
// recorded in its report and does not stop the others.
func AgentStatus(ctx context.Context, o AgentStatusOptions) []TargetReport {
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Minute
	}
	out := fanout.Each(ctx, len(o.Targets), o.Concurrency, func(ctx context.Context, i int) (TargetReport, error) {
		ctx, cancel := context.WithTimeout(ctx, o.Timeout)
		defer cancel()
		return agentStatusOne(ctx, o.Targets[i], o)
	})
	reports := make([]TargetReport, len(out))
	for i, r := range out {
		reports[i] = r.Value
		reports[i].Target = o.Targets[i].String()
		if r.Err != nil {
			reports[i].Err = r.Err
		}
	}
	return reports
}

func agentStatusOne(ctx context.Context, t sshx.Target, o AgentStatusOptions) (TargetReport, error) {
	rep := TargetReport{Target: t.String()}
	c, err := node.Connect(ctx, t, o.Node)
	if err != nil {
		return rep, err
	}
	defer c.Close()
	rep.AgentVersion = c.Handshake.GetAgentVersion()
	rep.APIVersion = c.Handshake.GetApiVersion()
	rep.SHA256 = c.Handshake.GetBinarySha256()
	rep.Uploaded = c.Push.Uploaded
	rep.UploadBytes = c.Push.Bytes
	rep.Dial, rep.Push, rep.Start = c.DialTime, c.PushTime, c.StartTime

	facts, err := c.Agent.Facts(ctx, &agentv1.FactsRequest{})
	if err != nil {
		return rep, fmt.Errorf("facts from %s: %w", t, err)
	}
	rep.Facts = facts
	st, err := c.Agent.Status(ctx, &agentv1.StatusRequest{})
	if err != nil {
		return rep, fmt.Errorf("status from %s: %w", t, err)
	}
	rep.Status = st
	return rep, nil
}
