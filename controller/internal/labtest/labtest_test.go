package labtest

import (
	"context"
	"strings"
	"testing"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

func TestStart(t *testing.T) {
	c := Start(t, 2)
	for _, nd := range c.Nodes {
		f, err := nd.Agent.Facts(context.Background(), &agentv1.FactsRequest{})
		if err != nil || f.GetHostname() != nd.Name || !f.GetSystemdUsable() {
			t.Fatalf("%s: facts %v %v", nd.Name, f, err)
		}
		if out := c.Exec(t, nd, "hostname"); strings.TrimSpace(out) != nd.Name {
			t.Fatalf("hostname %q", out)
		}
	}
}
