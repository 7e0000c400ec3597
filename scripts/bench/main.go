// Command bench runs kthw's benchmarks and prints a table of figures, goals
// and ratios (figure/goal) together with the machine they ran on.
//
// The benchmarks live in controller/node (bench_test.go): a real OpenSSH sshd
// on loopback, the agent binary `make build` wrote, a live session. They need
// root (sshd, test users with sudo). `make bench` runs this program after
// `make build`; the raw `go test` output goes to stderr, the table (Markdown)
// to stdout. docs/benchmarks.md keeps the results.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// group is one run of the test binary: benchmarks matching pattern, each
// with b.N = iters.
type group struct {
	pattern string
	iters   int
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	agent := fs.String("agent", "bin/kthw-agent", "agent binary to push (as `make build` writes it), relative to the module root")
	user := fs.String("user", "", "SSH user (default: the sudo test user kthwt-sudo)")
	rpcN := fs.Int("rpc", 3000, "round trips per RPC benchmark")
	sshN := fs.Int("ssh", 300, "remote commands in the SSH exec benchmark")
	connN := fs.Int("connect", 5, "connects per connect benchmark")
	putN := fs.Int("put", 5, "64 MiB uploads")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root: the benchmarks start OpenSSH sshd on 127.0.0.1 and create test users with sudo; run `sudo make bench`")
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	agentPath := *agent
	if !filepath.IsAbs(agentPath) {
		agentPath = filepath.Join(root, agentPath)
	}
	if _, err := os.Stat(agentPath); err != nil {
		return fmt.Errorf("agent binary: %w (run `make build` first)", err)
	}

	tmp, err := os.MkdirTemp("", "kthw-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	testBin := filepath.Join(tmp, "node.test")
	fmt.Fprintln(stderr, "bench: compiling controller/node benchmarks")
	build := exec.CommandContext(ctx, "go", "test", "-c", "-o", testBin, "./controller/node")
	build.Dir, build.Stdout, build.Stderr = root, stderr, stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("go test -c ./controller/node: %w", err)
	}

	env := append(os.Environ(), "KTHW_BENCH_AGENT="+agentPath)
	if *user != "" {
		env = append(env, "KTHW_BENCH_USER="+*user)
	}
	load := loadAvg()
	res := results{}
	started := time.Now()
	var failed error
	for _, g := range []group{
		{"^BenchmarkAgentRPC$", *rpcN},
		{"^BenchmarkSSHExec$", *sshN},
		{"^BenchmarkConnect$", *connN},
		{"^BenchmarkPutFile64MiB$", *putN},
	} {
		if err := runGroup(ctx, testBin, filepath.Join(root, "controller", "node"), env, g, res, stderr); err != nil {
			failed = errors.Join(failed, err)
			if ctx.Err() != nil {
				break
			}
		}
	}
	m := machineInfo(ctx, root, agentPath, *user)
	m = append(m,
		[2]string{"load average at start (1/5/15 min)", load},
		[2]string{"benchmark run", time.Since(started).Round(time.Second).String()})
	printTable(stdout, res, m, *rpcN, *connN, *putN)
	return failed
}

func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run from inside the kthw module")
	}
	return filepath.Dir(mod), nil
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

// row is one line of the results table.
type row struct {
	what, value, goal string
	ratio             float64 // figure/goal; NaN when there is no goal
}

func printTable(w io.Writer, r results, machine [][2]string, rpcN, connN, putN int) {
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
			ratio: math.NaN(),
		}
	}
	rows := []row{
		{"module RPC: `command` check_only, `creates` guard exists (no-op)", lat("AgentRPC/module-command-noop"), "p50 ≤ 1 ms", r.get("AgentRPC/module-command-noop", "p50-ms") / 1},
		{"module RPC: `file` check, unchanged 480 B file", lat("AgentRPC/module-file-check"), "p50 ≤ 1 ms", r.get("AgentRPC/module-file-check", "p50-ms") / 1},
		{"Handshake RPC", lat("AgentRPC/handshake"), "", math.NaN()},
		{"SSH exec `true` on an open connection (floor under push/start)", lat("SSHExec"), "", math.NaN()},
		connect("cold-1", "cold (agent not on the node), 1 target"),
		connect("warm-1", "warm (agent already pushed), 1 target"),
		connect("cold-10", "cold, 10 targets in parallel"),
		connect("warm-10", "warm, 10 targets in parallel"),
		{"agent binary size", num(r.get("AgentRPC/memory", "binary-MB")) + " MB", "≤ 20 MB", r.get("AgentRPC/memory", "binary-MB") / 20},
		{"agent memory, idle after handshake", fmt.Sprintf("VmRSS %s MiB · VmHWM %s MiB", num(r.get("AgentRPC/memory", "idle-VmRSS-MiB")), num(r.get("AgentRPC/memory", "idle-VmHWM-MiB"))), "", math.NaN()},
		{fmt.Sprintf("agent memory, after the RPC loops (3×%d calls)", rpcN), fmt.Sprintf("VmRSS %s MiB · VmHWM %s MiB", num(r.get("AgentRPC/memory", "loop-VmRSS-MiB")), num(r.get("AgentRPC/memory", "loop-VmHWM-MiB"))), "", math.NaN()},
		{"PutFile 64 MiB (blob upload + sha256 + file module)", num(r.get("PutFile64MiB", "MB/s")) + " MB/s", "", math.NaN()},
	}
	fmt.Fprintf(w, "\n| figure | value | goal | figure/goal |\n|---|---|---|---|\n")
	for _, x := range rows {
		ratio := ""
		if !math.IsNaN(x.ratio) {
			ratio = fmt.Sprintf("%.2f", x.ratio)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", x.what, x.value, x.goal, ratio)
	}
	fmt.Fprintf(w, "\nIterations: %d per RPC figure, %d per connect figure, %d uploads. "+
		"MB = 10⁶ bytes, MiB = 2²⁰ bytes; ratios below 1 meet the goal.\n", rpcN, connN, putN)
	fmt.Fprintf(w, "\n| machine | |\n|---|---|\n")
	for _, kv := range machine {
		fmt.Fprintf(w, "| %s | %s |\n", kv[0], kv[1])
	}
}

// num formats a figure with three significant digits or so.
func num(v float64) string {
	switch {
	case math.IsNaN(v):
		return "n/a"
	case v == 0:
		return "0"
	case math.Abs(v) >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case math.Abs(v) >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case math.Abs(v) >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

// machineInfo describes where the benchmarks ran.
func machineInfo(ctx context.Context, root, agent, user string) [][2]string {
	cpu := firstMatch("/proc/cpuinfo", "model name")
	mem := firstMatch("/proc/meminfo", "MemTotal")
	if kb, err := strconv.ParseFloat(strings.TrimSuffix(mem, " kB"), 64); err == nil {
		mem = fmt.Sprintf("%.1f GiB", kb/(1<<20))
	}
	osName := strings.Trim(firstMatchSep("/etc/os-release", "PRETTY_NAME", "="), `"`)
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	if user == "" {
		user = "kthwt-sudo (NOPASSWD sudo, stock bash)"
	}
	agentDesc := agent
	if r, err := filepath.Rel(root, agent); err == nil && !strings.HasPrefix(r, "..") {
		agentDesc = r
	}
	if st, err := os.Stat(agent); err == nil {
		agentDesc = fmt.Sprintf("%s, %s, %d bytes", agentDesc, output(ctx, root, agent, "version"), st.Size())
	}
	return [][2]string{
		{"CPU", fmt.Sprintf("%s, nproc %d", cpu, runtime.NumCPU())},
		{"memory", mem},
		{"OS", osName},
		{"kernel", strings.TrimSpace(string(kernel))},
		{"Go", output(ctx, root, "go", "env", "GOVERSION")},
		{"sshd", output(ctx, root, "/usr/sbin/sshd", "-V")},
		{"agent", agentDesc},
		{"SSH user", user},
		{"commit", output(ctx, root, "git", "describe", "--tags", "--always", "--dirty")},
		{"date", time.Now().UTC().Format("2006-01-02 15:04 UTC")},
	}
}

// output returns the first line a command prints (stdout and stderr), or
// "n/a".
func output(ctx context.Context, dir, name string, args ...string) string {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	b, _ := cmd.CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	if line == "" {
		return "n/a"
	}
	return line
}

// loadAvg returns the 1, 5 and 15 minute load averages: other work on the
// machine shows in the tails of the figures.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "n/a"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "n/a"
	}
	return strings.Join(f[:3], " / ")
}

func firstMatch(path, key string) string { return firstMatchSep(path, key, ":") }

// firstMatchSep returns the value of the first "key<sep>value" line of path.
func firstMatchSep(path, key, sep string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "n/a"
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, sep)
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return "n/a"
}
