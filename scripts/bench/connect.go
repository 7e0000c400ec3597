package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/kthw/kthw/controller/config"
	"github.com/kthw/kthw/controller/node"
	"github.com/kthw/kthw/controller/sshx"
)

func hostsOf(specs []config.NodeSpec) []string {
	var out []string
	for _, s := range specs {
		out = append(out, s.Address.Addr().String())
	}
	return out
}

// connectSamples are node.Connect's step times on lab nodes.
type connectSamples struct{ dial, push, start durations }

func (c connectSamples) String() string {
	ms := func(d durations) string { return num(float64(d.median().Microseconds())/1000) + " ms" }
	return fmt.Sprintf("SSH dial %s, push check %s, agent start + Handshake %s (medians of %d)", ms(c.dial), ms(c.push), ms(c.start), len(c.dial))
}

// connectBreakdown connects to every host at once, iters times, the way the
// controller does (node.Connect), and records the time of each step.
func (e *benchEnv) connectBreakdown(ctx context.Context, ws string, hosts []string, iters int) (connectSamples, error) {
	opts := node.Options{
		SSH: sshx.Options{IdentityFiles: []string{filepath.Join(ws, "id_ed25519")},
			KnownHostsFile: filepath.Join(ws, "known_hosts"), ConnectTimeout: 10 * time.Second},
		AgentBinary: e.agent, ControllerVersion: "bench",
	}
	var out connectSamples
	var mu sync.Mutex
	for i := 0; i < iters; i++ {
		var wg sync.WaitGroup
		errs := make([]error, len(hosts))
		for k, h := range hosts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := node.Connect(ctx, sshx.Target{User: "root", Host: h, Port: 22}, opts)
				if err != nil {
					errs[k] = err
					return
				}
				mu.Lock()
				out.dial = append(out.dial, c.DialTime)
				out.push = append(out.push, c.PushTime)
				out.start = append(out.start, c.StartTime)
				mu.Unlock()
				c.Close()
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return out, err
		}
	}
	return out, nil
}
