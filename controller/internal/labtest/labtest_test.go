package labtest

import (
	"context"
	"fmt"
	"strings"
	"testing"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

func TestStart(t *testing.T) {
	c := Start(t, 2)
	if len(c.Nodes) != 2 {
		t.Fatalf("%d nodes, want 2", len(c.Nodes))
	}
	for i, nd := range c.Nodes {
		if want := fmt.Sprintf("node-%d", i+1); nd.Name != want {
			t.Errorf("Nodes[%d] is %s, want %s", i, nd.Name, want)
		}
		f, err := nd.Agent.Facts(context.Background(), &agentv1.FactsRequest{})
		if err != nil || f.GetHostname() != nd.Name || !f.GetSystemdUsable() {
			t.Fatalf("%s: facts %v %v", nd.Name, f, err)
		}
		if out := c.Exec(t, nd, "hostname"); strings.TrimSpace(out) != nd.Name {
			t.Fatalf("hostname %q", out)
		}
	}
}
