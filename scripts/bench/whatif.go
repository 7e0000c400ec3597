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

// The what-if runs: how fast a no-op re-converge would be if the agent push
// check did not hash the 13 MB agent on the node on every connection
// (controller/push runs `sha256sum < <agent>` each time). On the nodes, a
// sha256sum earlier in root's PATH answers for a file at the agent's
// content-addressed path /var/lib/kthw/agent/<sha256>/kthw-agent with that
// name's hash, as a push check that trusts the path (or a size/mtime stamp)
// would; every other use, such as the upload's verification, runs the real
// sha256sum. It is installed only for these runs and removed after them.

const noHashShim = `#!/bin/sh
# kthw bench what-if (scripts/bench/whatif.go): a file at the agent's
# content-addressed path is taken to have the hash its path names.
f=$(readlink /proc/self/fd/0 2>/dev/null)
case "$#:$f" in
0:/var/lib/kthw/agent/*/kthw-agent)
	h=${f#/var/lib/kthw/agent/}
	echo "${h%/kthw-agent}  -"
	exit 0 ;;
esac
exec /usr/bin/sha256sum "$@"
`

const noHashPath = "/usr/local/bin/sha256sum"

func (e *benchEnv) installNoHash(ctx context.Context, ws string, hosts []string) error {
	return e.onAll(ctx, ws, hosts, "cat > "+noHashPath+".tmp <<'KTHW_BENCH_EOF'\n"+noHashShim+"KTHW_BENCH_EOF\nchmod 755 "+noHashPath+".tmp && mv "+noHashPath+".tmp "+noHashPath)
}

func (e *benchEnv) removeNoHash(ctx context.Context, ws string, hosts []string) error {
	return e.onAll(context.WithoutCancel(ctx), ws, hosts, "rm -f "+noHashPath)
}

// onAll runs a shell command on every host over OpenSSH, 16 at a time.
func (e *benchEnv) onAll(ctx context.Context, ws string, hosts []string, command string) error {
	var wg sync.WaitGroup
	errs := make([]error, len(hosts))
	sem := make(chan struct{}, 16)
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			_, errs[i] = timedRun(ctx, e.root, nil, sshArgv(ws, h, command)...)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

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

// paired calls measure pairs times with the what-if push check installed on
// the hosts and pairs times without, alternating (and alternating which
// comes first), so that both see the same load on a shared machine.
func (e *benchEnv) paired(ctx context.Context, ws string, hosts []string, pairs int, measure func(noHash bool) error) error {
	for i := 0; i < pairs; i++ {
		order := []bool{true, false}
		if i%2 == 1 {
			order = []bool{false, true}
		}
		for _, on := range order {
			if on {
				if err := e.installNoHash(ctx, ws, hosts); err != nil {
					e.removeNoHash(ctx, ws, hosts)
					return err
				}
			}
			err := measure(on)
			if on {
				err = errors.Join(err, e.removeNoHash(ctx, ws, hosts))
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}
