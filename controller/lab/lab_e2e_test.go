package lab_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/crypto/ssh"

	"github.com/kthw/kthw/controller/internal/labtest"
	"github.com/kthw/kthw/controller/lab"
)

// The e2e lab: its own directory, bridge and range, distinct from the default lab's, so the
// test never touches a lab in use. Its directory is fixed so that a run killed before its
// cleanup is cleaned by the next. The image cache is shared with the default lab (override
// with KTHW_LAB_IMAGE_DIR) so only the first run builds.
// Other e2e tests of the module (controller/cli) run in parallel with this one on their own
// bridge, range and port: keep these distinct.
const (
	e2eDir    = "/var/lib/kthw/lab-e2e"
	e2eBridge = "kthwlabt0"
)

var e2eRange = netip.MustParsePrefix("10.200.213.1/24")

// TestLabE2E boots real nodes and checks what the lab promises: pinned host keys, systemd,
// apt through the proxy, host-safe sysctls, cgroups for containerd, cutting and restoring a
// node's link, crash detection and recovery, and that nothing is left after teardown.
func TestLabE2E(t *testing.T) {
	l, ctx := newE2ELab(t)

	start := time.Now()
	img, err := l.Prepare(ctx)
	if err != nil {
		t.Fatalf("prepare: %v", err)
	}
	t.Logf("prepare (image built=%t in %s, bridge, proxy): %s", img.Built, img.BuildTime.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

	clientKey, authorized := clientKey(t)
	specs := make([]lab.NodeSpec, 2)
	pins := make([]ssh.PublicKey, 2)
	for i := range specs {
		hostKey, pub, err := lab.GenerateHostKey()
		if err != nil {
			t.Fatal(err)
		}
		addr, err := l.HostAddress(11 + i)
		if err != nil {
			t.Fatal(err)
		}
		specs[i] = lab.NodeSpec{
			Name: fmt.Sprintf("kthwlabt-n%d", i+1), Address: addr, Gateway: l.Gateway(),
			HostKey: hostKey, AuthorizedKeys: authorized,
		}
		pins[i] = pub
	}

	start = time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(specs))
	for i := range specs {
		wg.Go(func() { _, errs[i] = l.Start(ctx, specs[i]) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("start: %v", err)
		}
	}
	t.Logf("%d nodes booted in parallel to sshd: %s", len(specs), time.Since(start).Round(time.Millisecond))

	clients := make([]*ssh.Client, len(specs))
	for i, s := range specs {
		clients[i] = dial(t, ctx, s.Address.Addr(), clientKey, pins[i])
	}

	t.Run("systemd", func(t *testing.T) {
		for i, c := range clients {
			out, _ := run(t, c, "timeout 30 systemctl is-system-running --wait")
			state := strings.TrimSpace(out)
			if state != "running" && state != "degraded" {
				failed, _ := run(t, c, "systemctl --failed --no-legend")
				t.Errorf("%s: system state %q; failed units:\n%s", specs[i].Name, state, failed)
			} else {
				t.Logf("%s: system %s", specs[i].Name, state)
			}
			if state == "degraded" {
				failed, _ := run(t, c, "systemctl --failed --no-legend")
				t.Logf("%s: degraded; failed units:\n%s", specs[i].Name, failed)
			}
			if out, err := run(t, c, "hostname"); err != nil || strings.TrimSpace(out) != specs[i].Name {
				t.Errorf("%s: hostname %q (%v)", specs[i].Name, out, err)
			}
		}
	})

	t.Run("pinned host key only", func(t *testing.T) {
		out, err := run(t, clients[0], "ls /etc/ssh/ | grep ssh_host_")
		if err != nil || strings.TrimSpace(out) != "ssh_host_ed25519_key\nssh_host_ed25519_key.pub" {
			t.Errorf("host keys in the node: %q (%v)", out, err)
		}
		// A client that only accepts another key type must find none.
		cfg := &ssh.ClientConfig{User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(clientKey)},
			HostKeyCallback: ssh.InsecureIgnoreHostKey(), HostKeyAlgorithms: []string{ssh.KeyAlgoECDSA256, ssh.KeyAlgoRSASHA256}, Timeout: 5 * time.Second}
		if c, err := ssh.Dial("tcp", netip.AddrPortFrom(specs[0].Address.Addr(), 22).String(), cfg); err == nil {
			c.Close()
			t.Error("sshd offered a host key other than the pinned ed25519 key")
		}
	})

	t.Run("sysctl", func(t *testing.T) {
		before, _ := os.ReadFile("/proc/sys/kernel/printk_ratelimit")
		// Writing the current value back: harmless even if the guard failed.
		out, err := run(t, clients[0], "sysctl -w kernel.printk_ratelimit=$(cat /proc/sys/kernel/printk_ratelimit)")
		if err == nil {
			t.Errorf("a global sysctl write inside a node succeeded: %s", out)
		}
		if out, err := run(t, clients[0], "sysctl -w net.ipv4.ip_forward=1 && cat /proc/sys/net/ipv4/ip_forward"); err != nil || strings.TrimSpace(lastLine(out)) != "1" {
			t.Errorf("net.ipv4.ip_forward inside a node: %q (%v)", out, err)
		}
		after, _ := os.ReadFile("/proc/sys/kernel/printk_ratelimit")
		if !bytes.Equal(before, after) {
			t.Errorf("host kernel.printk_ratelimit changed: %q -> %q", before, after)
		}
	})

	t.Run("cgroups writable for containerd", func(t *testing.T) {
		for _, c := range []string{"pids", "memory", "cpu"} {
			dir := "/sys/fs/cgroup/" + c + "/kthw-e2e"
			if out, err := run(t, clients[1], "mkdir "+dir+" && rmdir "+dir); err != nil {
				t.Errorf("cgroup %s not writable: %s (%v)", c, out, err)
			}
		}
		if out, err := run(t, clients[1], "test -c /dev/kmsg && echo ok"); err != nil || strings.TrimSpace(out) != "ok" {
			t.Errorf("/dev/kmsg: %q (%v)", out, err)
		}
	})

	t.Run("proxy refuses a taken port", func(t *testing.T) {
		if err := l.StopProxy(ctx); err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", l.Config().ProxyPort))
		if err != nil {
			t.Fatal(err)
		}
		err = l.EnsureProxy(ctx)
		ln.Close()
		if err == nil || !strings.Contains(err.Error(), "taken") {
			t.Fatalf("EnsureProxy with its port taken: %v", err)
		}
	})

	t.Run("proxy replaces a stale pid file", func(t *testing.T) {
		if err := l.StopProxy(ctx); err != nil {
			t.Fatal(err)
		}
		// A live process that is not apt-cacher-ng: ours. It must be left alone.
		pidFile := filepath.Join(e2eDir, "proxy/run/apt-cacher-ng.pid")
		if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := l.EnsureProxy(ctx); err != nil {
			t.Fatal(err)
		}
		if pid := l.ProxyPID(); pid == 0 || pid == os.Getpid() {
			t.Fatalf("proxy pid %d after a stale pid file", pid)
		}
		if err := l.EnsureProxy(ctx); err != nil { // running: a no-op
			t.Fatal(err)
		}
	})

	t.Run("apt through the proxy", func(t *testing.T) {
		start := time.Now()
		out, err := run(t, clients[0], "timeout 120 apt-get -q update --error-on=any")
		if err != nil {
			t.Fatalf("apt-get update: %v\n%s", err, out)
		}
		t.Logf("apt-get update in a node: %s", time.Since(start).Round(time.Millisecond))
		proxyConf, _ := run(t, clients[0], "cat /etc/apt/apt.conf.d/00kthw-proxy")
		if !strings.Contains(proxyConf, l.ProxyURL()) {
			t.Errorf("proxy conf: %q", proxyConf)
		}
		log, _ := os.ReadFile(filepath.Join(e2eDir, "proxy/log/apt-cacher.log"))
		if !bytes.Contains(log, []byte("bookworm")) {
			t.Errorf("apt-cacher-ng logged no bookworm transfer: %q", log)
		}
	})

	t.Run("cut and restore a node's link", func(t *testing.T) {
		addr := netip.AddrPortFrom(specs[0].Address.Addr(), 22).String()
		veth, err := l.HostVeth(ctx, specs[0].Name)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("host-side veth of %s: %s", specs[0].Name, veth)
		if err := l.SetLink(ctx, specs[0].Name, false); err != nil {
			t.Fatal(err)
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Error("node reachable with its link down")
		}
		if c, err := net.DialTimeout("tcp", netip.AddrPortFrom(specs[1].Address.Addr(), 22).String(), 2*time.Second); err != nil {
			t.Errorf("other node unreachable: %v", err)
		} else {
			c.Close()
		}
		if err := l.SetLink(ctx, specs[0].Name, true); err != nil {
			t.Fatal(err)
		}
		if err := waitDial(addr, 15*time.Second); err != nil {
			t.Errorf("node unreachable after its link came back: %v", err)
		}
	})

	t.Run("measure", func(t *testing.T) {
		for _, s := range specs {
			leader, err := l.Leader(ctx, s.Name)
			if err != nil {
				t.Fatal(err)
			}
			rss, n := nsRSS(leader)
			info, _ := l.Status(ctx, s.Name)
			t.Logf("%s: %d processes, RSS %.1f MiB summed; nspawn pid %d; upper dir %.1f MiB",
				s.Name, n, float64(rss)/(1<<20), info.PID, float64(duBytes(filepath.Join(info.Dir, "upper")))/(1<<20))
		}
	})

	t.Run("crash and recover", func(t *testing.T) {
		for _, c := range clients {
			c.Close()
		}
		s := specs[0]
		leader, err := l.Leader(ctx, s.Name)
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(leader, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			info, err := l.Status(ctx, s.Name)
			if err != nil {
				t.Fatal(err)
			}
			if info.State == lab.StateCrashed {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("state %s 15s after SIGKILL of the node's PID 1, want crashed", info.State)
			}
			time.Sleep(100 * time.Millisecond)
		}
		start := time.Now()
		info, err := l.Start(ctx, s)
		if err != nil {
			t.Fatalf("restart after crash: %v", err)
		}
		t.Logf("restart after crash: %s", time.Since(start).Round(time.Millisecond))
		if info.State != lab.StateRunning {
			t.Fatalf("state after restart: %s", info.State)
		}
		c := dial(t, ctx, s.Address.Addr(), clientKey, pins[0])
		defer c.Close()
		if out, err := run(t, c, "timeout 30 systemctl is-system-running --wait"); err != nil && !strings.Contains(out, "degraded") {
			t.Errorf("after restart: %q (%v)", out, err)
		}
	})

	nodes, err := l.List(ctx)
	if err != nil || len(nodes) != 2 {
		t.Fatalf("list: %v %+v", err, nodes)
	}
}

// newE2ELab skips unless the machine can run the lab, cleans up what an earlier killed run
// left, and registers the teardown and its checks.
func newE2ELab(t *testing.T) (*lab.Lab, context.Context) {
	t.Helper()
	if testing.Short() {
		t.Skip("lab e2e: skipped in -short mode")
	}
	imageDir := os.Getenv("KTHW_LAB_IMAGE_DIR")
	if imageDir == "" {
		imageDir = filepath.Join(lab.DefaultDir, "rootfs")
	}
	l, err := lab.New(lab.Config{
		Dir: e2eDir, ImageDir: imageDir, Bridge: e2eBridge, BridgeAddress: e2eRange,
		ProxyPort: freePort(t), BootTimeout: 60 * time.Second,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Problems(l.Doctor(t.Context())); err != nil {
		t.Skipf("lab e2e: this machine cannot run the lab:\n%v", err)
	}
	// One run at a time on the machine: the directory, bridge and range are fixed, and a run
	// starts by tearing down what it finds there. Released after the teardown below.
	labtest.HostLock(t, "kthw-lab-e2e")
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	t.Cleanup(cancel)
	if err := l.Teardown(ctx); err != nil {
		t.Fatalf("clean up an earlier run: %v", err)
	}
	t.Cleanup(func() {
		// Not t.Context(): it is already cancelled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var pids []int
		if nodes, err := l.List(ctx); err == nil {
			for _, n := range nodes {
				if n.PID > 0 {
					pids = append(pids, n.PID)
				}
				if leader, err := l.Leader(ctx, n.Name); err == nil {
					pids = append(pids, leader)
				}
			}
		}
		if pid := l.ProxyPID(); pid > 0 {
			pids = append(pids, pid)
		}
		start := time.Now()
		if err := l.Teardown(ctx); err != nil {
			t.Errorf("teardown: %v", err)
		}
		t.Logf("teardown: %s", time.Since(start).Round(time.Millisecond))
		assertNothingLeft(t, pids)
	})
	return l, ctx
}

// assertNothingLeft checks: no mount below the lab directory, no bridge, no veth on it, none
// of the recorded processes, no process running from the lab directory.
func assertNothingLeft(t *testing.T, pids []int) {
	t.Helper()
	if mps, err := lab.MountsUnder(e2eDir); err != nil || len(mps) > 0 {
		t.Errorf("mounts left under %s: %v %v", e2eDir, mps, err)
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Errorf("list links: %v", err)
	}
	for _, link := range links {
		name := link.Attrs().Name
		if name == e2eBridge || strings.HasPrefix(name, "vb-kthwlabt") {
			t.Errorf("link left: %s (%s)", name, link.Type())
		}
	}
	for _, pid := range pids {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); len(cmd) > 0 {
				t.Errorf("process left: %d %q", pid, cmd)
			}
		}
	}
	if ents, _ := os.ReadDir("/run/systemd/nspawn/propagate"); len(ents) > 0 {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "kthwlabt-") {
				t.Errorf("systemd-nspawn state left: /run/systemd/nspawn/propagate/%s", e.Name())
			}
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(e2eDir, "nodes")); len(ents) > 0 {
		t.Errorf("node directories left: %v", ents)
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if bytes.Contains(cmd, []byte(e2eDir)) {
			t.Errorf("process left: %s %q", e.Name(), bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}))
		}
	}
}

func clientKey(t *testing.T) (ssh.Signer, []byte) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return signer, ssh.MarshalAuthorizedKey(signer.PublicKey())
}

// dial connects as root, accepting only the pinned host key.
func dial(t *testing.T, ctx context.Context, addr netip.Addr, key ssh.Signer, pin ssh.PublicKey) *ssh.Client {
	t.Helper()
	cfg := &ssh.ClientConfig{
		User:              "root",
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(key)},
		HostKeyCallback:   ssh.FixedHostKey(pin),
		HostKeyAlgorithms: []string{pin.Type()},
		Timeout:           10 * time.Second,
	}
	c, err := ssh.Dial("tcp", netip.AddrPortFrom(addr, 22).String(), cfg)
	if err != nil {
		t.Fatalf("ssh %s: %v", addr, err)
	}
	return c
}

// run runs cmd on the node and returns its combined output.
func run(t *testing.T, c *ssh.Client, cmd string) (string, error) {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	out, err := s.CombinedOutput(cmd)
	return string(out), err
}

func waitDial(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// freePort finds a port for the test's proxy, below apt-cacher-ng's limit and away from the
// default lab's 3142.
func freePort(t *testing.T) int {
	t.Helper()
	for p := 3150; p < 3170; p++ {
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
		if err == nil {
			ln.Close()
			return p
		}
	}
	t.Fatal("no free port in 3150..3169 for the apt proxy")
	return 0
}

// nsRSS sums VmRSS over the processes in leader's PID namespace.
func nsRSS(leader int) (bytes int64, n int) {
	want, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", leader))
	if err != nil {
		return 0, 0
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if ns, err := os.Readlink("/proc/" + e.Name() + "/ns/pid"); err != nil || ns != want {
			continue
		}
		data, _ := os.ReadFile("/proc/" + e.Name() + "/status")
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				bytes += kb << 10
				n++
			}
		}
	}
	return bytes, n
}

func duBytes(dir string) int64 {
	var total int64
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				total += st.Blocks * 512
			}
		}
		return nil
	})
	return total
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
