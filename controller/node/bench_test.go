package node

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kthw/kthw/controller/fanout"
	"github.com/kthw/kthw/controller/internal/sshdtest"
	"github.com/kthw/kthw/controller/sshx"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// Benchmarks of the whole controller → agent path on loopback: a real OpenSSH
// sshd (sshdtest, needs root) and the agent binary `make build` writes. They
// report figures with b.ReportMetric and assert no timings; `make bench`
// (scripts/bench) runs them and prints a table, docs/benchmarks.md keeps it.
//
// The agent binary is $KTHW_BENCH_AGENT, else bin/kthw-agent of this module
// (run `make build` first, so that size and behaviour are those of the real,
// stripped build).

// benchAgentEnv names the agent binary the benchmarks push.
const benchAgentEnv = "KTHW_BENCH_AGENT"

// benchUserEnv names the SSH user the benchmarks log in as.
const benchUserEnv = "KTHW_BENCH_USER"

// benchUser is the SSH user of the benchmarks: $KTHW_BENCH_USER, else
// sshdtest.UserSudo, a user with NOPASSWD sudo and a stock shell, as on a
// cloud image. Root of the machine running the benchmarks may have a login
// shell set up for development (pyenv and the like) whose start-up cost
// would be counted in every SSH command.
func benchUser() string {
	if u := os.Getenv(benchUserEnv); u != "" {
		return u
	}
	return sshdtest.UserSudo
}

// benchAgent returns the path of the agent binary to benchmark.
func benchAgent(b *testing.B) string {
	b.Helper()
	p := os.Getenv(benchAgentEnv)
	if p == "" {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			b.Fatalf("go env GOMOD: %v", err)
		}
		p = filepath.Join(filepath.Dir(strings.TrimSpace(string(out))), "bin", "kthw-agent")
	}
	if _, err := os.Stat(p); err != nil {
		b.Skipf("no agent binary at %s: run `make build` or set %s", p, benchAgentEnv)
	}
	return p
}

// newBenchFixture starts sshd and returns options that push the benchmark
// agent into fresh directories.
func newBenchFixture(b *testing.B, opts ...sshdtest.Option) *fixture {
	b.Helper()
	srv := sshdtest.Start(b, opts...)
	dir := b.TempDir()
	f := &fixture{srv: srv, agent: benchAgent(b)}
	f.opts = Options{
		SSH: sshx.Options{
			IdentityFiles:  []string{srv.ClientKeyFile},
			KnownHostsFile: srv.WriteKnownHosts(b),
		},
		AgentBinary:       f.agent,
		AgentDir:          filepath.Join(dir, "agent"),
		BlobDir:           filepath.Join(dir, "blobs"),
		ControllerVersion: "bench",
	}
	return f
}

func (f *fixture) benchConnect(b *testing.B, o Options) *Conn {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := Connect(ctx, f.target(benchUser()), o)
	if err != nil {
		b.Fatalf("connect: %v\nsshd log:\n%s", err, f.srv.Log())
	}
	return c
}

// BenchmarkAgentRPC measures round trips on one live session: the bare
// Handshake RPC and two no-op modules, then the agent's memory.
func BenchmarkAgentRPC(b *testing.B) {
	f := newBenchFixture(b)
	c := f.benchConnect(b, f.opts)
	b.Cleanup(func() { c.Close() })
	ctx := context.Background()
	pid := int(c.Handshake.GetPid())
	idle, err := readProcMem(pid)
	if err != nil {
		b.Fatalf("agent memory: %v", err)
	}

	b.Run("handshake", func(b *testing.B) {
		req := &agentv1.HandshakeRequest{ControllerVersion: "bench", ApiVersion: agentv1.APIVersion}
		benchRoundTrips(b, func() error {
			_, err := c.Agent.Handshake(ctx, req)
			return err
		})
	})

	// command, check only, with a creates guard that exists: the agent
	// validates, stats the guard and reports "skipped"; nothing runs.
	dir := b.TempDir()
	guard := filepath.Join(dir, "guard")
	if err := os.WriteFile(guard, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := &agentv1.RunModuleRequest{Name: "noop", CheckOnly: true, Module: &agentv1.RunModuleRequest_Command{Command: &agentv1.CommandModule{
		Argv: []string{"/bin/false"}, Creates: guard,
	}}}
	b.Run("module-command-noop", func(b *testing.B) {
		benchRoundTrips(b, func() error { return runUnchanged(ctx, c, cmd) })
	})

	// file, check only, on a small file that already has the content and
	// mode: the agent reads and compares it and reports no change.
	path := filepath.Join(dir, "small.conf")
	content := []byte(strings.Repeat("key = value\n", 40)) // 480 bytes
	if err := os.WriteFile(path, content, 0o644); err != nil {
		b.Fatal(err)
	}
	file := &agentv1.RunModuleRequest{Name: "small.conf", CheckOnly: true, Module: &agentv1.RunModuleRequest_File{File: &agentv1.FileModule{
		Path: path, Source: &agentv1.FileModule_Content{Content: content}, Mode: 0o644,
	}}}
	b.Run("module-file-check", func(b *testing.B) {
		benchRoundTrips(b, func() error { return runUnchanged(ctx, c, file) })
	})

	// Memory of the same agent: when idle after the handshake and now, after
	// the loops above. Not a timing: ns/op is meaningless here.
	b.Run("memory", func(b *testing.B) {
		now, err := readProcMem(pid)
		if err != nil {
			b.Fatalf("agent memory: %v", err)
		}
		st, err := os.Stat(f.agent)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(0, "ns/op") // hides the meaningless timing
		b.ReportMetric(float64(st.Size())/1e6, "binary-MB")
		b.ReportMetric(idle.rss, "idle-VmRSS-MiB")
		b.ReportMetric(idle.hwm, "idle-VmHWM-MiB")
		b.ReportMetric(now.rss, "loop-VmRSS-MiB")
		b.ReportMetric(now.hwm, "loop-VmHWM-MiB")
	})
}

// runUnchanged runs req and fails unless the module reports no change.
func runUnchanged(ctx context.Context, c *Conn, req *agentv1.RunModuleRequest) error {
	res, err := RunModule(ctx, c.Agent, req, nil)
	if err != nil {
		return err
	}
	if res.GetChanged() {
		return fmt.Errorf("module %s: changed, want a no-op (diff %q)", req.GetName(), res.GetDiff())
	}
	return nil
}

// benchRoundTrips times b.N calls of rt one by one and reports their
// distribution.
func benchRoundTrips(b *testing.B, rt func() error) {
	b.Helper()
	if err := rt(); err != nil { // warm the path; fail early
		b.Fatal(err)
	}
	lat := make([]time.Duration, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		err := rt()
		lat[i] = time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportLatency(b, lat)
}

// reportLatency reports p50, p99 and mean of lat in milliseconds.
func reportLatency(b *testing.B, lat []time.Duration) {
	b.Helper()
	if len(lat) == 0 {
		return
	}
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	b.ReportMetric(ms(percentile(s, 50)), "p50-ms")
	b.ReportMetric(ms(percentile(s, 99)), "p99-ms")
	b.ReportMetric(ms(sum/time.Duration(len(s))), "mean-ms")
}

// percentile returns the p-th percentile (nearest rank) of sorted s.
func percentile(s []time.Duration, p int) time.Duration {
	rank := (len(s)*p + 99) / 100 // ceil(n*p/100)
	return s[max(rank, 1)-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// procMem is a process's resident memory in MiB.
type procMem struct{ rss, hwm float64 }

// readProcMem reads VmRSS and VmHWM of pid (the agent runs on this machine).
func readProcMem(pid int) (procMem, error) {
	fh, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return procMem{}, err
	}
	defer fh.Close()
	var m procMem
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		if err != nil {
			return procMem{}, fmt.Errorf("parse %s %q: %w", k, v, err)
		}
		if k == "VmRSS" {
			m.rss = kb / 1024
		} else {
			m.hwm = kb / 1024
		}
	}
	if err := sc.Err(); err != nil {
		return procMem{}, err
	}
	if m.rss == 0 {
		return procMem{}, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	return m, nil
}

// BenchmarkSSHExec measures the floor under agent push and start: one
// remote command (`true`) on an open SSH connection, that is an SSH session
// plus the user's login shell.
func BenchmarkSSHExec(b *testing.B) {
	f := newBenchFixture(b)
	ctx := context.Background()
	client, err := sshx.Dial(ctx, f.target(benchUser()), f.opts.SSH)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { client.Close() })
	benchRoundTrips(b, func() error {
		_, err := sshx.Run(ctx, client, "true", nil)
		return err
	})
}

// BenchmarkConnect measures connect+push+handshake wall time to n targets at
// once. Cold: the agent is not on the node (a fresh agent directory per
// target and iteration), so the binary is uploaded. Warm: it is there
// already, nothing is uploaded. The targets are one loopback sshd with one
// agent directory per target, each a node of its own as far as the
// controller can tell.
func BenchmarkConnect(b *testing.B) {
	f := newBenchFixture(b, sshdtest.WithConfig("MaxStartups 100", "MaxSessions 100"))
	for _, n := range []int{1, 10} {
		for _, warm := range []bool{false, true} {
			name := fmt.Sprintf("cold-%d", n)
			if warm {
				name = fmt.Sprintf("warm-%d", n)
			}
			b.Run(name, func(b *testing.B) { benchConnect(b, f, n, warm) })
		}
	}
}

func benchConnect(b *testing.B, f *fixture, n int, warm bool) {
	ctx := context.Background()
	root := b.TempDir()
	opts := func(iter, i int) Options {
		o := f.opts
		if warm {
			iter = 0
		}
		o.AgentDir = filepath.Join(root, fmt.Sprintf("iter%d-node%d", iter, i))
		return o
	}
	connectAll := func(iter int) ([]*Conn, error) {
		out := fanout.Each(ctx, n, 0, func(ctx context.Context, i int) (*Conn, error) {
			return Connect(ctx, f.target(benchUser()), opts(iter, i))
		})
		conns := make([]*Conn, 0, n)
		var first error
		for _, o := range out {
			if o.Err != nil && first == nil {
				first = o.Err
			}
			if o.Value != nil {
				conns = append(conns, o.Value)
			}
		}
		return conns, first
	}
	closeAll := func(conns []*Conn) {
		for _, c := range conns {
			c.Close()
		}
	}
	if warm { // the agent is on every node before the clock starts
		conns, err := connectAll(0)
		closeAll(conns)
		if err != nil {
			b.Fatalf("pre-push: %v", err)
		}
	}

	lat := make([]time.Duration, 0, b.N)
	var dial, push, start time.Duration
	var pushed int64
	b.ResetTimer()
	for iter := range b.N {
		t0 := time.Now()
		conns, err := connectAll(iter + 1)
		wall := time.Since(t0)
		b.StopTimer()
		if err != nil {
			closeAll(conns)
			b.Fatalf("connect %d targets: %v\nsshd log:\n%s", n, err, f.srv.Log())
		}
		lat = append(lat, wall)
		for _, c := range conns {
			dial += c.DialTime
			push += c.PushTime
			start += c.StartTime
			pushed += c.Push.Bytes
			if c.Push.Uploaded == warm {
				b.Fatalf("warm=%v but uploaded=%v", warm, c.Push.Uploaded)
			}
		}
		closeAll(conns)
		b.StartTimer()
	}
	b.StopTimer()
	reportLatency(b, lat)
	per := time.Duration(b.N * n)
	b.ReportMetric(ms(dial/per), "dial-ms")
	b.ReportMetric(ms(push/per), "push-ms")
	b.ReportMetric(ms(start/per), "start-ms")
	b.ReportMetric(float64(pushed)/float64(b.N*n)/1e6, "pushed-MB/node")
}

// BenchmarkPutFile64MiB measures uploading 64 MiB of random bytes with
// PutFile: blob upload in chunks, sha256 on the agent, then a file module
// that installs the blob. Each iteration starts without the blob.
func BenchmarkPutFile64MiB(b *testing.B) {
	const size = 64 << 20
	f := newBenchFixture(b)
	c := f.benchConnect(b, f.opts)
	b.Cleanup(func() { c.Close() })
	ctx := context.Background()

	dir := b.TempDir()
	src := filepath.Join(dir, "blob")
	out, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.CopyN(out, rand.Reader, size); err != nil {
		b.Fatal(err)
	}
	if err := out.Close(); err != nil {
		b.Fatal(err)
	}
	sum, _, err := HashFile(src)
	if err != nil {
		b.Fatal(err)
	}
	dst := filepath.Join(dir, "copy")

	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		// Forget the previous upload so that this one sends every byte.
		for _, p := range []string{filepath.Join(f.opts.BlobDir, sum), dst} {
			if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		res, err := PutFile(ctx, c.Agent, src, &agentv1.FileModule{Path: dst, Mode: 0o600}, nil)
		if err != nil || !res.GetChanged() {
			b.Fatalf("put file: %v %v", res, err)
		}
	}
}
