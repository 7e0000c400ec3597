package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/kthw/kthw/controller/internal/agentbuild"
	"github.com/kthw/kthw/controller/lab"
	"github.com/kthw/kthw/controller/provider/proxmox/pvelab/pvelabtest"
	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
)

// The Proxmox e2e tests run the CLI with the proxmox provider against the simulator
// (in-process) whose VMs are real lab nodes (pvelabtest: bridge kthwpx0, 10.200.88.0/24, apt
// proxy port 3188): up of 1 control plane and 2 workers, status, down; and a controller killed
// in the middle of cloning, then re-run.
const proxmoxLabCluster = `apiVersion: kthw.dev/v1alpha1
kind: Cluster
name: pxe2e
profile: debian
provider:
  type: proxmox
  proxmox:
    endpoint: %s
    node: pve1
    tokenID: %s
    tokenSecretRef: env:PM_TOKEN
    caFile: %s
    taskTimeout: 2m
    bootTimeout: 2m
network:
  nodeCIDR: ` + pvelabtest.NodeCIDR + `
nodePrep:
  # pkgs.k8s.io is not reachable from the test machine.
  kubernetesPackages: false
nodes:
  - {name: cp, role: control-plane, count: 1}
  - {name: worker, role: worker, count: 2}
`

type proxmoxLabE2E struct {
	t     *testing.T
	env   *pvelabtest.Env
	dir   string
	file  string
	ws    string
	agent string
}

// newProxmoxLabE2E starts the simulator backed by lab nodes and writes the cluster file. The
// checks that nothing is left run last, after the simulator stopped and the lab was torn down.
func newProxmoxLabE2E(t *testing.T, opts ...pvesim.Option) *proxmoxLabE2E {
	pvelabtest.Skip(t)
	env := pvelabtest.Start(t, opts...)
	env.AfterTeardown(func() { checkLabGone(t, env.LabDir) })
	dir := t.TempDir()
	e := &proxmoxLabE2E{t: t, env: env, dir: dir, file: filepath.Join(dir, "cluster.yaml"), ws: filepath.Join(dir, "ws")}
	yaml := fmt.Sprintf(proxmoxLabCluster, strings.TrimSuffix(env.Sim.URL, "/api2/json"), env.Sim.TokenID, env.Sim.CAFile)
	if err := os.WriteFile(e.file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(agentbuild.Cleanup)
	e.agent = agentbuild.Build(t, agentbuild.Variant{Version: "e2e"})
	return e
}

// run runs the CLI in-process with PM_TOKEN set to the simulator's token secret.
func (e *proxmoxLabE2E) run(args ...string) (string, string, error) {
	args = append(args, "-f", e.file, "--workspace", e.ws, "--agent-binary", e.agent)
	var stdout, stderr bytes.Buffer
	c := New("e2e", strings.NewReader(""), &stdout, &stderr)
	c.getenv = func(k string) string {
		if k == "PM_TOKEN" {
			return e.env.Sim.TokenSecret
		}
		return ""
	}
	err := c.Run(context.Background(), args)
	return stdout.String(), stderr.String(), err
}

func (e *proxmoxLabE2E) status() (clusterStatus, string, error) {
	out, stderr, err := e.run("status", "-o", "json")
	var st clusterStatus
	if jerr := json.Unmarshal([]byte(out), &st); jerr != nil {
		e.t.Fatalf("status json %q: %v (stderr %s)", out, jerr, stderr)
	}
	return st, stderr, err
}

// checkUp checks the cluster after up: the simulator has exactly the three named VMs (plus
// the template), running, tagged, each on its own lab node; the agents answer; every node's
// host key is pinned in known_hosts and is the one the guest agent reads.
func (e *proxmoxLabE2E) checkUp() {
	t := e.t
	ctx := context.Background()
	var names []string
	hostKeys := map[string]string{}
	for _, v := range e.env.Sim.VMs() {
		if v.Template {
			continue
		}
		name := v.Config["name"]
		names = append(names, name)
		if !v.Running || v.Lock != "" || !strings.Contains(v.Config["tags"], "pxe2e") {
			t.Errorf("VM %d (%s): running=%v lock=%q tags=%q", v.VMID, name, v.Running, v.Lock, v.Config["tags"])
		}
		hostKeys[v.Config["ipconfig0"]] = v.Guest.Files[pvesim.HostKeyFile]
		info, err := e.env.Lab.Status(ctx, e.env.Backend.Machine(v.VMID))
		if err != nil || info.State != lab.StateRunning || info.Hostname != name {
			t.Errorf("VM %d (%s): lab node %+v %v", v.VMID, name, info, err)
		}
	}
	slices.Sort(names)
	if got := strings.Join(names, ","); got != "cp-1,worker-1,worker-2" {
		t.Fatalf("simulator VMs: %s (want cp-1, worker-1, worker-2 once each)", got)
	}
	if n := len(e.env.Sim.VMs()); n != 4 {
		t.Fatalf("%d VMs in the simulator, want 3 and the template", n)
	}
	nodes, err := e.env.Lab.List(ctx)
	if err != nil || len(nodes) != 3 {
		t.Fatalf("lab nodes %+v %v", nodes, err)
	}
	if n := countNspawn(t, e.env.LabDir); n != 3 {
		t.Fatalf("%d systemd-nspawn processes for the lab, want 3", n)
	}

	st, stderr, err := e.status()
	if err != nil || len(st.Nodes) != 3 {
		t.Fatalf("status: %v %+v %s", err, st, stderr)
	}
	for _, n := range st.Nodes {
		if !n.OK || n.State != "running" || n.Facts.OS != "debian" || n.Facts.Hostname != n.Name || !n.Facts.Systemd {
			t.Fatalf("node %+v", n)
		}
	}

	// Pinned out of band: known_hosts holds exactly the keys the guest agents read.
	kh, err := os.ReadFile(filepath.Join(e.ws, "known_hosts"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(kh)), "\n")
	if len(lines) != 3 {
		t.Fatalf("known_hosts:\n%s", kh)
	}
	for ipc, content := range hostKeys {
		addr := strings.TrimPrefix(strings.Split(strings.Split(ipc, ",")[0], "/")[0], "ip=")
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(content))
		if err != nil {
			t.Fatalf("host key of %s %q: %v", addr, content, err)
		}
		want := addr + " " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
		if !slices.Contains(lines, want) {
			t.Errorf("known_hosts lacks %q:\n%s", want, kh)
		}
	}
}

// downAndCheck runs down and checks the simulator has only the template and the lab no node.
func (e *proxmoxLabE2E) downAndCheck() {
	t := e.t
	start := time.Now()
	if _, stderr, err := e.run("down", "--yes"); err != nil {
		t.Fatalf("down: %v\n%s", err, stderr)
	}
	t.Logf("down (3 VMs) took %s", time.Since(start).Round(10*time.Millisecond))
	for _, v := range e.env.Sim.VMs() {
		if !v.Template {
			t.Errorf("VM %d (%s) left by down", v.VMID, v.Config["name"])
		}
	}
	if len(e.env.Sim.VMs()) != 1 {
		t.Errorf("simulator VMs after down: %+v", e.env.Sim.VMs())
	}
	if nodes, err := e.env.Lab.List(context.Background()); err != nil || len(nodes) != 0 {
		t.Fatalf("lab nodes after down: %+v %v", nodes, err)
	}
	checkNodesGone(t, e.env.LabDir)
	checkNoPins(t, e.ws)
	st, _, _ := e.status()
	for _, n := range st.Nodes {
		if n.State != "missing" {
			t.Errorf("after down, node %s is %s", n.Name, n.State)
		}
	}
}

// checkNodesGone checks no lab node of dir left a mount, a process or a link.
func checkNodesGone(t *testing.T, dir string) {
	t.Helper()
	if mounts, err := lab.MountsUnder(dir); err != nil || len(mounts) != 0 {
		t.Errorf("mounts left under %s: %v %v", dir, mounts, err)
	}
	if n := countNspawn(t, dir); n != 0 {
		t.Errorf("%d systemd-nspawn processes left", n)
	}
	links, _ := exec.Command("ip", "-o", "link").Output()
	for _, l := range strings.Split(string(links), "\n") {
		if strings.Contains(l, "vb-"+pvelabtest.Prefix) {
			t.Errorf("link left: %s", l)
		}
	}
}

// checkLabGone checks, after the test's teardown, that the lab left nothing: no node, mount,
// process, link, bridge or apt proxy.
func checkLabGone(t *testing.T, dir string) {
	t.Helper()
	checkNodesGone(t, dir)
	links, _ := exec.Command("ip", "-o", "link").Output()
	if strings.Contains(string(links), pvelabtest.Bridge+":") || strings.Contains(string(links), pvelabtest.Bridge+"@") {
		t.Errorf("bridge %s left", pvelabtest.Bridge)
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), dir) {
			t.Errorf("process %s left: %s", e.Name(), strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
}

// TestE2EProxmoxLabUpStatusDown: up through the simulator with realistic task durations, VMs
// booted as lab nodes from their cloud-init settings; the agents answer, host keys pinned
// without --accept-new; node preparation on top (as the cloud-init user, through sudo); a
// re-run changes nothing; down leaves only the template.
func TestE2EProxmoxLabUpStatusDown(t *testing.T) {
	e := newProxmoxLabE2E(t, pvesim.WithConfig(func(c *pvesim.Config) {
		c.TaskDurations = pvesim.DefaultTaskDurations()
		c.AgentDelay = time.Second
	}))
	// Provisioning alone first (clone, configure, start, guest agent, host key, agent push),
	// then node preparation.
	start := time.Now()
	out, stderr, err := e.run("up", "--no-node-prep")
	if err != nil {
		t.Fatalf("up --no-node-prep: %v\n%s\n%s", err, out, stderr)
	}
	t.Logf("up --no-node-prep (3 VMs through the simulator as lab nodes) took %s\n%s", time.Since(start).Round(10*time.Millisecond), out)
	e.checkUp()
	clones := e.env.Sim.CallCount("POST /nodes/{node}/qemu/{vmid}/clone")
	if clones != 3 {
		t.Errorf("%d clone requests, want 3", clones)
	}
	start = time.Now()
	out, stderr, err = e.run("up")
	if err != nil {
		t.Fatalf("up: %v\n%s\n%s", err, out, stderr)
	}
	t.Logf("up with node preparation took %s", time.Since(start).Round(10*time.Millisecond))

	start = time.Now()
	out, _, err = e.run("up", "-o", "json")
	if err != nil {
		t.Fatalf("second up: %v\n%s", err, out)
	}
	t.Logf("no-op up took %s", time.Since(start).Round(10*time.Millisecond))
	if strings.Contains(out, "pushed") || strings.Contains(out, `"status":"changed"`) || e.env.Sim.CallCount("POST /nodes/{node}/qemu/{vmid}/clone") != clones {
		t.Fatalf("no-op up changed something:\n%s", out)
	}
	e.downAndCheck()
}

// TestE2EProxmoxLabKilledDuringClone: a controller SIGKILLed while the simulator clones (slow
// clone tasks) leaves VMs half-made; the next up finishes them — no duplicate, no orphan — and
// down removes everything.
func TestE2EProxmoxLabKilledDuringClone(t *testing.T) {
	e := newProxmoxLabE2E(t, pvesim.WithConfig(func(c *pvesim.Config) {
		c.TaskDurations = pvesim.DefaultTaskDurations()
		c.TaskDurations["qmclone"] = 4 * time.Second
		c.AgentDelay = 500 * time.Millisecond
	}))
	ctl := agentbuild.Controller(t)

	cmd := exec.Command(ctl, "up", "--no-node-prep", "-o", "json", "--log-level", "info", "-f", e.file, "--workspace", e.ws)
	cmd.Env = append(os.Environ(), "PM_TOKEN="+e.env.Sim.TokenSecret)
	var childOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &childOut, &childOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	cloning := func() bool {
		for _, tk := range e.env.Sim.Tasks() {
			if tk.Type == "qmclone" && tk.Running {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(2 * time.Minute)
	for !cloning() {
		select {
		case err := <-exited:
			t.Fatalf("up ended before cloning: %v\n%s", err, childOut.String())
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no clone started in 2m:\n%s", childOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second) // mid-clone: the clone tasks run 4s
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	var locked, made []string
	for _, v := range e.env.Sim.VMs() {
		if !v.Template {
			made = append(made, fmt.Sprint(v.VMID))
			if v.Lock == "clone" {
				locked = append(locked, fmt.Sprint(v.VMID))
			}
		}
	}
	if len(locked) == 0 {
		t.Fatalf("no clone under way when the controller was killed (VMs %v):\n%s", made, childOut.String())
	}
	t.Logf("killed with VMs %v made, %v still cloning", made, locked)
	t.Logf("killed controller's output:\n%s", childOut.String())

	start := time.Now()
	out, stderr, err := e.run("up", "--log-level", "info")
	t.Logf("re-run stderr:\n%s", stderr)
	if err != nil {
		t.Fatalf("up after kill: %v\n%s\n%s", err, out, stderr)
	}
	t.Logf("up after the kill took %s\n%s", time.Since(start).Round(10*time.Millisecond), out)
	e.checkUp()
	t.Logf("%d clone requests over both runs", e.env.Sim.CallCount("POST /nodes/{node}/qemu/{vmid}/clone"))
	e.downAndCheck()
}
