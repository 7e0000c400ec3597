package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// The spine benchmarks live in controller/node (bench_test.go): a real
// OpenSSH sshd on loopback, the agent binary `make build` wrote, a live
// session. They need root (sshd, test users with sudo).

// group is one run of the test binary: benchmarks matching pattern, each
// with b.N = iters.
type group struct {
	pattern string
	iters   int
}

type spineOpts struct {
	agent, user             string
	rpcN, sshN, connN, putN int
}

// spine compiles the controller/node benchmarks once and runs each group
// with its own -benchtime.
func spine(ctx context.Context, root, tmp string, o spineOpts, stderr io.Writer) (results, error) {
	testBin := filepath.Join(tmp, "node.test")
	fmt.Fprintln(stderr, "bench: compiling controller/node benchmarks")
	build := exec.CommandContext(ctx, "go", "test", "-c", "-o", testBin, "./controller/node")
	build.Dir, build.Stdout, build.Stderr = root, stderr, stderr
	if err := build.Run(); err != nil {
		return nil, fmt.Errorf("go test -c ./controller/node: %w", err)
	}
	env := append(os.Environ(), "KTHW_BENCH_AGENT="+o.agent)
	if o.user != "" {
		env = append(env, "KTHW_BENCH_USER="+o.user)
	}
	res := results{}
	var failed error
	for _, g := range []group{
		{"^BenchmarkAgentRPC$", o.rpcN},
		{"^BenchmarkSSHExec$", o.sshN},
		{"^BenchmarkConnect$", o.connN},
		{"^BenchmarkPutFile64MiB$", o.putN},
	} {
		if err := runGroup(ctx, testBin, filepath.Join(root, "controller", "node"), env, g, res, stderr); err != nil {
			failed = errors.Join(failed, err)
			if ctx.Err() != nil {
				break
			}
		}
	}
	return res, failed
}

// results maps a benchmark name (without "Benchmark" and the GOMAXPROCS
// suffix) to its metrics by unit.
type results map[string]map[string]float64

func (r results) get(name, unit string) float64 {
	if v, ok := r[name][unit]; ok {
		return v
	}
	return math.NaN()
}

// runGroup runs one group, copies its output to w and records its results.
func runGroup(ctx context.Context, testBin, dir string, env []string, g group, res results, w io.Writer) error {
	fmt.Fprintf(w, "bench: %s, %d iterations\n", g.pattern, g.iters)
	cmd := exec.CommandContext(ctx, testBin, "-test.run", "^$", "-test.bench", g.pattern,
		"-test.benchtime", strconv.Itoa(g.iters)+"x", "-test.count", "1", "-test.timeout", "10m")
	cmd.Dir, cmd.Env, cmd.Stderr = dir, env, w
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run benchmarks %s: %w", g.pattern, err)
	}
	skipped := false
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(w, line)
		if strings.Contains(line, "--- SKIP") {
			skipped = true
		}
		if name, metrics, ok := parseLine(line); ok {
			res[name] = metrics
		}
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("benchmarks %s: %w", g.pattern, err)
	}
	if skipped {
		return fmt.Errorf("benchmarks %s skipped (see the reason above)", g.pattern)
	}
	return nil
}

// parseLine reads a result line such as
// "BenchmarkConnect/cold-10-2   5   3471657197 ns/op   3249 p50-ms".
func parseLine(line string) (string, map[string]float64, bool) {
	f := strings.Fields(line)
	if len(f) < 2 || !strings.HasPrefix(f[0], "Benchmark") {
		return "", nil, false
	}
	if _, err := strconv.Atoi(f[1]); err != nil {
		return "", nil, false
	}
	name := strings.TrimPrefix(f[0], "Benchmark")
	if p := runtime.GOMAXPROCS(0); p != 1 {
		name = strings.TrimSuffix(name, "-"+strconv.Itoa(p))
	}
	m := map[string]float64{}
	for i := 2; i+1 < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			continue
		}
		m[f[i+1]] = v
	}
	return name, m, true
}

// spineRows are the spine's lines of the results table.
func spineRows(r results, o spineOpts) []row {
	lat := func(name string) string {
		return fmt.Sprintf("p50 %s ms · p99 %s ms · mean %s ms", num(r.get(name, "p50-ms")), num(r.get(name, "p99-ms")), num(r.get(name, "mean-ms")))
	}
	connect := func(name, label string) row {
		return row{
			what: "connect+push+handshake, " + label,
			value: fmt.Sprintf("wall p50 %s ms · mean %s ms; per node: dial %s, push %s, start %s ms; pushed %s MB/node",
				num(r.get("Connect/"+name, "p50-ms")), num(r.get("Connect/"+name, "mean-ms")),
				num(r.get("Connect/"+name, "dial-ms")), num(r.get("Connect/"+name, "push-ms")),
				num(r.get("Connect/"+name, "start-ms")), num(r.get("Connect/"+name, "pushed-MB/node"))),
		}
	}
	return []row{
		{what: "module RPC: `command` check_only, `creates` guard exists (no-op)", value: lat("AgentRPC/module-command-noop"), goal: "p50 ≤ 1 ms", ratio: ratio(r.get("AgentRPC/module-command-noop", "p50-ms") / 1)},
		{what: "module RPC: `file` check, unchanged 480 B file", value: lat("AgentRPC/module-file-check"), goal: "p50 ≤ 1 ms", ratio: ratio(r.get("AgentRPC/module-file-check", "p50-ms") / 1)},
		{what: "Handshake RPC", value: lat("AgentRPC/handshake")},
		{what: "SSH exec `true` on an open connection (floor under push/start)", value: lat("SSHExec")},
		connect("cold-1", "cold (agent not on the node), 1 target"),
		connect("warm-1", "warm (agent already pushed), 1 target"),
		connect("cold-10", "cold, 10 targets in parallel"),
		connect("warm-10", "warm, 10 targets in parallel"),
		{what: "agent binary size", value: num(r.get("AgentRPC/memory", "binary-MB")) + " MB", goal: "≤ 20 MB", ratio: ratio(r.get("AgentRPC/memory", "binary-MB") / 20)},
		{what: "agent memory, idle after handshake", value: fmt.Sprintf("VmRSS %s MiB · VmHWM %s MiB", num(r.get("AgentRPC/memory", "idle-VmRSS-MiB")), num(r.get("AgentRPC/memory", "idle-VmHWM-MiB")))},
		{what: fmt.Sprintf("agent memory, after the RPC loops (3×%d calls)", o.rpcN), value: fmt.Sprintf("VmRSS %s MiB · VmHWM %s MiB", num(r.get("AgentRPC/memory", "loop-VmRSS-MiB")), num(r.get("AgentRPC/memory", "loop-VmHWM-MiB")))},
		{what: "PutFile 64 MiB (blob upload + sha256 + file module)", value: num(r.get("PutFile64MiB", "MB/s")) + " MB/s"},
	}
}
