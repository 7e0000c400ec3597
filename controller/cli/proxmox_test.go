package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pve "github.com/luthermonson/go-proxmox"

	"github.com/kthw/kthw/controller/config"
	"github.com/kthw/kthw/controller/provider/proxmox"
	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
	"github.com/kthw/kthw/controller/secret"
)

// proxmoxCLI runs the CLI against a Proxmox simulator with a cluster file
// for it; the token secret comes from PM_TOKEN in the CLI's environment.
type proxmoxCLI struct {
	t     *testing.T
	sim   *pvesim.Sim
	dir   string
	file  string
	token string
}

func newProxmoxCLI(t *testing.T, sim *pvesim.Sim, profile, extra string) *proxmoxCLI {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "cluster.yaml")
	cluster := fmt.Sprintf(`apiVersion: kthw.dev/v1alpha1
kind: Cluster
name: lab
profile: %s
provider:
  type: proxmox
  proxmox:
    endpoint: %s
    node: pve1
    tokenID: %s
    tokenSecretRef: env:PM_TOKEN
    caFile: %s
    taskTimeout: 30s
    bootTimeout: 30s
%s
nodes:
  - {name: cp, role: control-plane, count: 1}
  - {name: worker, role: worker, count: 1}
`, profile, strings.TrimSuffix(sim.URL, "/api2/json"), sim.TokenID, sim.CAFile, extra)
	if err := os.WriteFile(file, []byte(cluster), 0o644); err != nil {
		t.Fatal(err)
	}
	return &proxmoxCLI{t: t, sim: sim, dir: dir, file: file, token: sim.TokenSecret}
}

func (p *proxmoxCLI) run(args ...string) (string, string, error) {
	args = append(args, "-f", p.file)
	if args[0] != "template" && args[0] != "doctor" {
		args = append(args, "--workspace", filepath.Join(p.dir, "ws"), "--agent-binary", os.Args[0])
	}
	var stdout, stderr bytes.Buffer
	c := New("test", strings.NewReader(""), &stdout, &stderr)
	c.getenv = func(k string) string {
		if k == "PM_TOKEN" {
			return p.token
		}
		return ""
	}
	err := c.Run(context.Background(), args)
	return stdout.String(), stderr.String(), err
}

func TestProxmoxTemplateBuildCLI(t *testing.T) {
	sim := pvesim.Start(t)
	p := newProxmoxCLI(t, sim, "ubuntu", "")
	// The ubuntu image lacks the guest agent; one prepared with it is
	// uploaded and named (a bake needs a password login: the CLI says so
	// at once).
	uploadImage(t, sim, "noble-kthw.qcow2")
	if _, _, err := p.run("template", "build", "--vmid", "9100"); err == nil || !strings.Contains(err.Error(), "passwordRef") {
		t.Fatalf("bake with a token: %v", err)
	}
	out, stderr, err := p.run("template", "build", "--volume", "local:import/noble-kthw.qcow2", "--vmid", "9100", "--no-bake")
	if err != nil {
		t.Fatalf("template build: %v\n%s", err, stderr)
	}
	if !strings.Contains(out, "template kthw-ubuntu-24.04: created VMID 9100 on pve1") {
		t.Fatalf("stdout %q", out)
	}
	if vm, ok := sim.VM(9100); !ok || !vm.Template {
		t.Fatalf("VM 9100 %+v", vm)
	}
	out, _, err = p.run("template", "build", "--volume", "local:import/noble-kthw.qcow2", "--no-bake", "-o", "json")
	if err != nil || !strings.Contains(out, `"created":false`) || !strings.Contains(out, `"vmid":9100`) {
		t.Fatalf("second build: %v %q", err, out)
	}
	// Without a cluster file there is no Proxmox to build on.
	var stdout, stderrB bytes.Buffer
	if err := New("test", nil, &stdout, &stderrB).Run(context.Background(), []string{"template", "build", "--profile", "debian"}); err == nil ||
		!strings.Contains(err.Error(), "-f cluster.yaml") {
		t.Fatalf("without -f: %v", err)
	}
}

func TestProxmoxUpFailsCleanly(t *testing.T) {
	sim := pvesim.Start(t)
	// The debian template exists in the simulator; rocky's does not.
	p := newProxmoxCLI(t, sim, "rocky", "")
	_, stderr, err := p.run("up", "--no-node-prep")
	if err == nil || !strings.Contains(err.Error(), "kthw-rocky-9") || !strings.Contains(err.Error(), "template build --profile rocky") {
		t.Fatalf("up without a template: %v\n%s", err, stderr)
	}
	p2 := newProxmoxCLI(t, sim, "debian", "")
	p2.token = "wrong"
	if _, _, err := p2.run("up", "--no-node-prep"); err == nil || !strings.Contains(err.Error(), "not authorized") {
		t.Fatalf("up with a wrong token: %v", err)
	}
	for _, v := range sim.VMs() {
		if !v.Template {
			t.Fatalf("VM %d made by a failed up", v.VMID)
		}
	}
	if n := sim.CallCount("POST /nodes/{node}/qemu/{vmid}/clone"); n != 0 {
		t.Fatalf("%d clones", n)
	}
}

func TestProxmoxDoctorAndDown(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t)
	p := newProxmoxCLI(t, sim, "debian", "")
	out, stderr, err := p.run("doctor", "--agent-binary", os.Args[0])
	if err != nil {
		t.Fatalf("doctor: %v\n%s%s", err, out, stderr)
	}
	for _, want := range []string{"ok    proxmox api", "ok    proxmox node", "ok    proxmox template"} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}

	// VMs of the cluster, made by the provider as up would.
	cl, err := config.Load(p.file)
	if err != nil {
		t.Fatal(err)
	}
	cl.SetDefaults()
	prov, err := proxmox.New(cl, []byte(testPublicKey), proxmox.Options{
		RootCAs: sim.RootCAs, Secrets: secret.Resolver{Getenv: func(string) string { return sim.TokenSecret }},
	})
	if err != nil {
		t.Fatal(err)
	}
	specs, _ := cl.Nodes()
	for _, s := range specs {
		if _, err := prov.Ensure(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if _, stderr, err := p.run("down", "--yes"); err != nil {
		t.Fatalf("down: %v\n%s", err, stderr)
	}
	for _, v := range sim.VMs() {
		if !v.Template {
			t.Fatalf("VM %d (%s) left by down", v.VMID, v.Config["name"])
		}
	}
}

// uploadImage puts a disk image on the simulator's import storage, as an
// operator would (here through download-url).
func uploadImage(t *testing.T, sim *pvesim.Sim, file string) {
	t.Helper()
	ctx := context.Background()
	c := pve.NewClient(sim.URL, pve.WithHTTPClient(sim.HTTPClient()), pve.WithAPIToken(sim.TokenID, sim.TokenSecret))
	n := new(pve.Node).New(c, "pve1")
	upid, err := n.StorageDownloadURL(ctx, &pve.StorageDownloadURLOptions{Storage: "local", Content: "import", Filename: file, URL: "https://images.example/" + file})
	if err != nil {
		t.Fatal(err)
	}
	if err := pve.NewTask(pve.UPID(upid), c).Wait(ctx, 10*time.Millisecond, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

const testPublicKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG9yJc1Wvv0cX0rBa9dXn9cFp7XEjyd5PjlqH6Qv5Dx0 test"
