package proxmox

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/kthw/kthw/controller/provider"
	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
)

func TestRecipesLoad(t *testing.T) {
	for _, p := range []string{"debian", "ubuntu", "suse", "rocky"} {
		r, err := LoadRecipe(nil, p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if r.Profile != p || r.Image.File == "" || r.OSType != "l26" {
			t.Errorf("%s: %+v", p, r)
		}
	}
	if _, err := LoadRecipe(nil, "gentoo"); err == nil || !strings.Contains(err.Error(), "no Proxmox template recipe") {
		t.Fatalf("unknown profile: %v", err)
	}
	bad := fstest.MapFS{"debian.yaml": {Data: []byte("profile: ubuntu\nimage: {file: x.iso, url: ftp://x}\nostype: linux\ncores: 0\nmemoryMiB: 1\n")}}
	_, err := LoadRecipe(bad, "debian")
	for _, want := range []string{"profile:", "image.file", "image.url", "bake", "ostype", "cores", "memoryMiB"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("bad recipe error %v does not name %s", err, want)
		}
	}
	unknown := fstest.MapFS{"debian.yaml": {Data: []byte("profile: debian\nsurprise: 1\n")}}
	if _, err := LoadRecipe(unknown, "debian"); err == nil {
		t.Fatal("unknown field accepted")
	}
}

func buildEnv(t *testing.T, sim *pvesim.Sim, profile string) *simEnv {
	t.Helper()
	c := simCluster(t, sim)
	c.Profile = profile
	return newSimProvider(t, c, sim, "")
}

func TestBuildTemplateAndUseIt(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t)
	e := buildEnv(t, sim, "rocky")
	r, err := LoadRecipe(nil, "rocky")
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.p.BuildTemplate(ctx, r, BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Created || !res.Downloaded || res.Name != "kthw-rocky-9" || res.Volume != "local:import/"+r.Image.File {
		t.Fatalf("result %+v", res)
	}
	vm, ok := sim.VM(res.VMID)
	if !ok || !vm.Template {
		t.Fatalf("VM %d: %+v", res.VMID, vm)
	}
	for k, want := range map[string]string{
		"name": "kthw-rocky-9", "ostype": "l26", "agent": "enabled=1", "scsihw": "virtio-scsi-single",
		"serial0": "socket", "vga": "serial0", "boot": "order=scsi0", "tags": "kthw-template;rocky",
	} {
		if vm.Config[k] != want {
			t.Errorf("template %s = %q, want %q", k, vm.Config[k], want)
		}
	}
	if !strings.Contains(vm.Config["ide2"], "cloudinit") || !strings.HasPrefix(vm.Config["scsi0"], "local-lvm:base-") ||
		!strings.Contains(vm.Config["net0"], "bridge=vmbr0") {
		t.Errorf("template drives: scsi0 %q ide2 %q net0 %q", vm.Config["scsi0"], vm.Config["ide2"], vm.Config["net0"])
	}

	// Nodes clone from it.
	if err := e.p.Prepare(ctx, e.specs); err != nil {
		t.Fatal(err)
	}
	if e.p.tmpl.ref.id != res.VMID {
		t.Fatalf("clones from %+v, built %d", e.p.tmpl, res.VMID)
	}
	n, err := e.p.Ensure(ctx, e.spec(t, "cp-1"))
	if err != nil || n.State != provider.StateRunning {
		t.Fatalf("Ensure from the built template: %+v, %v", n, err)
	}

	// A second build finds it.
	again, err := e.p.BuildTemplate(ctx, r, BuildOptions{})
	if err != nil || again.Created || again.VMID != res.VMID {
		t.Fatalf("second build %+v, %v", again, err)
	}
}

func TestBuildTemplateCleansUp(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t, pvesim.WithFaults(pvesim.Faults{TaskFailures: map[string]int{"qmtemplate": 1}, TaskFailureText: "converting failed"}))
	e := buildEnv(t, sim, "rocky")
	r, _ := LoadRecipe(nil, "rocky")
	_, err := e.p.BuildTemplate(ctx, r, BuildOptions{VMID: 9100})
	var te *TaskError
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "converting failed") {
		t.Fatalf("err %v", err)
	}
	if _, ok := sim.VM(9100); ok {
		t.Fatal("the half-built VM was left")
	}
	// A killed build's leftover (not a template yet) is rebuilt.
	if err := sim.AddVM(9200, "pve1", map[string]string{"name": "kthw-rocky-9", "description": templateDescription("kthw-rocky-9", "rocky", "x")}); err != nil {
		t.Fatal(err)
	}
	res, err := e.p.BuildTemplate(ctx, r, BuildOptions{})
	if err != nil || !res.Created {
		t.Fatalf("rebuild %+v, %v", res, err)
	}
	if _, ok := sim.VM(9200); ok {
		t.Fatal("the leftover stayed")
	}
	// Someone else's VM of that name is not touched.
	sim2 := pvesim.Start(t)
	if err := sim2.AddVM(300, "pve1", map[string]string{"name": "kthw-rocky-9"}); err != nil {
		t.Fatal(err)
	}
	e2 := buildEnv(t, sim2, "rocky")
	if _, err := e2.p.BuildTemplate(ctx, r, BuildOptions{}); err == nil || !strings.Contains(err.Error(), "not a template") {
		t.Fatalf("err %v", err)
	}
	if _, ok := sim2.VM(300); !ok {
		t.Fatal("someone else's VM was removed")
	}
}

// TestBuildTemplateBadVMID: a VMID out of Proxmox's range, or taken, is
// refused before the image is downloaded or anything is made.
func TestBuildTemplateBadVMID(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t)
	e := buildEnv(t, sim, "rocky") // its image is downloaded
	r, err := LoadRecipe(nil, "rocky")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []int{-1, 99, maxVMID + 1} {
		if _, err := e.p.BuildTemplate(ctx, r, BuildOptions{VMID: id}); err == nil || !strings.Contains(err.Error(), "outside Proxmox's range") {
			t.Errorf("VMID %d: %v", id, err)
		}
	}
	if _, err := e.p.BuildTemplate(ctx, r, BuildOptions{VMID: pvesim.TestTemplateID}); err == nil || !strings.Contains(err.Error(), "is taken") {
		t.Errorf("a taken VMID: %v", err)
	}
	for _, call := range []string{"POST /nodes/{node}/storage/{storage}/download-url", "POST /nodes/{node}/qemu"} {
		if n := sim.CallCount(call); n != 0 {
			t.Errorf("%s called %d times", call, n)
		}
	}
}
