package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kthw/kthw/controller/internal/agentbuild"
	"github.com/kthw/kthw/controller/lab"
	"github.com/kthw/kthw/controller/provider/proxmox/pvelab"
	"github.com/kthw/kthw/controller/provider/proxmox/pvelab/pvelabtest"
	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
)

// A cluster whose template does not exist yet: template build makes it from Debian's cloud
// image, which has no guest agent. A password login: the bake reads the builder VM's serial
// console, which Proxmox's termproxy does not open for API tokens.
const proxmoxBakeCluster = `apiVersion: kthw.dev/v1alpha1
kind: Cluster
name: pxbake
profile: debian
provider:
  type: proxmox
  proxmox:
    endpoint: %s
    node: pve1
    username: %s
    passwordRef: env:PM_PASSWORD
    caFile: %s
    taskTimeout: 2m
    bootTimeout: 2m
network:
  nodeCIDR: ` + pvelabtest.NodeCIDR + `
nodePrep:
  kubernetesPackages: false
nodes:
  - {name: cp, role: control-plane, count: 1}
  - {name: worker, role: worker, count: 1}
`

// TestE2EProxmoxLabTemplateBake: template build --profile debian through the lab-backed
// simulator with an image without the guest agent: the builder VM boots as a lab node, its
// host key is read from its serial console and pinned, kthw's agent installs Debian's
// qemu-guest-agent from the mirror and cleans the image; the template exists, is a template
// and keeps no one-boot settings. up clones nodes from it whose guest agents answer only
// because the bake installed qemu-ga (their disks come from the image without it), and pins
// their host keys through them; down leaves only the template.
func TestE2EProxmoxLabTemplateBake(t *testing.T) {
	pvelabtest.Skip(t)
	const image = "debian-12-genericcloud-amd64.qcow2"
	env := pvelabtest.Start(t, pvesim.WithConfig(func(c *pvesim.Config) {
		c.Templates = nil
		c.ImportImages = []pvesim.ImportImage{{File: image}} // no qemu-guest-agent
		c.ConsoleDelay = 3 * time.Second
		c.AgentDelay = 500 * time.Millisecond
	}))
	env.AfterTeardown(func() { checkLabGone(t, env.LabDir) })
	dir := t.TempDir()
	file, ws := filepath.Join(dir, "cluster.yaml"), filepath.Join(dir, "ws")
	yaml := fmt.Sprintf(proxmoxBakeCluster, strings.TrimSuffix(env.Sim.URL, "/api2/json"), env.Sim.Username, env.Sim.CAFile)
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(agentbuild.Cleanup)
	agent := agentbuild.Build(t, agentbuild.Variant{Version: "e2e"})
	run := func(args ...string) (string, string, error) {
		args = append(args, "-f", file, "--workspace", ws, "--agent-binary", agent)
		var stdout, stderr bytes.Buffer
		c := New("e2e", strings.NewReader(""), &stdout, &stderr)
		c.getenv = func(k string) string {
			if k == "PM_PASSWORD" {
				return env.Sim.Password
			}
			return ""
		}
		err := c.Run(context.Background(), args)
		return stdout.String(), stderr.String(), err
	}
	ctx := context.Background()

	env.Sim.ResetCalls()
	start := time.Now()
	out, stderr, err := run("template", "build", "--vmid", "9000", "-o", "json")
	took := time.Since(start)
	if err != nil {
		t.Fatalf("template build: %v\n%s\n%s", err, out, stderr)
	}
	calls := 0
	for _, n := range env.Sim.Calls() {
		calls += n
	}
	t.Logf("template build with the bake took %s, %d API calls (termproxy %d, vncwebsocket %d)", took.Round(10*time.Millisecond), calls,
		env.Sim.CallCount("POST /nodes/{node}/qemu/{vmid}/termproxy"), env.Sim.CallCount("GET /nodes/{node}/qemu/{vmid}/vncwebsocket"))
	var res struct {
		Name    string `json:"name"`
		VMID    int    `json:"vmid"`
		Created bool   `json:"created"`
		Baked   bool   `json:"baked"`
	}
	if err := json.Unmarshal([]byte(lastLine(out)), &res); err != nil || !res.Created || !res.Baked || res.VMID != 9000 || res.Name != "kthw-debian-12" {
		t.Fatalf("template build result %q: %+v %v", out, res, err)
	}
	tmpl, ok := env.Sim.VM(9000)
	if !ok || !tmpl.Template || tmpl.Running {
		t.Fatalf("template %+v", tmpl)
	}
	for _, k := range []string{"ciuser", "sshkeys", "ipconfig0", "nameserver", "searchdomain"} {
		if v, ok := tmpl.Config[k]; ok {
			t.Errorf("template keeps %s=%q", k, v)
		}
	}
	// The builder's disk (its lab node's own layer) has the guest agent, and none of the
	// builder's identity: host keys, machine-id, the build key, kthw's agent.
	node, err := env.Lab.Status(ctx, env.Backend.Machine(9000))
	if err != nil || node.State != lab.StateStopped {
		t.Fatalf("builder node %+v %v", node, err)
	}
	if _, err := os.Stat(filepath.Join(node.Upper, pvelab.GuestAgentPath)); err != nil {
		t.Errorf("qemu-ga not installed on the template's disk: %v", err)
	}
	keys, _ := filepath.Glob(filepath.Join(node.Upper, "etc/ssh/ssh_host_*"))
	for _, k := range keys {
		if fi, err := os.Lstat(k); err == nil && fi.Mode().IsRegular() {
			t.Errorf("host key left on the template's disk: %s", k)
		}
	}
	if b, err := os.ReadFile(filepath.Join(node.Upper, "etc/machine-id")); err == nil && len(b) != 0 {
		t.Errorf("machine-id left: %q", b)
	}
	if _, err := os.Stat(filepath.Join(node.Upper, "home/kthw/.ssh/authorized_keys")); err == nil {
		t.Error("the build user's key is left on the template's disk")
	}
	if _, err := os.Stat(filepath.Join(node.Upper, "var/lib/kthw/agent")); err == nil {
		t.Error("kthw's agent is left on the template's disk")
	}
	if kh, _ := os.ReadFile(filepath.Join(ws, "known_hosts")); len(bytes.TrimSpace(kh)) != 0 {
		t.Errorf("the builder's key stays pinned:\n%s", kh)
	}

	// A second build finds the template.
	if out, _, err := run("template", "build", "-o", "json"); err != nil || !strings.Contains(out, `"created":false`) {
		t.Fatalf("second build: %v %s", err, out)
	}

	// up clones from it; each clone's agent answers because qemu-ga is on the template's disk.
	start = time.Now()
	out, stderr, err = run("up", "--no-node-prep")
	if err != nil {
		t.Fatalf("up: %v\n%s\n%s", err, out, stderr)
	}
	t.Logf("up --no-node-prep (2 VMs cloned from the baked template) took %s", time.Since(start).Round(10*time.Millisecond))
	kh, err := os.ReadFile(filepath.Join(ws, "known_hosts"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, v := range env.Sim.VMs() {
		if v.Template {
			continue
		}
		n++
		if !v.Running || v.Guest.NoGuestAgent {
			t.Errorf("VM %d: running=%v guest %+v", v.VMID, v.Running, v.Guest)
		}
		info, err := env.Lab.Status(ctx, env.Backend.Machine(v.VMID))
		if err != nil || len(info.Layers) != 1 || info.Layers[0] != node.Upper {
			t.Errorf("VM %d's node %+v %v: want the template's disk as its layer", v.VMID, info, err)
		}
		key := strings.Fields(v.Guest.Files[pvesim.HostKeyFile])
		if len(key) < 2 || !strings.Contains(string(kh), key[0]+" "+key[1]) {
			t.Errorf("VM %d's host key %q not pinned:\n%s", v.VMID, key, kh)
		}
		if strings.Contains(string(kh), strings.Fields(tmpl.Config["name"])[0]) {
			t.Errorf("known_hosts names the template")
		}
	}
	if n != 2 {
		t.Fatalf("%d VMs, want 2", n)
	}
	st, stderr, err := run("status", "-o", "json")
	var cs clusterStatus
	if jerr := json.Unmarshal([]byte(st), &cs); err != nil || jerr != nil || len(cs.Nodes) != 2 {
		t.Fatalf("status: %v %v %s %s", err, jerr, st, stderr)
	}
	for _, nd := range cs.Nodes {
		if !nd.OK || nd.Facts.Hostname != nd.Name {
			t.Errorf("node %+v", nd)
		}
	}

	if _, stderr, err := run("down", "--yes"); err != nil {
		t.Fatalf("down: %v\n%s", err, stderr)
	}
	for _, v := range env.Sim.VMs() {
		if !v.Template {
			t.Errorf("VM %d left by down", v.VMID)
		}
	}
	nodes, _ := env.Lab.List(ctx)
	if len(nodes) != 1 || nodes[0].Name != env.Backend.Machine(9000) || nodes[0].State != lab.StateStopped {
		t.Errorf("lab nodes after down (want the template's disk only): %+v", nodes)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
