package pvesim_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	proxmox "github.com/luthermonson/go-proxmox"

	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
)

func TestCredentials(t *testing.T) {
	sim := pvesim.Start(t)
	ctx := ctxT(t)
	c := proxmox.NewClient(sim.URL, proxmox.WithCredentials(&proxmox.Credentials{Username: sim.Username, Password: sim.Password}),
		proxmox.WithRootCAs(sim.RootCAs))
	// the first call gets a 401, logs in and retries
	v, err := c.Version(ctx)
	if err != nil || v.Version == "" {
		t.Fatalf("Version with credentials: %+v, %v", v, err)
	}
	sess := c.Session()
	if sess == nil || sess.Username != "root@pam" || !strings.HasPrefix(sess.Ticket, "PVE:root@pam:") || sess.CSRFPreventionToken == "" ||
		sess.ClusterName != "pvesim" || sess.Cap["vms"]["VM.Allocate"] != 1 {
		t.Fatalf("session = %+v", sess)
	}
	// writes carry the CSRF token
	tmpl := &proxmox.VirtualMachine{}
	tmpl.New(c, "pve1", pvesim.TestTemplateID)
	_, task, err := tmpl.Clone(ctx, &proxmox.VirtualMachineCloneOptions{NewID: 120, Name: "by-ticket"})
	mustSucceed(t, ctx, task, err)
	if task.User != "root@pam" {
		t.Errorf("task user = %q", task.User)
	}
	if err := c.RefreshTicket(ctx); err != nil {
		t.Errorf("RefreshTicket: %v", err)
	}
	if _, err := c.Version(ctx); err != nil {
		t.Errorf("after refresh: %v", err)
	}
	if got := sim.CallCount("POST /access/ticket"); got != 2 {
		t.Errorf("ticket calls = %d, want 2", got)
	}

	bad := proxmox.NewClient(sim.URL, proxmox.WithCredentials(&proxmox.Credentials{Username: sim.Username, Password: "wrong"}),
		proxmox.WithRootCAs(sim.RootCAs))
	if _, err := bad.Version(ctx); !errors.Is(err, proxmox.ErrNotAuthorized) {
		t.Errorf("wrong password: %v", err)
	}
	r := do(t, sim, http.MethodPost, "/access/ticket", "application/x-www-form-urlencoded", "username=root%40pam&password=wrong")
	if r.status != "401 authentication failure" || r.json(t)["message"] != "authentication failure\n" {
		t.Errorf("ticket with wrong password: %s %s", r.status, r.body)
	}

	// a ticket without the CSRF token may read but not write
	tok := sess.Ticket
	r = do(t, sim, http.MethodGet, "/version", "", "", "Authorization", "", "Cookie", "PVEAuthCookie="+tok)
	if r.code != 200 {
		t.Errorf("GET with ticket: %s", r.status)
	}
	r = do(t, sim, http.MethodPost, "/nodes/pve1/qemu/120/status/start", "", "", "Authorization", "", "Cookie", "PVEAuthCookie="+tok)
	if r.status != "401 Permission denied - invalid csrf token" {
		t.Errorf("POST without CSRF: %s", r.status)
	}
}

func TestUnauthorized(t *testing.T) {
	sim := pvesim.Start(t)
	ctx := ctxT(t)
	c := proxmox.NewClient(sim.URL, proxmox.WithAPIToken(sim.TokenID, "wrong-secret"), proxmox.WithRootCAs(sim.RootCAs))
	if _, err := c.Version(ctx); !errors.Is(err, proxmox.ErrNotAuthorized) || !proxmox.IsNotAuthorized(err) {
		t.Errorf("wrong token: %v", err)
	}
	r := do(t, sim, http.MethodGet, "/version", "", "", "Authorization", "PVEAPIToken=root@pam!kthw=nope")
	if r.status != "401 Authentication failed!" || len(r.body) != 0 {
		t.Errorf("wrong token raw: %q %q", r.status, r.body)
	}
	r = do(t, sim, http.MethodGet, "/version", "", "", "Authorization", "")
	if r.status != "401 No ticket" {
		t.Errorf("no credentials: %q", r.status)
	}
	// the ticket endpoint needs none
	r = do(t, sim, http.MethodGet, "/access/domains", "", "", "Authorization", "")
	if r.code != 200 {
		t.Errorf("domains: %s", r.status)
	}
}

func TestForbidden(t *testing.T) {
	sim := pvesim.Start(t, pvesim.WithFaults(pvesim.Faults{Forbidden: []pvesim.ForbidRule{
		{Method: "POST", Path: "/nodes/pve1/qemu/9000/clone"},
		{Path: "/cluster/status"},
		{Path: "/nodes/pve1/storage", Perm: "/storage/local-lvm, Datastore.Audit"},
	}}))
	c := tokenClient(t, sim)
	ctx := ctxT(t)
	tmpl := &proxmox.VirtualMachine{}
	tmpl.New(c, "pve1", pvesim.TestTemplateID)
	if _, _, err := tmpl.Clone(ctx, &proxmox.VirtualMachineCloneOptions{NewID: 100}); !errors.Is(err, proxmox.ErrNotAuthorized) {
		t.Errorf("forbidden clone: %v", err)
	}
	r := do(t, sim, http.MethodPost, "/nodes/pve1/qemu/9000/clone", "application/json", `{"newid":100}`)
	if r.status != "403 Permission check failed (/vms/9000, VM.Clone)" {
		t.Errorf("403 status: %q", r.status)
	}
	m := r.json(t)
	if m["data"] != nil || m["message"] != "Permission check failed (/vms/9000, VM.Clone)\n" {
		t.Errorf("403 body: %s", r.body)
	}
	// Client.Cluster tolerates a 403 on /cluster/status, as with a token
	// without Sys.Audit
	if _, err := c.Cluster(ctx); err != nil {
		t.Errorf("Cluster with 403 status: %v", err)
	}
	if r := get(t, sim, "/nodes/pve1/storage/local/status"); r.status != "403 Permission check failed (/storage/local-lvm, Datastore.Audit)" {
		t.Errorf("403 with perm: %q", r.status)
	}
	// root-only options are refused to a token of root
	r = do(t, sim, http.MethodPost, "/nodes/pve1/qemu/9000/status/start", "application/json", `{"skiplock":1}`)
	if r.status != "400 Parameter verification failed." || !strings.Contains(string(r.body), `"skiplock":"Only root may use this option."`) {
		t.Errorf("skiplock by token: %s %s", r.status, r.body)
	}
	if sim.FaultStats()["forbidden"] < 3 {
		t.Errorf("stats = %v", sim.FaultStats())
	}
}
