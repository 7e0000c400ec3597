package action

import (
	"context"
	"fmt"
	"time"

	"github.com/kthw/kthw/controller/fanout"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// Status reports every node of the cluster: its provider state and, where
// its agent answers, the agent version, facts and unit status. It changes
// nothing on the nodes beyond pushing the agent where it is missing.
func Status(ctx context.Context, o ClusterOptions, timeout time.Duration) ([]NodeReport, error) {
	o.setDefaults()
	specs, err := o.Cluster.Nodes()
	if err != nil {
		return nil, err
	}
	out := fanout.Each(ctx, len(specs), o.Concurrency, func(ctx context.Context, i int) (NodeReport, error) {
		spec := specs[i]
		rep := NodeReport{Name: spec.Name, Role: spec.Role}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		began := time.Now()
		n, conn, err := o.connect(ctx, spec)
		rep.Provider = n
		if err != nil {
			return rep, err
		}
		defer conn.Close()
		rep.AgentVersion = conn.Handshake.GetAgentVersion()
		rep.AgentSHA256 = conn.Handshake.GetBinarySha256()
		rep.Uploaded = conn.Push.Uploaded
		f, err := conn.Agent.Facts(ctx, &agentv1.FactsRequest{})
		if err != nil {
			return rep, fmt.Errorf("facts from %s: %w", spec.Name, err)
		}
		rep.Facts = factsView(f)
		s, err := conn.Agent.Status(ctx, &agentv1.StatusRequest{})
		if err != nil {
			return rep, fmt.Errorf("status from %s: %w", spec.Name, err)
		}
		rep.Status = statusView(s)
		rep.Took = time.Since(began)
		return rep, nil
	})
	reports := nodeReports(specs, out)
	return reports, failedNodes(reports)
}
