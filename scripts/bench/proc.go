package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// runTimeout bounds every program the benchmarks run.
const runTimeout = 6 * time.Minute

// runStat is one timed run of a program.
type runStat struct {
	wall   time.Duration
	cpu    time.Duration // user+sys of the process and its waited-for children
	maxRSS int64         // peak resident set in KiB (ru_maxrss = VmHWM at exit)
	stdout []byte
	stderr []byte
}

// timedRun runs argv with env added and returns its wall time and rusage.
// A non-zero exit is an error carrying stderr's tail.
func timedRun(ctx context.Context, dir string, env []string, argv ...string) (runStat, error) {
	// No single step of the benchmarks takes minutes; one that hangs (an
	// apt download through the lab proxy, see fanout.go) fails the part.
	ctx, cancel := context.WithTimeout(ctx, runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = 10 * time.Second
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	st := runStat{wall: time.Since(start), stdout: out.Bytes(), stderr: errb.Bytes()}
	if ps := cmd.ProcessState; ps != nil {
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
			st.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			st.maxRSS = ru.Maxrss
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (no answer within %s)", err, runTimeout)
		}
		return st, fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, tailLines(errb.String()+out.String(), 15))
	}
	return st, nil
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times.
const clockTicks = 100

// treeCPU sums the CPU time of every process below the roots (roots
// included): utime+stime of the living ones plus cutime+cstime, which holds
// the time of their children that exited and were waited for (SSH sessions,
// agents, apt). The difference of two calls is what the trees used in
// between, wherever the processes came and went.
func treeCPU(roots []int) time.Duration {
	var ticks int64
	for _, p := range below(readProcs(), roots) {
		ticks += p.utime + p.stime + p.cutime + p.cstime
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// below returns the processes of procs below the roots, roots included.
func below(procs []procInfo, roots []int) []procInfo {
	children := map[int][]int{}
	byPID := map[int]procInfo{}
	for _, p := range procs {
		children[p.ppid] = append(children[p.ppid], p.pid)
		byPID[p.pid] = p
	}
	var out []procInfo
	seen := map[int]bool{}
	stack := slices.Clone(roots)
	for len(stack) > 0 {
		pid := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[pid] {
			continue
		}
		seen[pid] = true
		if p, ok := byPID[pid]; ok {
			out = append(out, p)
		}
		stack = append(stack, children[pid]...)
	}
	return out
}

type procInfo struct {
	pid, ppid                    int
	comm                         string
	utime, stime, cutime, cstime int64
}

func readProcs() []procInfo {
	ents, _ := os.ReadDir("/proc")
	out := make([]procInfo, 0, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ... utime(14) stime(15) cutime(16) cstime(17)
		s := string(b)
		i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if i < 0 || j < i {
			continue
		}
		f := strings.Fields(s[j+1:])
		if len(f) < 15 {
			continue
		}
		num := func(k int) int64 { v, _ := strconv.ParseInt(f[k], 10, 64); return v }
		out = append(out, procInfo{pid: pid, ppid: int(num(1)), comm: s[i+1 : j],
			utime: num(11), stime: num(12), cutime: num(13), cstime: num(14)})
	}
	return out
}

// agentSampler samples, while a run goes on, VmHWM of every kthw-agent
// below the roots (each agent's last sample is kept) and the CPU
// time of every process below them by program name: the breakdown of the
// nodes' CPU. A process that lives shorter than the sampling period may be
// missed; its time still shows in treeCPU through its parent.
type agentSampler struct {
	roots []int
	mu    sync.Mutex
	hwm   map[int]int64   // agent pid -> VmHWM in KiB
	first map[int]int64   // pid -> CPU ticks when first seen at the start
	cpu   map[int]procCPU // pid -> last seen
	start bool
	stop  chan struct{}
	done  chan struct{}
}

type procCPU struct {
	comm  string
	ticks int64
}

func startAgentSampler(roots []int, every time.Duration) *agentSampler {
	s := &agentSampler{roots: roots, hwm: map[int]int64{}, first: map[int]int64{}, cpu: map[int]procCPU{},
		start: true, stop: make(chan struct{}), done: make(chan struct{})}
	s.sample()
	s.start = false
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				s.sample()
				return
			case <-t.C:
				s.sample()
			}
		}
	}()
	return s
}

func (s *agentSampler) sample() {
	procs := readProcs()
	comm := make(map[int]string, len(procs))
	for _, p := range procs {
		comm[p.pid] = p.comm
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range below(procs, s.roots) {
		if s.start {
			s.first[p.pid] = p.utime + p.stime
		}
		s.cpu[p.pid] = procCPU{comm: p.comm, ticks: p.utime + p.stime}
		// An agent, not a child it forked that has not exec'd yet.
		if p.comm == "kthw-agent" && comm[p.ppid] != "kthw-agent" {
			if hwm, ok := vmHWM(p.pid); ok {
				s.hwm[p.pid] = hwm
			}
		}
	}
}

// finish stops sampling and returns each agent's last VmHWM (KiB), sorted,
// and the CPU time used meanwhile by program name.
func (s *agentSampler) finish() (hwm []int64, byComm map[string]time.Duration) {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range s.hwm {
		hwm = append(hwm, v)
	}
	sort.Slice(hwm, func(i, j int) bool { return hwm[i] < hwm[j] })
	byComm = map[string]time.Duration{}
	for pid, c := range s.cpu {
		if d := c.ticks - s.first[pid]; d > 0 {
			byComm[c.comm] += time.Duration(d) * time.Second / clockTicks
		}
	}
	return hwm, byComm
}

// vmHWM returns a process's peak resident set (VmHWM) in KiB.
func vmHWM(pid int) (int64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n, n > 0
		}
	}
	return 0, false
}

// copyFile copies src to dst with mode.
func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// durations holds samples and answers medians.
type durations []time.Duration

func (d durations) median() time.Duration { return median(d) }

func (d durations) minmax() (time.Duration, time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	lo, hi := d[0], d[0]
	for _, v := range d {
		lo, hi = min(lo, v), max(hi, v)
	}
	return lo, hi
}

// median returns the median of v, the mean of the middle two for an even
// count, 0 for none.
func median[T ~int64 | ~float64](v []T) T {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func secs(d time.Duration) string { return num(d.Seconds()) + " s" }
