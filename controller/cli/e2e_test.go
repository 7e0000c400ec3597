package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kthw/kthw/controller/config"
	"github.com/kthw/kthw/controller/internal/agentbuild"
	"github.com/kthw/kthw/controller/internal/aptrepo"
	"github.com/kthw/kthw/controller/internal/labtest"
	"github.com/kthw/kthw/controller/lab"
	"github.com/kthw/kthw/controller/provider/local"
)

// The e2e test runs the main job on real lab nodes: `up` of a 3-node
// cluster, `status`, a no-op re-run, a controller killed in the middle of
// `up`, a node cut off the network, and `down`. It uses its own bridge,
// range, lab directory and apt proxy port, and shares only the cached root
// filesystem with the default lab.
const e2eCluster = `apiVersion: kthw.dev/v1alpha1
kind: Cluster
name: e2e
profile: debian
provider:
  type: local
  local:
    bridge: kthwe2e0
    labDir: %s
    imageDir: /var/lib/kthw/lab/rootfs
    proxyPort: 3177
network:
  nodeCIDR: 10.200.77.0/24
nodePrep:
  # pkgs.k8s.io is not reachable from the test machine.
  kubernetesPackages: false
nodes:
  - name: cp
    role: control-plane
    count: 1
  - name: worker
    role: worker
    count: 2
`

type e2eEnv struct {
	t       *testing.T
	dir     string
	file    string
	ws      string
	agent   string
	labDir  string
	cluster *config.Cluster
}

func newE2E(t *testing.T) *e2eEnv { return newE2EWith(t, e2eCluster) }

// newE2EWith sets up an e2e run of the cluster file clusterYAML (a format
// string taking the lab directory).
func newE2EWith(t *testing.T, clusterYAML string) *e2eEnv {
	if os.Geteuid() != 0 {
		t.Skip("e2e: needs root (lab nodes)")
	}
	for _, p := range []string{"systemd-nspawn", "mmdebstrap", "apt-cacher-ng"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("e2e: %s not installed (scripts/setup.sh installs it)", p)
		}
	}
	// One run at a time on the machine: the bridge and the proxy port are fixed. Released
	// after the teardown below.
	labtest.HostLock(t, "kthw-cli-e2e")
	dir := t.TempDir()
	e := &e2eEnv{t: t, dir: dir, ws: filepath.Join(dir, "ws"), labDir: filepath.Join(dir, "lab")}
	e.file = filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(e.file, []byte(fmt.Sprintf(clusterYAML, e.labDir)), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(e.file)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDefaults()
	e.cluster = c
	t.Cleanup(agentbuild.Cleanup)
	e.agent = agentbuild.Build(t, agentbuild.Variant{Version: "e2e"})
	// Whatever happens, leave nothing behind.
	t.Cleanup(func() {
		if err := e.lab().Teardown(context.Background()); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	return e
}

func (e *e2eEnv) lab() *lab.Lab {
	p, err := local.New(e.cluster, nil, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return p.Lab()
}

// run runs the CLI in-process.
func (e *e2eEnv) run(args ...string) (string, string, error) {
	args = append(args, "-f", e.file, "--workspace", e.ws, "--agent-binary", e.agent)
	var stdout, stderr bytes.Buffer
	err := New("e2e", strings.NewReader(""), &stdout, &stderr).Run(context.Background(), args)
	return stdout.String(), stderr.String(), err
}

type clusterStatus struct {
	Nodes []struct {
		Name          string `json:"name"`
		State         string `json:"state"`
		Address       string `json:"address"`
		OK            bool   `json:"ok"`
		Error         string `json:"error"`
		AgentUploaded bool   `json:"agent_uploaded"`
		Facts         struct {
			OS       string `json:"os"`
			Hostname string `json:"hostname"`
			Systemd  bool   `json:"systemd"`
		} `json:"facts"`
		Status struct {
			UnitsAvailable bool `json:"units_available"`
		} `json:"status"`
	} `json:"nodes"`
}

func (e *e2eEnv) status() (clusterStatus, string, error) {
	out, stderr, err := e.run("status", "-o", "json")
	var st clusterStatus
	if jerr := json.Unmarshal([]byte(out), &st); jerr != nil {
		e.t.Fatalf("status json %q: %v (stderr %s)", out, jerr, stderr)
	}
	return st, stderr, err
}

func TestE2EUpStatusDown(t *testing.T) {
	e := newE2E(t)

	start := time.Now()
	out, stderr, err := e.run("up")
	if err != nil {
		t.Fatalf("up: %v\n%s\n%s", err, out, stderr)
	}
	t.Logf("up (3 nodes) took %s\n%s", time.Since(start), out)

	st, stderr, err := e.status()
	if err != nil || len(st.Nodes) != 3 {
		t.Fatalf("status: %v %+v %s", err, st, stderr)
	}
	for _, n := range st.Nodes {
		if !n.OK || n.State != "running" || n.Facts.OS != "debian" || n.Facts.Hostname != n.Name || !n.Facts.Systemd || !n.Status.UnitsAvailable {
			t.Fatalf("node %+v", n)
		}
	}

	// A second up has nothing to do: no node made, no agent uploaded.
	start = time.Now()
	out, _, err = e.run("up", "-o", "json")
	if err != nil {
		t.Fatalf("second up: %v", err)
	}
	t.Logf("no-op up took %s", time.Since(start))
	if strings.Contains(out, "pushed") {
		t.Fatalf("no-op up pushed an agent:\n%s", out)
	}

	// plan changes nothing and says so; drift on one node shows as a diff
	// for that node only, stays until up repairs it.
	if out, stderr, err := e.run("plan"); err != nil || strings.Count(out, "up to date") != 3 {
		t.Fatalf("plan after up: %v\n%s\n%s", err, out, stderr)
	}
	pid, err := e.lab().Leader(context.Background(), "e2e-worker-2")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("nsenter", "-t", fmt.Sprint(pid), "-a", "rm", "/etc/sysctl.d/99-kthw.conf").CombinedOutput(); err != nil {
		t.Fatalf("make drift: %v %s", err, b)
	}
	for i := 0; i < 2; i++ {
		out, stderr, err := e.run("plan")
		if err != nil || strings.Count(out, "up to date") != 2 || !strings.Contains(out, "worker-2:\n  ~ sysctl\n") || !strings.Contains(out, "+net.ipv4.ip_forward = 1") {
			t.Fatalf("plan with drift (run %d): %v\n%s\n%s", i, err, out, stderr)
		}
	}
	if _, _, err := e.run("up"); err != nil {
		t.Fatalf("up repairing drift: %v", err)
	}
	if out, _, err := e.run("plan"); err != nil || strings.Count(out, "up to date") != 3 {
		t.Fatalf("plan after repair: %v\n%s", err, out)
	}

	// One node cut off: status names it, the others answer.
	l := e.lab()
	if err := l.SetLink(context.Background(), "e2e-worker-1", false); err != nil {
		t.Fatal(err)
	}
	st, stderr, err = e.status()
	if err == nil || !strings.Contains(stderr, "worker-1:") {
		t.Fatalf("status with worker-1 cut: err=%v stderr=%s", err, stderr)
	}
	for _, n := range st.Nodes {
		if (n.Name == "worker-1") == n.OK {
			t.Fatalf("with worker-1 cut, node %s ok=%v (%s)", n.Name, n.OK, n.Error)
		}
	}
	if err := l.SetLink(context.Background(), "e2e-worker-1", true); err != nil {
		t.Fatal(err)
	}

	e.downAndCheck()
}

func TestE2EKilledUpConverges(t *testing.T) {
	e := newE2E(t)
	ctl := agentbuild.Controller(t)

	// Start up in a child process and SIGKILL it once nodes are being made.
	cmd := exec.Command(ctl, "up", "-o", "json", "-f", e.file, "--workspace", e.ws)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		var ev struct{ Node, Step, Status string }
		json.Unmarshal(sc.Bytes(), &ev)
		if ev.Step == "provision" && ev.Status == "done" {
			cmd.Process.Signal(syscall.SIGKILL)
			killed = true
			break
		}
	}
	cmd.Wait()
	if !killed {
		t.Fatalf("up ended before a node was provisioned")
	}

	out, stderr, err := e.run("up")
	if err != nil {
		t.Fatalf("up after kill: %v\n%s\n%s", err, out, stderr)
	}
	nodes, err := e.lab().List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range nodes {
		names = append(names, n.Name)
		if n.State != lab.StateRunning {
			t.Errorf("node %s is %s", n.Name, n.State)
		}
	}
	if got := strings.Join(names, ","); got != "e2e-cp-1,e2e-worker-1,e2e-worker-2" {
		t.Fatalf("lab nodes after kill + re-run: %s", got)
	}
	if n := countNspawn(t, e.labDir); n != 3 {
		t.Fatalf("%d systemd-nspawn processes for the lab, want 3", n)
	}
	e.downAndCheck()
}

// downAndCheck runs down and checks nothing of the lab is left.
func (e *e2eEnv) downAndCheck() {
	t := e.t
	if _, stderr, err := e.run("down", "--yes"); err != nil {
		t.Fatalf("down: %v\n%s", err, stderr)
	}
	mounts, err := lab.MountsUnder(e.labDir)
	if err != nil || len(mounts) != 0 {
		t.Fatalf("mounts left: %v %v", mounts, err)
	}
	if n := countNspawn(t, e.labDir); n != 0 {
		t.Fatalf("%d systemd-nspawn processes left", n)
	}
	links, _ := exec.Command("ip", "-o", "link").Output()
	for _, l := range strings.Split(string(links), "\n") {
		if strings.Contains(l, "kthwe2e0") || strings.Contains(l, "vb-e2e-") {
			t.Fatalf("link left: %s", l)
		}
	}
	if pid := e.lab().ProxyPID(); pid != 0 {
		t.Fatalf("apt proxy still running as pid %d", pid)
	}
	checkNoPins(t, e.ws)
	st, _, _ := e.status()
	for _, n := range st.Nodes {
		if n.State != "missing" {
			t.Fatalf("after down, node %s is %s", n.Name, n.State)
		}
	}
}

// countNspawn counts systemd-nspawn processes whose command line names dir.
func countNspawn(t *testing.T, dir string) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if strings.HasSuffix(args[0], "systemd-nspawn") && strings.Contains(string(b), dir) {
			n++
		}
	}
	return n
}

// TestE2EKubernetesPackagesFromMirror: with a repository override in the
// cluster file, up installs kubelet, kubeadm and kubectl pinned to the
// profile's version from a signed mirror (built and served by the test on
// the lab bridge, standing in for pkgs.k8s.io) and holds them; a re-run
// changes nothing.
func TestE2EKubernetesPackagesFromMirror(t *testing.T) {
	aptrepo.Skip(t)
	base := strings.Replace(e2eCluster, "nodePrep:\n  # pkgs.k8s.io is not reachable from the test machine.\n  kubernetesPackages: false\n", "", 1)
	base = strings.Replace(base, "    count: 2\n", "    count: 1\n", 1)
	e := newE2EWith(t, base)
	if _, stderr, err := e.run("up", "--no-node-prep"); err != nil {
		t.Fatalf("up --no-node-prep: %v\n%s", err, stderr)
	}
	gpg := aptrepo.NewGPG(t, "kthw e2e mirror <mirror@kthw.invalid>")
	repo := aptrepo.Build(t, gpg, "10.200.77.1", aptrepo.Debs{
		"kubelet": {"1.31.1-1.1", "1.31.2-1.1"}, "kubeadm": {"1.31.2-1.1"}, "kubectl": {"1.31.2-1.1", "1.32.0-1.1"},
	})
	keyFile := filepath.Join(e.dir, "mirror.asc")
	if err := os.WriteFile(keyFile, repo.Key, 0o644); err != nil {
		t.Fatal(err)
	}
	withMirror := fmt.Sprintf(base, e.labDir) + fmt.Sprintf(`nodePrep:
  repositories:
    - name: kubernetes
      uri: %s
      keyFile: %s
`, repo.URL, keyFile)
	if err := os.WriteFile(e.file, []byte(withMirror), 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := e.run("up")
	if err != nil {
		t.Fatalf("up: %v\n%s\n%s", err, out, stderr)
	}
	for _, machine := range []string{"e2e-cp-1", "e2e-worker-1"} {
		pid, err := e.lab().Leader(context.Background(), machine)
		if err != nil {
			t.Fatal(err)
		}
		got, err := exec.Command("nsenter", "-t", fmt.Sprint(pid), "-a", "sh", "-c",
			"dpkg-query -W -f '${Package}=${Version} ' kubelet kubeadm kubectl; apt-mark showhold | tr '\\n' ' '").CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v %s", machine, err, got)
		}
		want := "kubeadm=1.31.2-1.1 kubectl=1.31.2-1.1 kubelet=1.31.2-1.1 kubeadm kubectl kubelet "
		if string(got) != want {
			t.Fatalf("%s: packages and holds %q, want %q", machine, got, want)
		}
	}
	out, stderr, err = e.run("up", "-o", "json")
	if err != nil || strings.Contains(out, `"status":"changed"`) {
		t.Fatalf("second up changed something: %v\n%s\n%s", err, out, stderr)
	}
	e.downAndCheck()
}

// checkNoPins checks that down removed every host key kthw pinned in the
// workspace's known_hosts.
func checkNoPins(t *testing.T, ws string) {
	t.Helper()
	kh, err := os.ReadFile(filepath.Join(ws, "known_hosts"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	if len(bytes.TrimSpace(kh)) != 0 {
		t.Errorf("known_hosts after down:\n%s", kh)
	}
}
