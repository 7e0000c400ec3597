// Command bench runs kthw's benchmarks and prints one table of figures,
// goals and ratios (figure/goal) together with the machine they ran on.
//
// Three parts, each selectable with -only:
//
//   - spine: the controller → agent path on loopback (controller/node
//     bench_test.go: a real OpenSSH sshd, the agent `make build` wrote):
//     module RPC latency, connect/push, agent memory, PutFile.
//   - compare: kthw's node preparation against the same preparation as an
//     Ansible playbook (scripts/bench/ansible) and against the package work
//     alone over ssh, on 3 fresh nspawn lab nodes: first run, idempotent
//     re-run, and a check that both tools leave the nodes in the same state.
//   - fanout: a no-op re-converge of node preparation on 10, 25, 50 and 100
//     nodes (nspawn lab nodes as far as the host allows, light namespace
//     nodes beyond): wall time, controller CPU and peak RSS, the nodes' CPU,
//     agent memory.
//
// All of it needs root. `make bench` runs this program after `make build`;
// progress goes to stderr, the table (Markdown) to stdout, and with -doc the
// results section of docs/benchmarks.md is replaced by it.
package main

import (
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
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == lightInitArg {
		lightInit(os.Args[2:])
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

var parts = []string{"spine", "compare", "fanout"}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	agent := fs.String("agent", "bin/kthw-agent", "agent binary (as `make build` writes it), relative to the module root")
	controller := fs.String("controller", "bin/kthw-controller", "controller binary (as `make build` writes it), relative to the module root")
	only := fs.String("only", strings.Join(parts, ","), "parts to run: spine, compare, fanout (comma-separated)")
	var so spineOpts
	fs.StringVar(&so.user, "user", "", "spine: SSH user (default: the sudo test user kthwt-sudo)")
	fs.IntVar(&so.rpcN, "rpc", 3000, "spine: round trips per RPC benchmark")
	fs.IntVar(&so.sshN, "ssh", 300, "spine: remote commands in the SSH exec benchmark")
	fs.IntVar(&so.connN, "connect", 5, "spine: connects per connect benchmark")
	fs.IntVar(&so.putN, "put", 5, "spine: 64 MiB uploads")
	var co compareOpts
	fs.IntVar(&co.reps, "reps", 3, "compare: first runs per tool, each on fresh nodes")
	fs.IntVar(&co.noops, "noops", 2, "compare: idempotent re-runs per tool after each of its first runs")
	var fo fanoutOpts
	counts := fs.String("counts", "10,25,50,100", "fanout: node counts")
	fs.IntVar(&fo.runs, "runs", 5, "fanout: no-op runs per node count")
	fs.IntVar(&fo.nspawnMax, "nspawn-max", 10, "fanout: most nspawn nodes (fewer when the host's inotify instances would not leave room for other labs; 0: none)")
	fs.StringVar(&fo.profileDir, "profiles", "", "write CPU profiles of a 3-node kthw no-op, an nspawn fan-out and the largest light fan-out run into this directory")
	doc := fs.String("doc", "", "replace the results section of this Markdown file (docs/benchmarks.md) with the table; only when every part ran")
	persist := fs.String("state-dir", "/var/lib/kthw/bench", "the bench labs' directory (apt proxy cache, light node layer)")
	imageDir := fs.String("image-dir", "/var/lib/kthw/lab/rootfs", "lab root filesystem cache (shared with the default lab)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root: the benchmarks start OpenSSH sshd and create test users with sudo, and make lab nodes; run `sudo make bench`")
	}
	want := map[string]bool{}
	for _, p := range strings.Split(*only, ",") {
		p = strings.TrimSpace(p)
		if !slices.Contains(parts, p) {
			return fmt.Errorf("-only: unknown part %q (want %s)", p, strings.Join(parts, ", "))
		}
		want[p] = true
	}
	for _, c := range strings.Split(*counts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || n < 1 || n > 200 {
			return fmt.Errorf("-counts: %q is not a node count (1..200)", c)
		}
		fo.counts = append(fo.counts, n)
	}
	slices.Sort(fo.counts)
	if co.reps < 1 || co.noops < 1 || fo.runs < 1 {
		return errors.New("-reps, -noops and -runs must be at least 1")
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	abs := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(root, p)
	}
	tmp, err := os.MkdirTemp("", "kthw-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	e := &benchEnv{root: root, work: tmp, persist: *persist, imageDir: *imageDir, log: stderr}
	// Copies: another `make build` in the tree must not swap binaries mid-run.
	e.agent, e.controller = filepath.Join(tmp, "bin", "kthw-agent"), filepath.Join(tmp, "bin", "kthw-controller")
	if err := copyFile(abs(*agent), e.agent, 0o755); err != nil {
		return fmt.Errorf("agent binary: %w (run `make build` first)", err)
	}
	if want["compare"] || want["fanout"] {
		if err := copyFile(abs(*controller), e.controller, 0o755); err != nil {
			return fmt.Errorf("controller binary: %w (run `make build` first)", err)
		}
		e.upctl = filepath.Join(tmp, "bin", "upctl")
		fmt.Fprintln(stderr, "bench: building scripts/bench/upctl")
		b := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", e.upctl, "./scripts/bench/upctl")
		b.Dir, b.Stdout, b.Stderr = root, stderr, stderr
		b.Env = append(os.Environ(), "CGO_ENABLED=0")
		if err := b.Run(); err != nil {
			return fmt.Errorf("build upctl: %w", err)
		}
		if _, err := exec.LookPath("ansible-playbook"); err != nil && want["compare"] {
			return errors.New("compare needs ansible-playbook (Debian's ansible; scripts/setup.sh installs it)")
		}
	}
	if fo.profileDir != "" {
		fo.profileDir = abs(fo.profileDir)
		if err := os.MkdirAll(fo.profileDir, 0o755); err != nil {
			return err
		}
		co.cpuProfile = filepath.Join(fo.profileDir, "compare-noop-3.pprof")
	}
	so.agent = e.agent

	loadStart := loadAvg()
	started := time.Now()
	var rows []row
	var failed error
	took := map[string]time.Duration{}
	if want["spine"] {
		t := time.Now()
		res, err := spine(ctx, root, tmp, so, stderr)
		failed = errors.Join(failed, err)
		rows = append(rows, spineRows(res, so)...)
		took["spine"] = time.Since(t)
	}
	var cmp *compareResult
	if want["compare"] && ctx.Err() == nil {
		t := time.Now()
		cmp, err = e.compare(ctx, co)
		if err != nil {
			failed = errors.Join(failed, fmt.Errorf("compare: %w", err))
		} else {
			rows = append(rows, compareRows(cmp, co)...)
			if !cmp.state.same() {
				failed = errors.Join(failed, fmt.Errorf("compare: the tools left different state: %s", cmp.state))
			}
		}
		took["compare"] = time.Since(t)
	}
	var fan []fanoutRow
	var fanNote string
	if want["fanout"] && ctx.Err() == nil {
		t := time.Now()
		fit, used, limit := inotifyBudget()
		n := min(fo.nspawnMax, fit)
		fanNote = fmt.Sprintf("inotify instances at start: %d of %d in use (9 per nspawn node; room kept for another 3-node lab): up to %d nspawn nodes", used, limit, fit)
		if n >= 3 {
			r, err := e.fanoutNspawn(ctx, n, fo)
			failed = errors.Join(failed, err)
			fan = append(fan, r...)
		} else if fo.nspawnMax > 0 {
			fanNote += "; nspawn fan-out skipped"
		}
		if ctx.Err() == nil {
			r, err := e.fanoutLight(ctx, fo)
			failed = errors.Join(failed, err)
			fan = append(fan, r...)
		}
		rows = append(rows, fanoutRows(fan)...)
		took["fanout"] = time.Since(t)
	}

	m := machineInfo(ctx, root, e.agent, so.user)
	if cmp != nil {
		m = append(m, cmp.versions...)
	}
	var tookParts []string
	for _, p := range parts {
		if d, ok := took[p]; ok {
			tookParts = append(tookParts, fmt.Sprintf("%s %s", p, d.Round(time.Second)))
		}
	}
	m = append(m,
		[2]string{"load average (1/5/15 min)", "at start " + loadStart + ", at end " + loadAvg()},
		[2]string{"benchmark run", fmt.Sprintf("%s (%s)", time.Since(started).Round(time.Second), strings.Join(tookParts, ", "))})
	var table strings.Builder
	printTable(&table, rows, m, so, co, fo, fanNote, want, e.retried)
	fmt.Fprint(stdout, table.String())
	if fo.profileDir != "" {
		fmt.Fprintf(stderr, "bench: CPU profiles in %s (go tool pprof -top <file>)\n", fo.profileDir)
	}
	if *doc != "" {
		if len(want) != len(parts) || failed != nil {
			fmt.Fprintf(stderr, "bench: %s not updated: only a complete, successful run replaces its results\n", *doc)
		} else if err := updateDoc(abs(*doc), table.String()); err != nil {
			failed = errors.Join(failed, err)
		} else {
			fmt.Fprintf(stderr, "bench: updated %s\n", *doc)
		}
	}
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

// row is one line of the results table.
type row struct {
	what, value, goal string
	ratio             string // figure/goal, "" when there is no goal
}

func ratio(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return ""
	}
	return fmt.Sprintf("%.2f", v)
}

func compareRows(c *compareResult, o compareOpts) []row {
	kf, af := c.kthwFirst.median(), c.ansibleFirst.median()
	kn, an := c.kthwNoop.median(), c.ansibleNoop.median()
	spread := func(d durations) string {
		lo, hi := d.minmax()
		return fmt.Sprintf("median %s (%s–%s, n=%d)", secs(d.median()), num(lo.Seconds()), num(hi.Seconds()), len(d))
	}
	n := c.nodes
	rows := []row{
		{what: fmt.Sprintf("node prep, first run, %d fresh nspawn nodes: kthw `up`", n),
			value: fmt.Sprintf("%s; longest packages step %s, containerd step %s", spread(c.kthwFirst), secs(c.kthwPackages.median()), secs(c.kthwContainerd.median())),
			goal:  "≤ 1.1 × direct", ratio: ratio(c.firstRatio() / 1.1)},
		{what: fmt.Sprintf("node prep, first run, %d fresh nspawn nodes: direct (one ssh per node, the same apt commands)", n),
			value: fmt.Sprintf("%s; kthw / direct in the same repetition, median %.2f", spread(c.directFirst), c.firstRatio())},
		{what: "kthw first run outside its package transaction (wall − longest packages step)", value: spread(c.kthwOverhead())},
		{what: fmt.Sprintf("node prep, first run, %d fresh nspawn nodes: Ansible playbook", n),
			value: fmt.Sprintf("%s; apt task %s (it installs python3-apt for itself first)", spread(c.ansibleFirst), secs(c.ansibleApt.median()))},
		{what: "first run, Ansible / kthw", value: fmt.Sprintf("%.2f×", af.Seconds()/kf.Seconds())},
		{what: fmt.Sprintf("idempotent re-run, %d nodes: kthw `up`", n),
			value: fmt.Sprintf("%s; controller CPU %s, peak RSS %s MB", spread(c.kthwNoop), secs(c.kthwNoopCPU.median()), num(float64(median(c.kthwNoopRSS))*1024/1e6)),
			goal:  "< 1 s", ratio: ratio(kn.Seconds() / 1)},
		{what: fmt.Sprintf("idempotent re-run, %d nodes: kthw, where the time goes (longest node, medians)", n), value: stepBreakdown(c.kthwNoopSteps)},
		{what: fmt.Sprintf("idempotent re-run, %d nodes: Ansible playbook", n),
			value: fmt.Sprintf("%s; ansible-playbook CPU (with its forks and ssh) %s", spread(c.ansibleNoop), secs(c.ansibleNoopCPU.median()))},
		{what: "idempotent re-run, Ansible / kthw", value: fmt.Sprintf("%.1f×", an.Seconds()/kn.Seconds()), goal: "≥ 50×", ratio: ratio(50 / (an.Seconds() / kn.Seconds()))},
		{what: "agent push + start on a fresh node (in `up --no-node-prep`, not in the first-run figure)", value: spread(c.kthwAgentFresh)},
		{what: "end state, kthw vs Ansible (every node)", value: c.state.String(), goal: "identical", ratio: map[bool]string{true: "met", false: "MISSED"}[c.state.same()]},
		{what: "cross-check: kthw `up` on Ansible-prepared nodes", value: c.crossKthwOnAnsible},
		{what: "cross-check: Ansible on kthw-prepared nodes", value: c.crossAnsibleOnKthw},
	}
	if len(c.connect.dial) > 0 {
		rows = append(rows, row{what: fmt.Sprintf("agent connection to a prepared node, %d at once (node.Connect, as `up` does)", n), value: c.connect.String()})
	}
	return rows
}

// stepBreakdown formats the no-op run's steps: the controller's own
// (provider, agent connection, facts) and the node-prep modules summed.
func stepBreakdown(steps map[string]durations) string {
	if len(steps) == 0 {
		return "n/a"
	}
	var modules time.Duration
	var mods []string
	for name, d := range steps {
		switch name {
		case "prepare", "provision", "agent", "facts", "ready", "kubernetes-packages":
			continue
		}
		modules += d.median()
		mods = append(mods, fmt.Sprintf("%s %s", name, num(float64(d.median().Microseconds())/1000)))
	}
	slices.Sort(mods)
	ms := func(step string) string { return num(float64(steps[step].median().Microseconds())/1000) + " ms" }
	return fmt.Sprintf("provider prepare %s, provision (lab node check) %s, agent (SSH dial, push check, agent start, handshake) %s, facts %s, node-prep modules %s ms in all (%s ms); the rest is the controller process itself (start, workspace lock, state)",
		ms("prepare"), ms("provision"), ms("agent"), ms("facts"), num(float64(modules.Microseconds())/1000), strings.Join(mods, ", "))
}

func fanoutRows(rows []fanoutRow) []row {
	var out []row
	for _, r := range rows {
		rssMB := float64(median(r.rss)) * 1024 / 1e6
		maxAgent := int64(0)
		if len(r.agentRSS) > 0 {
			maxAgent = r.agentRSS[len(r.agentRSS)-1]
		}
		lo, hi := r.wall.minmax()
		v := fmt.Sprintf("wall median %s (%s–%s, n=%d); controller CPU %s, peak RSS %s MB; nodes' CPU %s; agent VmHWM median %s MiB (max %s, %d agents)",
			secs(r.wall.median()), num(lo.Seconds()), num(hi.Seconds()), len(r.wall), secs(r.cpu.median()), num(rssMB),
			secs(r.nodeCPU.median()), num(float64(median(r.agentRSS))/1024), num(float64(maxAgent)/1024), len(r.agentRSS))
		if len(r.cpuByComm) > 0 {
			v += "; nodes' CPU by program (one sampled run, " + secs(r.sampledCPU) + " in all): " + topPrograms(r.cpuByComm, 5)
		}
		if r.first > 0 {
			v += fmt.Sprintf("; set-up run before %s", secs(r.first))
		}
		x := row{what: fmt.Sprintf("no-op re-converge, %d %s nodes, %s (%s)", r.nodes, r.substrate, r.steps, r.driver), value: v}
		if r.nodes == 100 {
			x.goal = "< 5 s; RSS < 150 MB"
			x.ratio = ratio(r.wall.median().Seconds()/5) + " / " + ratio(rssMB/150)
		}
		out = append(out, x)
	}
	return out
}

// topPrograms lists the n programs that used the most CPU.
func topPrograms(m map[string]time.Duration, n int) string {
	type kv struct {
		k string
		v time.Duration
	}
	var all []kv
	for k, v := range m {
		all = append(all, kv{k, v})
	}
	slices.SortFunc(all, func(a, b kv) int { return int(b.v - a.v) })
	var parts []string
	for i, x := range all {
		if i == n {
			break
		}
		parts = append(parts, fmt.Sprintf("%s %s", x.k, secs(x.v)))
	}
	return strings.Join(parts, ", ")
}

func printTable(w io.Writer, rows []row, machine [][2]string, so spineOpts, co compareOpts, fo fanoutOpts, fanNote string, want map[string]bool, retried []string) {
	fmt.Fprintf(w, "| figure | value | goal | figure/goal |\n|---|---|---|---|\n")
	for _, x := range rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", x.what, x.value, x.goal, x.ratio)
	}
	var notes []string
	if want["spine"] {
		notes = append(notes, fmt.Sprintf("spine: %d iterations per RPC figure, %d per connect figure, %d uploads", so.rpcN, so.connN, so.putN))
	}
	if want["compare"] {
		notes = append(notes, fmt.Sprintf("compare: %d first runs per tool on fresh nodes, %d re-runs after each", co.reps, co.noops))
	}
	if want["fanout"] {
		notes = append(notes, fmt.Sprintf("fan-out: %d no-op runs per count, concurrency 32 (the controller's default); %s", fo.runs, fanNote))
	}
	if len(retried) > 0 {
		notes = append(notes, "repeated on fresh nodes after apt hung through the lab's apt-cacher-ng (no answer within "+firstRunTimeout.String()+"): "+strings.Join(retried, "; "))
	}
	fmt.Fprintf(w, "\n%s. MB = 10⁶ bytes, MiB = 2²⁰ bytes; ratios below 1 meet the goal.\n", strings.Join(notes, "; "))
	fmt.Fprintf(w, "\n| machine | |\n|---|---|\n")
	for _, kv := range machine {
		fmt.Fprintf(w, "| %s | %s |\n", kv[0], kv[1])
	}
}

// Markers around the generated results in docs/benchmarks.md.
const (
	docBegin = "<!-- bench:results:begin (generated by `make bench`; do not edit) -->"
	docEnd   = "<!-- bench:results:end -->"
)

// updateDoc replaces the text between the markers with table.
func updateDoc(path, table string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	i, j := strings.Index(s, docBegin), strings.Index(s, docEnd)
	if i < 0 || j < i {
		return fmt.Errorf("%s: no %q ... %q section", path, docBegin, docEnd)
	}
	date := time.Now().UTC().Format("2006-01-02 15:04 UTC")
	s = s[:i] + docBegin + "\n\nLatest run: " + date + ".\n\n" + table + "\n" + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
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
	agentDesc := "kthw-agent"
	if st, err := os.Stat(agent); err == nil {
		agentDesc = fmt.Sprintf("%s, %d bytes", output(ctx, root, agent, "version"), st.Size())
	}
	return [][2]string{
		{"CPU", fmt.Sprintf("%s, nproc %d", cpu, runtime.NumCPU())},
		{"memory", mem},
		{"OS", osName},
		{"kernel", strings.TrimSpace(string(kernel))},
		{"Go", output(ctx, root, "go", "env", "GOVERSION")},
		{"sshd / ssh", output(ctx, root, "/usr/sbin/sshd", "-V")},
		{"agent", agentDesc},
		{"spine SSH user", user},
		{"lab nodes", "Debian 12 systemd-nspawn nodes (systemd 252, containerd 1.6.20 from Debian) and light nodes (netns + chroot + sshd), all on this machine"},
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
	return strings.Join(f[:3], " ")
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
