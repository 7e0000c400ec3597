package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kthw/kthw/controller/config"
)

// The comparison: kthw's node preparation, the same with Ansible
// (scripts/bench/ansible/nodeprep.yml) and the package work alone over ssh
// ("direct"), on the same 3 fresh nspawn lab nodes (down + up --no-node-prep
// before every first run), in rotating order per repetition. See
// docs/benchmarks.md.

// compareResult holds the comparison's samples.
type compareResult struct {
	nodes                                int
	kthwFirst, ansibleFirst, directFirst durations
	kthwNoop, ansibleNoop                durations
	kthwNoopCPU                          durations
	kthwNoopRSS                          []int64
	kthwNoopSteps                        map[string]durations // per step, the longest node of each re-run
	connect                              connectSamples       // node.Connect's steps on the 3 nodes
	ansibleNoopCPU                       durations            // ansible-playbook and its children (forks, ssh)
	kthwPackages, kthwContainerd         durations            // longest packages/containerd step of each first run
	kthwAgentFresh                       durations            // agent step of up --no-node-prep (push + start)
	ansibleApt                           durations            // the apt task of each Ansible first run
	crossAnsibleOnKthw                   string               // Ansible's recap on kthw-prepared nodes
	crossKthwOnAnsible                   string               // kthw's changes on Ansible-prepared nodes
	state                                stateDiff
	versions                             [][2]string
}

type compareOpts struct {
	reps, noops int
	cpuProfile  string // a CPU profile of one kthw no-op run
}

func (e *benchEnv) compare(ctx context.Context, o compareOpts) (*compareResult, error) {
	const n = 3
	dir := filepath.Join(e.work, "compare")
	file := filepath.Join(dir, "cluster.yaml")
	ws := filepath.Join(dir, "ws")
	if err := writeFile(file, []byte(e.labCluster("kb", n))); err != nil {
		return nil, err
	}
	cl, specs, err := loadCluster(file)
	if err != nil {
		return nil, err
	}
	vars, err := playbookVars(cl, specs)
	if err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dir, "vars.json"), vars); err != nil {
		return nil, err
	}
	a := &ansibleRun{env: e, dir: dir, playbook: filepath.Join(e.root, "scripts/bench/ansible/nodeprep.yml"),
		cfg: filepath.Join(e.root, "scripts/bench/ansible/ansible.cfg"), ws: ws, specs: specs, forks: n}
	res := &compareResult{nodes: n, versions: a.versions(ctx), kthwNoopSteps: map[string]durations{}}
	defer func() {
		a.stopMasters()
		if _, _, err := e.kthw(context.WithoutCancel(ctx), file, ws, nil, "down", "--yes"); err != nil {
			fmt.Fprintln(e.log, "bench: down:", err)
		}
	}()

	fresh := func() error {
		a.stopMasters()
		if _, _, err := e.kthw(ctx, file, ws, nil, "down", "--yes"); err != nil {
			return err
		}
		_, out, err := e.kthw(ctx, file, ws, []string{"-o", "json"}, "up", "--no-node-prep")
		if err == nil {
			res.kthwAgentFresh = append(res.kthwAgentFresh, out.stepMax["agent"])
		}
		return err
	}
	up := func() (runStat, upOutcome, error) { return e.kthw(ctx, file, ws, []string{"-o", "json"}, "up") }

	// Warm-up, not counted: fills the bench lab's apt proxy cache.
	fmt.Fprintln(e.log, "bench: compare: warm-up (fills the lab's apt proxy cache)")
	err = e.retryHung(ctx, "compare: warm-up", fresh, func(ctx context.Context) error {
		_, _, err := e.kthw(ctx, file, ws, []string{"-o", "json"}, "up")
		return err
	})
	if err != nil {
		return nil, err
	}
	var kthwState, ansibleState map[string][]string
	for rep := 0; rep < o.reps; rep++ {
		for _, tool := range repOrder(rep) {
			fmt.Fprintf(e.log, "bench: compare: repetition %d/%d: %s\n", rep+1, o.reps, tool)
			// first runs the tool's first run on fresh nodes; one that
			// hangs is repeated on fresh nodes (see retryHung).
			first := func(run func(ctx context.Context) error) error {
				return e.retryHung(ctx, fmt.Sprintf("compare: %s, repetition %d", tool, rep+1), fresh, run)
			}
			switch tool {
			case "kthw":
				var st runStat
				var out upOutcome
				err := first(func(ctx context.Context) (err error) {
					st, out, err = e.kthw(ctx, file, ws, []string{"-o", "json"}, "up")
					return err
				})
				if err != nil {
					return nil, err
				}
				res.kthwFirst = append(res.kthwFirst, st.wall)
				res.kthwPackages = append(res.kthwPackages, out.stepMax["packages"])
				res.kthwContainerd = append(res.kthwContainerd, out.stepMax["containerd"])
				for i := 0; i < o.noops; i++ {
					var extra []string
					if rep == 0 && i == 0 && o.cpuProfile != "" {
						extra = []string{"--cpuprofile", o.cpuProfile}
					}
					st, out, err := e.kthw(ctx, file, ws, append([]string{"-o", "json"}, extra...), "up")
					if err != nil {
						return nil, err
					}
					if len(out.changed) > 0 {
						return nil, fmt.Errorf("kthw re-run changed %s", strings.Join(out.changed, ", "))
					}
					res.kthwNoop = append(res.kthwNoop, st.wall)
					res.kthwNoopCPU = append(res.kthwNoopCPU, st.cpu)
					res.kthwNoopRSS = append(res.kthwNoopRSS, st.maxRSS)
					for step, d := range out.stepMax {
						res.kthwNoopSteps[step] = append(res.kthwNoopSteps[step], d)
					}
				}
				if kthwState == nil {
					if kthwState, err = e.snapshot(ctx, ws, specs, cl); err != nil {
						return nil, err
					}
					r, err := a.play(ctx)
					if err != nil {
						return nil, fmt.Errorf("ansible on kthw-prepared nodes: %w", err)
					}
					res.crossAnsibleOnKthw = r.recapSummary()
					if res.connect, err = e.connectBreakdown(ctx, ws, hostsOf(specs), 5); err != nil {
						return nil, err
					}
				}
			case "ansible":
				var r playResult
				err := first(func(ctx context.Context) (err error) {
					r, err = a.play(ctx)
					return err
				})
				if err != nil {
					return nil, err
				}
				res.ansibleFirst = append(res.ansibleFirst, r.wall)
				res.ansibleApt = append(res.ansibleApt, r.taskTime("base and container runtime packages"))
				for i := 0; i < o.noops; i++ {
					r, err := a.play(ctx)
					if err != nil {
						return nil, err
					}
					if r.changed > 0 {
						return nil, fmt.Errorf("ansible re-run changed %d tasks", r.changed)
					}
					res.ansibleNoop = append(res.ansibleNoop, r.wall)
					res.ansibleNoopCPU = append(res.ansibleNoopCPU, r.cpu)
				}
				if ansibleState == nil {
					if ansibleState, err = e.snapshot(ctx, ws, specs, cl); err != nil {
						return nil, err
					}
					_, out, err := up()
					if err != nil {
						return nil, fmt.Errorf("kthw on Ansible-prepared nodes: %w", err)
					}
					if len(out.changed) == 0 {
						res.crossKthwOnAnsible = "no changes on any node"
					} else {
						res.crossKthwOnAnsible = "changed: " + strings.Join(out.changed, ", ")
					}
				}
			case "direct":
				var d time.Duration
				err := first(func(ctx context.Context) (err error) {
					d, err = e.direct(ctx, ws, specs, cl)
					return err
				})
				if err != nil {
					return nil, err
				}
				res.directFirst = append(res.directFirst, d)
			}
		}
	}
	if kthwState != nil && ansibleState != nil {
		res.state = diffStates(kthwState, ansibleState)
	}
	return res, nil
}

// firstRunTimeout bounds a first run (they take 15–70 s here).
const firstRunTimeout = 3 * time.Minute

// retryHung prepares (fresh nodes) and runs run with firstRunTimeout, up to
// 3 times while it times out. Through the lab's apt-cacher-ng an apt
// download now and then never completes (the proxy logs a short read from
// the mirror, or "Failure to move file ... out of the way" when several
// nodes refresh the same index), and apt then waits for it until kthw's
// 10-minute node timeout: a fault of the substrate, not of either tool, so
// the run is repeated on fresh nodes and the repetition is reported.
func (e *benchEnv) retryHung(ctx context.Context, what string, prepare func() error, run func(context.Context) error) error {
	for attempt := 1; ; attempt++ {
		if err := prepare(); err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, firstRunTimeout)
		err := run(rctx)
		hung := errors.Is(rctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
		cancel()
		if err == nil || !hung || attempt == 3 {
			return err
		}
		fmt.Fprintf(e.log, "bench: %s: no answer within %s (apt through the lab proxy hung?); repeating on fresh nodes\n", what, firstRunTimeout)
		e.retried = append(e.retried, what)
	}
}

// repOrder is the order of the tools in a repetition: kthw and direct, the
// pair the first-run goal compares, always back to back (so that both see
// the same load on a shared machine), each first in turn; Ansible before
// or after them in turn.
func repOrder(rep int) []string {
	pair := []string{"kthw", "direct"}
	if rep%2 == 1 {
		pair = []string{"direct", "kthw"}
	}
	if rep%3 == 2 {
		return append([]string{"ansible"}, pair...)
	}
	return append(pair, "ansible")
}

// firstRatio is the median over the repetitions of kthw's first run over
// direct's in the same repetition.
func (c *compareResult) firstRatio() float64 {
	var r []float64
	for i := range min(len(c.kthwFirst), len(c.directFirst)) {
		r = append(r, c.kthwFirst[i].Seconds()/c.directFirst[i].Seconds())
	}
	if len(r) == 0 {
		return math.NaN()
	}
	return median(r)
}

// kthwOverhead is, per first run, what kthw spent outside the package
// transaction: the wall time less the longest node's packages step.
func (c *compareResult) kthwOverhead() durations {
	var out durations
	for i := range c.kthwFirst {
		if i < len(c.kthwPackages) {
			out = append(out, c.kthwFirst[i]-c.kthwPackages[i])
		}
	}
	return out
}

// direct runs the node-prep package work as one ssh per node, all nodes at
// once: the apt commands kthw's agent runs (index refresh, version
// resolution, one install), nothing else. It returns the wall time until the
// last node is done.
func (e *benchEnv) direct(ctx context.Context, ws string, specs []config.NodeSpec, cl *config.Cluster) (time.Duration, error) {
	pkgs, ctrVersion, err := nodePrepPackages(cl, specs)
	if err != nil {
		return 0, err
	}
	script := `set -e
export DEBIAN_FRONTEND=noninteractive APT_LISTCHANGES_FRONTEND=none NEEDRESTART_SUSPEND=1
apt-get update -q --error-on=any -o DPkg::Lock::Timeout=300
v=$(apt-cache madison containerd | awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep -E '^` + regexp.QuoteMeta(ctrVersion) + `([.~+^-]|$)' | head -n 1)
apt-get install -y -q --allow-downgrades --allow-change-held-packages -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -o DPkg::Lock::Timeout=300 -- ` + pkgs + ` containerd="$v"
`
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(specs))
	for i, s := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = timedRun(ctx, e.root, nil, sshArgv(ws, s.Address.Addr().String(), script)...)
		}()
	}
	wg.Wait()
	return time.Since(start), errors.Join(errs...)
}

// nodePrepPackages returns the base packages (space separated) and the
// containerd version kthw's node preparation pins.
func nodePrepPackages(cl *config.Cluster, specs []config.NodeSpec) (string, string, error) {
	var base []string
	version := ""
	p, err := nodeprepParams(cl, specs)
	if err != nil {
		return "", "", err
	}
	base = append(base, p.BasePackages...)
	for _, pk := range p.Containerd.GetPackages() {
		if pk.GetName() == "containerd" {
			version = strings.TrimPrefix(pk.GetVersion(), "v")
			continue
		}
		base = append(base, pk.GetName())
	}
	if version == "" {
		return "", "", errors.New("no containerd version pinned")
	}
	return strings.Join(base, " "), version, nil
}

// sshArgv is OpenSSH's ssh to root@host with the workspace's key and pinned
// known_hosts, no connection sharing.
func sshArgv(ws, host, command string) []string {
	return []string{"ssh", "-i", filepath.Join(ws, "id_ed25519"),
		"-o", "UserKnownHostsFile=" + filepath.Join(ws, "known_hosts"), "-o", "StrictHostKeyChecking=yes",
		"-o", "BatchMode=yes", "-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "ConnectTimeout=10",
		"root@" + host, command}
}

// ansibleRun runs the playbook against the cluster's nodes.
type ansibleRun struct {
	env            *benchEnv
	dir            string
	playbook, cfg  string
	ws             string
	specs          []config.NodeSpec
	forks          int
	controlDir     string
	controlStarted bool
}

type playResult struct {
	wall                         time.Duration
	cpu                          time.Duration
	changed, failed, unreachable int
	out                          string
}

var recapRe = regexp.MustCompile(`(?m)^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)`)

func (r playResult) recapSummary() string {
	if r.changed == 0 && r.failed == 0 && r.unreachable == 0 {
		return "changed=0 on every node"
	}
	return fmt.Sprintf("changed=%d failed=%d unreachable=%d (sum over nodes)", r.changed, r.failed, r.unreachable)
}

// taskTime reads a task's time from the profile_tasks summary.
func (r playResult) taskTime(name string) time.Duration {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` -+ ([0-9.]+)s$`)
	m := re.FindStringSubmatch(r.out)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return time.Duration(v * float64(time.Second))
}

// play runs the playbook once. Its SSH control masters (ControlPersist)
// live on between runs against the same nodes, as they would for an
// operator; stopMasters ends them before the nodes are replaced.
func (a *ansibleRun) play(ctx context.Context) (playResult, error) {
	if a.controlDir == "" {
		d, err := os.MkdirTemp(a.dir, "cp-")
		if err != nil {
			return playResult{}, err
		}
		a.controlDir = d
	}
	inv := filepath.Join(a.dir, "inventory")
	var b strings.Builder
	b.WriteString("[nodes]\n")
	for _, s := range a.specs {
		fmt.Fprintf(&b, "%s ansible_host=%s\n", s.Name, s.Address.Addr())
	}
	fmt.Fprintf(&b, "\n[nodes:vars]\nansible_user=root\nansible_ssh_private_key_file=%s\n"+
		"ansible_ssh_common_args=-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o ControlPath=%s/%%C\n",
		filepath.Join(a.ws, "id_ed25519"), filepath.Join(a.ws, "known_hosts"), a.controlDir)
	if err := writeFile(inv, []byte(b.String())); err != nil {
		return playResult{}, err
	}
	env := []string{"ANSIBLE_CONFIG=" + a.cfg, "ANSIBLE_LOCAL_TEMP=" + filepath.Join(a.dir, "ansible-tmp"),
		"ANSIBLE_HOME=" + filepath.Join(a.dir, "ansible-home"), "ANSIBLE_NOCOLOR=1"}
	st, err := timedRun(ctx, a.dir, env, "ansible-playbook", "-i", inv, "-f", strconv.Itoa(max(a.forks, 5)),
		a.playbook, "-e", "@"+filepath.Join(a.dir, "vars.json"))
	a.controlStarted = true
	r := playResult{wall: st.wall, cpu: st.cpu, out: string(st.stdout)}
	for _, m := range recapRe.FindAllStringSubmatch(r.out, -1) {
		c, _ := strconv.Atoi(m[3])
		u, _ := strconv.Atoi(m[4])
		f, _ := strconv.Atoi(m[5])
		r.changed, r.unreachable, r.failed = r.changed+c, r.unreachable+u, r.failed+f
	}
	if err != nil {
		return r, fmt.Errorf("ansible-playbook: %w", err)
	}
	return r, nil
}

// stopMasters asks the SSH control masters of the last runs to exit
// (ssh -O exit), so none outlives its node.
func (a *ansibleRun) stopMasters() {
	if !a.controlStarted {
		return
	}
	for _, s := range a.specs {
		cmd := exec.Command("ssh", "-O", "exit", "-o", "ControlPath="+a.controlDir+"/%C",
			"-i", filepath.Join(a.ws, "id_ed25519"), "root@"+s.Address.Addr().String())
		_ = cmd.Run()
	}
	_ = os.RemoveAll(a.controlDir)
	a.controlDir, a.controlStarted = "", false
}

// versions names the Ansible release.
func (a *ansibleRun) versions(ctx context.Context) [][2]string {
	return [][2]string{{"Ansible", fmt.Sprintf("%s (Debian ansible %s)", output(ctx, a.dir, "ansible", "--version"),
		output(ctx, a.dir, "dpkg-query", "-W", "-f=${Version}", "ansible"))}}
}
