package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kthw/kthw/controller/workspace"
)

// The fan-out benchmark: a no-op re-converge of the node-prep set on many
// nodes from one controller process, with the controller's CPU time and
// peak RSS (rusage of the process), the CPU the nodes spent (every process
// of every node, summed: on this machine the nodes share the controller's
// CPUs) and the agents' memory on a node.
//
// nspawn nodes run the whole set through kthw-controller itself. Each
// prepared nspawn node holds 9 inotify instances (systemd 5, logind,
// dbus-daemon, agetty, containerd), all charged to root, and the host allows
// fs.inotify.max_user_instances (128 here) in total: other labs on the
// machine need theirs too, so the nspawn run takes only as many nodes as
// leave room for them. Larger counts run on light nodes (light.go) through
// upctl -no-containerd: the same controller code without the containerd
// module, which needs systemd and a running containerd.

// fanoutRow is one node count's figures.
type fanoutRow struct {
	nodes     int
	substrate string // "nspawn" or "light"
	steps     string // "full" or "no containerd"
	driver    string // kthw-controller or upctl
	first     time.Duration
	wall      durations
	cpu       durations
	rss       []int64 // KiB
	nodeCPU   durations
	agentRSS  []int64 // KiB, VmHWM per agent of the sampled run
	// cpuByComm is the nodes' CPU of the sampled run by program;
	// sampledCPU its total (treeCPU).
	cpuByComm  map[string]time.Duration
	sampledCPU time.Duration
}

type fanoutOpts struct {
	counts     []int
	runs       int
	nspawnMax  int
	profileDir string
}

// inotifyBudget returns how many nspawn nodes fit in the host's inotify
// instances while leaving headroom for a 3-node lab of someone else's.
func inotifyBudget() (fit, used, limit int) {
	b, err := os.ReadFile("/proc/sys/fs/inotify/max_user_instances")
	if err != nil {
		return 0, 0, 0
	}
	limit, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		fds, _ := os.ReadDir("/proc/" + e.Name() + "/fd")
		for _, fd := range fds {
			if t, err := os.Readlink("/proc/" + e.Name() + "/fd/" + fd.Name()); err == nil && t == "anon_inode:inotify" {
				used++
			}
		}
	}
	const perNode, headroom = 9, 3 * 9
	fit = (limit - used - headroom) / perNode
	return max(fit, 0), used, limit
}

// fanoutNspawn runs the fan-out on n nspawn nodes of the bench lab.
func (e *benchEnv) fanoutNspawn(ctx context.Context, n int, o fanoutOpts) ([]fanoutRow, error) {
	dir := filepath.Join(e.work, "fanout-nspawn")
	file := filepath.Join(dir, "cluster.yaml")
	ws := filepath.Join(dir, "ws")
	if err := writeFile(file, []byte(e.labCluster("kf", n))); err != nil {
		return nil, err
	}
	defer func() {
		if _, _, err := e.kthw(context.WithoutCancel(ctx), file, ws, nil, "down", "--yes"); err != nil {
			fmt.Fprintln(e.log, "bench: down:", err)
		}
	}()
	fmt.Fprintf(e.log, "bench: fan-out: %d nspawn nodes\n", n)
	fresh := func() error {
		if _, _, err := e.kthw(ctx, file, ws, nil, "down", "--yes"); err != nil {
			return err
		}
		_, _, err := e.kthw(ctx, file, ws, []string{"-o", "json"}, "up", "--no-node-prep")
		return err
	}
	_, specs, err := loadCluster(file)
	if err != nil {
		return nil, err
	}
	var first runStat
	err = e.retryHung(ctx, fmt.Sprintf("fan-out: set-up of %d nspawn nodes", n), fresh, func(ctx context.Context) error {
		// Many nodes refreshing the same index at once through the lab's
		// apt-cacher-ng can leave a client hanging (seen with 7: "Failure
		// to move file ... out of the way"). This set-up run is not a
		// figure: refresh the nodes' indexes one at a time, so that the
		// set-up run finds them fresh and only installs.
		for _, h := range hostsOf(specs) {
			if _, err := timedRun(ctx, e.root, nil, sshArgv(ws, h, "apt-get update -q")...); err != nil {
				return err
			}
		}
		var err error
		first, _, err = e.kthw(ctx, file, ws, []string{"-o", "json"}, "up")
		return err
	})
	if err != nil {
		return nil, err
	}
	roots, err := e.nspawnPIDs("kf", n)
	if err != nil {
		return nil, err
	}
	full := fanoutRow{nodes: n, substrate: "nspawn", steps: "full", driver: "kthw-controller", first: first.wall}
	runCLI := func(extra ...string) (runStat, upOutcome, error) {
		return e.kthw(ctx, file, ws, append([]string{"-o", "json"}, extra...), "up")
	}
	if err := e.noopRuns(&full, roots, o, runCLI, "nspawn-full"); err != nil {
		return nil, err
	}
	light := fanoutRow{nodes: n, substrate: "nspawn", steps: "no containerd", driver: "upctl"}
	runUpctl := func(extra ...string) (runStat, upOutcome, error) {
		return e.upctlRun(ctx, file, ws, true, extra...)
	}
	if err := e.noopRuns(&light, roots, o, runUpctl, ""); err != nil {
		return nil, err
	}
	return []fanoutRow{full, light}, nil
}

// nspawnPIDs returns the systemd-nspawn processes of the cluster's nodes.
func (e *benchEnv) nspawnPIDs(cluster string, n int) ([]int, error) {
	var pids []int
	for i := 0; i < n; i++ {
		p := filepath.Join(e.persist, "lab", "nodes", cluster+"-"+nodeName(i), "nspawn.pid")
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// noopRuns measures o.runs no-op re-converges, then one more with the
// agents' memory sampled; with o.profileDir and a profile name, the first
// run writes a CPU profile.
func (e *benchEnv) noopRuns(r *fanoutRow, roots []int, o fanoutOpts, run func(extra ...string) (runStat, upOutcome, error), profile string) error {
	for i := 0; i < o.runs; i++ {
		var extra []string
		if i == 0 && o.profileDir != "" && profile != "" {
			flag := "--cpuprofile"
			if r.driver == "upctl" {
				flag = "-cpuprofile"
			}
			extra = []string{flag, filepath.Join(o.profileDir, profile+".pprof")}
		}
		before := treeCPU(roots)
		st, out, err := run(extra...)
		if err != nil {
			return err
		}
		if len(out.changed) > 0 {
			return fmt.Errorf("%d %s nodes: the no-op run changed %s", r.nodes, r.substrate, strings.Join(out.changed, ", "))
		}
		r.nodeCPU = append(r.nodeCPU, treeCPU(roots)-before)
		r.wall = append(r.wall, st.wall)
		r.cpu = append(r.cpu, st.cpu)
		r.rss = append(r.rss, st.maxRSS)
	}
	before := treeCPU(roots)
	s := startAgentSampler(roots, 10*time.Millisecond)
	_, _, err := run()
	hwm, byComm := s.finish()
	r.agentRSS, r.sampledCPU, r.cpuByComm = hwm, treeCPU(roots)-before, byComm
	return err
}

// fanoutLight runs the fan-out on light nodes, growing one set of nodes
// through the counts.
func (e *benchEnv) fanoutLight(ctx context.Context, o fanoutOpts) (rows []fanoutRow, err error) {
	dir := filepath.Join(e.persist, "light")
	prefix := netip.MustParsePrefix(lightCIDR)
	gw := netip.PrefixFrom(prefix.Addr().Next(), prefix.Bits())
	p, err := nodeprepParamsDefault()
	if err != nil {
		return nil, err
	}
	var pkgs []pkgSpec
	for _, b := range p.BasePackages {
		pkgs = append(pkgs, pkgSpec{name: b})
	}
	for _, c := range p.Containerd.GetPackages() {
		pkgs = append(pkgs, pkgSpec{name: c.GetName(), version: c.GetVersion()})
	}
	ll, err := newLightLab(ctx, dir, e.imageDir, lightBridge, gw, pkgs, e.log)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := ll.close(context.WithoutCancel(ctx)); cerr != nil {
			fmt.Fprintln(e.log, "bench: light nodes: cleanup:", cerr)
			if err == nil {
				err = cerr
			}
		}
	}()
	wsDir := filepath.Join(e.work, "fanout-light", "ws")
	have := 0
	maxCount := 0
	for _, c := range o.counts {
		maxCount = max(maxCount, c)
	}
	for _, n := range o.counts {
		fmt.Fprintf(e.log, "bench: fan-out: %d light nodes\n", n)
		var specs []lightSpec
		var addrs []string
		for i := 0; i < n; i++ {
			a := prefix.Addr()
			for k := 0; k < 11+i; k++ {
				a = a.Next()
			}
			addrs = append(addrs, a.String())
			if i >= have {
				specs = append(specs, lightSpec{name: nodeName(i), index: i, addr: netip.PrefixFrom(a, prefix.Bits())})
			}
		}
		ws, err := workspace.Open(wsDir)
		if err != nil {
			return nil, err
		}
		err = ll.start(ctx, ws, specs)
		ws.Close()
		if err != nil {
			return nil, err
		}
		have = max(have, n)
		file := filepath.Join(e.work, "fanout-light", fmt.Sprintf("cluster-%d.yaml", n))
		if err := writeFile(file, []byte(staticCluster("kl", n, addrs))); err != nil {
			return nil, err
		}
		if _, _, err := loadCluster(file); err != nil {
			return nil, fmt.Errorf("light cluster file: %w", err)
		}
		run := func(extra ...string) (runStat, upOutcome, error) { return e.upctlRun(ctx, file, wsDir, true, extra...) }
		// First run at this count: agents pushed to new nodes, the
		// hosts block rewritten on every node (the cluster grew).
		first, _, err := run()
		if err != nil {
			return nil, err
		}
		var roots []int
		for _, nd := range ll.nodes {
			roots = append(roots, nd.cmd.Process.Pid)
		}
		r := fanoutRow{nodes: n, substrate: "light", steps: "no containerd", driver: "upctl", first: first.wall}
		profile := ""
		if n == maxCount {
			profile = fmt.Sprintf("light-%d", n)
		}
		if err := e.noopRuns(&r, roots, o, run, profile); err != nil {
			return nil, err
		}
		rows = append(rows, r)
	}
	return rows, nil
}
