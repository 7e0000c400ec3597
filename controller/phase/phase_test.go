package phase

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kthw/kthw/controller/config"
)

// A control plane publishes a token after its init; workers wait for it and
// use it. No lockstep: workers run their own earlier steps meanwhile.
func TestOutputsFlowBetweenNodes(t *testing.T) {
	outs := NewOutputs()
	var mu sync.Mutex
	var order []string
	record := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, s)
	}
	steps := []Step{
		{Name: "prep", Run: func(ctx context.Context, n *Node) (Result, error) {
			record(n.Name + ":prep")
			return Result{Changed: true}, nil
		}},
		{Name: "init", When: func(n *Node) bool { return n.Role == config.RoleControlPlane }, Produces: []string{"token"},
			Run: func(ctx context.Context, n *Node) (Result, error) {
				time.Sleep(20 * time.Millisecond)
				record(n.Name + ":init")
				n.Outputs.Set("token", "abc.123")
				return Result{Changed: true}, nil
			}},
		{Name: "join", When: func(n *Node) bool { return n.Role == config.RoleWorker },
			Run: func(ctx context.Context, n *Node) (Result, error) {
				tok, err := n.Outputs.Wait(ctx, "token")
				if err != nil {
					return Result{}, err
				}
				record(n.Name + ":join:" + tok)
				return Result{Changed: true}, nil
			}},
	}
	nodes := []*Node{
		{Name: "cp", Role: config.RoleControlPlane, Outputs: outs},
		{Name: "w1", Role: config.RoleWorker, Outputs: outs},
		{Name: "w2", Role: config.RoleWorker, Outputs: outs},
	}
	var wg sync.WaitGroup
	reps := make([]Report, len(nodes))
	for i, n := range nodes {
		wg.Add(1)
		go func(i int, n *Node) {
			defer wg.Done()
			reps[i] = Run(context.Background(), n, steps, nil)
		}(i, n)
	}
	wg.Wait()
	for i, r := range reps {
		if r.Err != nil || !r.Changed {
			t.Fatalf("node %s: %+v", nodes[i].Name, r)
		}
	}
	got := strings.Join(order, " ")
	initAt := strings.Index(got, "cp:init")
	for _, w := range []string{"w1", "w2"} {
		if p := strings.Index(got, w+":prep"); p < 0 || p > initAt {
			t.Fatalf("%s prep should run before cp init (no lockstep): %s", w, got)
		}
		if j := strings.Index(got, w+":join:abc.123"); j < initAt {
			t.Fatalf("%s joined before init: %s", w, got)
		}
	}
}

// When the producer fails, waiters fail at once with the reason.
func TestFailedProducerReleasesWaiters(t *testing.T) {
	outs := NewOutputs()
	steps := []Step{
		{Name: "prep", When: func(n *Node) bool { return n.Role == config.RoleControlPlane },
			Run: func(ctx context.Context, n *Node) (Result, error) { return Result{}, errors.New("disk full") }},
		{Name: "init", When: func(n *Node) bool { return n.Role == config.RoleControlPlane }, Produces: []string{"token"},
			Run: func(ctx context.Context, n *Node) (Result, error) {
				t.Fatal("init ran after a failure")
				return Result{}, nil
			}},
		{Name: "join", When: func(n *Node) bool { return n.Role == config.RoleWorker },
			Run: func(ctx context.Context, n *Node) (Result, error) {
				_, err := n.Outputs.Wait(ctx, "token")
				return Result{}, err
			}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan Report)
	go func() { done <- Run(ctx, &Node{Name: "w1", Role: config.RoleWorker, Outputs: outs}, steps, nil) }()
	cp := Run(ctx, &Node{Name: "cp", Role: config.RoleControlPlane, Outputs: outs}, steps, nil)
	if cp.Err == nil || !strings.Contains(cp.Err.Error(), "disk full") {
		t.Fatalf("cp: %v", cp.Err)
	}
	w := <-done
	if !errors.Is(w.Err, ErrOutputFailed) || !strings.Contains(w.Err.Error(), "disk full") || !strings.Contains(w.Err.Error(), "node cp") {
		t.Fatalf("worker: %v", w.Err)
	}
}

func TestEventsAndStop(t *testing.T) {
	var events []Event
	steps := []Step{
		{Name: "a", Run: func(ctx context.Context, n *Node) (Result, error) { return Result{Diff: "x"}, nil }},
		{Name: "b", Run: func(ctx context.Context, n *Node) (Result, error) { return Result{}, errors.New("boom") }},
		{Name: "c", Run: func(ctx context.Context, n *Node) (Result, error) { t.Fatal("c ran"); return Result{}, nil }},
	}
	rep := Run(context.Background(), &Node{Name: "n"}, steps, func(e Event) { events = append(events, e) })
	if len(events) != 4 || !events[0].Started || events[1].Result.Diff != "x" || events[3].Err == nil {
		t.Fatalf("events %+v", events)
	}
	if rep.Err == nil || !strings.HasPrefix(rep.Err.Error(), "b: boom") || len(rep.Steps) != 2 {
		t.Fatalf("report %+v", rep)
	}
}
