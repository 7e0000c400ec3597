package proxmox

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
)

// nothingMade fails the test if the simulator has any VM but templates
// (and foreign ones). A clone made and removed again passes; noClone checks
// that none was asked for.
func nothingMade(t *testing.T, sim *pvesim.Sim) {
	t.Helper()
	if vms := kthwVMs(sim); len(vms) != 0 {
		t.Fatalf("VMs left: %v", vms)
	}
}

// noClone fails the test if any clone was requested.
func noClone(t *testing.T, sim *pvesim.Sim) {
	t.Helper()
	if n := sim.CallCount("POST /nodes/{node}/qemu/{vmid}/clone"); n != 0 {
		t.Fatalf("%d clones requested", n)
	}
}

func TestWrongToken(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t)
	e := newSimProvider(t, simCluster(t, sim), sim, "00000000-0000-0000-0000-000000000000")
	err := e.p.Prepare(ctx, e.specs)
	if !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("Prepare: %v; want ErrNotAuthorized", err)
	}
	if strings.Contains(err.Error(), "00000000-0000") || strings.Contains(err.Error(), sim.TokenSecret) {
		t.Fatalf("the error shows a secret: %v", err)
	}
	if !strings.Contains(err.Error(), sim.TokenID) {
		t.Fatalf("the error does not name the token: %v", err)
	}
	if _, err := e.p.Ensure(ctx, e.spec(t, "cp-1")); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("Ensure: %v", err)
	}
	noClone(t, sim)
	nothingMade(t, sim)
}

func TestSecretUnset(t *testing.T) {
	sim := pvesim.Start(t)
	c := simCluster(t, sim)
	c.Provider.Proxmox.TokenSecretRef = "env:NOT_SET_ANYWHERE"
	e := newSimProvider(t, c, sim, "")
	err := e.p.Prepare(context.Background(), e.specs)
	if err == nil || !strings.Contains(err.Error(), "NOT_SET_ANYWHERE") || !strings.Contains(err.Error(), "tokenSecretRef") {
		t.Fatalf("err %v; want it to name the variable and the field", err)
	}
	if sim.CallCount("GET /version") != 0 {
		t.Fatal("asked the API without a secret")
	}
}

func TestPasswordLogin(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t)
	c := simCluster(t, sim)
	passwordLogin(t, c, sim, "env:PM_PASSWORD")
	e := newSimProvider(t, c, sim, "")
	if _, err := e.p.Ensure(ctx, e.spec(t, "cp-1")); err != nil {
		t.Fatal(err)
	}
	if n := sim.CallCount("POST /access/ticket"); n != 1 {
		t.Fatalf("%d logins; want one", n)
	}

	// A wrong password is refused with a clear error.
	sim2 := pvesim.Start(t)
	c2 := simCluster(t, sim2)
	passwordLogin(t, c2, sim2, "env:PM_TOKEN") // resolves to "wrong"
	e2 := newSimProvider(t, c2, sim2, "wrong")
	if err := e2.p.Prepare(ctx, e2.specs); !errors.Is(err, ErrNotAuthorized) || !strings.Contains(err.Error(), sim2.Username) {
		t.Fatalf("err %v; want ErrNotAuthorized naming the user", err)
	}
}

func TestMissingTemplate(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t)
	c := simCluster(t, sim)
	c.Provider.Proxmox.Template = "kthw-nothing-1"
	e := newSimProvider(t, c, sim, "")
	err := e.p.Prepare(ctx, e.specs)
	if !errors.Is(err, ErrTemplateMissing) {
		t.Fatalf("Prepare: %v; want ErrTemplateMissing", err)
	}
	for _, want := range []string{"kthw-nothing-1", "kthw-controller template build --profile debian"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// Ensure says the same and makes nothing.
	if _, err := e.p.Ensure(ctx, e.spec(t, "cp-1")); !errors.Is(err, ErrTemplateMissing) {
		t.Fatalf("Ensure: %v", err)
	}
	noClone(t, sim)
	nothingMade(t, sim)
}

func TestTemplateFoundByTag(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t, pvesim.WithTemplate(pvesim.TemplateSpec{VMID: 9100, Name: "golden-image", Tags: "kthw-ubuntu-24.04"}))
	c := simCluster(t, sim)
	c.Profile = "ubuntu"
	e := newSimProvider(t, c, sim, "")
	if err := e.p.Prepare(ctx, e.specs); err != nil {
		t.Fatal(err)
	}
	if e.p.tmpl.ref.id != 9100 {
		t.Fatalf("template %+v", e.p.tmpl)
	}
}

func TestTemplateWithoutCloudInit(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t, pvesim.WithTemplate(pvesim.TemplateSpec{VMID: 9001, Name: "bare", NoCloudInit: true}),
		pvesim.WithTemplate(pvesim.TemplateSpec{VMID: 9002, Name: "noagent", NoAgent: true}))
	for _, tt := range []struct{ name, want string }{{"bare", "no cloud-init drive"}, {"noagent", "guest agent off"}} {
		c := simCluster(t, sim)
		c.Provider.Proxmox.Template = tt.name
		e := newSimProvider(t, c, sim, "")
		err := e.p.Prepare(ctx, e.specs)
		if !errors.Is(err, ErrTemplateUnfit) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), tt.name) {
			t.Fatalf("%s: %v; want ErrTemplateUnfit saying %q", tt.name, err, tt.want)
		}
		if _, err := e.p.Ensure(ctx, e.spec(t, "cp-1")); !errors.Is(err, ErrTemplateUnfit) {
			t.Fatalf("Ensure: %v", err)
		}
	}
	noClone(t, sim)
	nothingMade(t, sim)
}

func TestUnknownNode(t *testing.T) {
	sim := pvesim.Start(t)
	c := simCluster(t, sim)
	c.Provider.Proxmox.Node = "pve1-example-net"
	e := newSimProvider(t, c, sim, "")
	err := e.p.Prepare(context.Background(), e.specs)
	if !errors.Is(err, ErrNodeUnknown) || !strings.Contains(err.Error(), "pve1") || !strings.Contains(err.Error(), "FQDN") {
		t.Fatalf("err %v; want ErrNodeUnknown listing pve1", err)
	}
}

func TestForbiddenClone(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t, pvesim.WithFaults(pvesim.Faults{Forbidden: []pvesim.ForbidRule{{Method: "POST", Path: "/nodes/pve1/qemu/9000/clone"}}}))
	e := newSimProvider(t, simCluster(t, sim), sim, "")
	_, err := e.p.Ensure(ctx, e.spec(t, "cp-1"))
	if !errors.Is(err, ErrNotAuthorized) || !strings.Contains(err.Error(), "privilege") {
		t.Fatalf("err %v; want ErrNotAuthorized about privileges", err)
	}
	if e.ids.get("cp-1") != "" {
		t.Fatalf("a VMID stays recorded for a clone that never happened: %s", e.ids.get("cp-1"))
	}
	nothingMade(t, sim)
}

func TestConfigureFailureLeavesNothing(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t, pvesim.WithFaults(pvesim.Faults{TaskFailures: map[string]int{"qmconfig": 1}, TaskFailureText: "cannot update VM: disk full"}))
	e := newSimProvider(t, simCluster(t, sim), sim, "")
	_, err := e.p.Ensure(ctx, e.spec(t, "cp-1"))
	var te *TaskError
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("err %v; want the config task's failure", err)
	}
	nothingMade(t, sim)
	if e.ids.get("cp-1") != "" {
		t.Fatalf("VMID %s still recorded", e.ids.get("cp-1"))
	}
	// The next run starts afresh and succeeds.
	if _, err := e.p.Ensure(ctx, e.spec(t, "cp-1")); err != nil {
		t.Fatal(err)
	}
	if len(kthwVMs(sim)["cp-1"]) != 1 {
		t.Fatal("no VM after the retry")
	}
}

func TestStartFailureLeavesRecordedVM(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t, pvesim.WithFaults(pvesim.Faults{TaskFailures: map[string]int{"qmstart": 1}, TaskFailureText: "start failed: QEMU exited with code 1"}))
	e := newSimProvider(t, simCluster(t, sim), sim, "")
	if _, err := e.p.Ensure(ctx, e.spec(t, "cp-1")); err == nil || !strings.Contains(err.Error(), "QEMU exited") {
		t.Fatalf("err %v", err)
	}
	vms := kthwVMs(sim)
	if len(vms["cp-1"]) != 1 || e.ids.get("cp-1") == "" {
		t.Fatalf("VMs %v, recorded %q; want the VM kept and recorded for adoption", vms, e.ids.get("cp-1"))
	}
	n, err := e.p.Ensure(ctx, e.spec(t, "cp-1"))
	if err != nil {
		t.Fatal(err)
	}
	if n.ID != e.ids.get("cp-1") || len(kthwVMs(sim)["cp-1"]) != 1 {
		t.Fatalf("re-run made another VM: %v", kthwVMs(sim))
	}
}
