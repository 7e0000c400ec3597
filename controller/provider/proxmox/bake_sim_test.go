package proxmox

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
)

func TestParseConsoleHostKeys(t *testing.T) {
	log, err := os.ReadFile("testdata/cloud-init-console-ubuntu2004.log")
	if err != nil {
		t.Fatal(err)
	}
	keys, ok := ParseConsoleHostKeys(log)
	want := []string{
		"ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBHN14OCnYTeMh09qRzmWhtXsCgMOQu5S4WLksyBkQsNFil50MPdN8EoE0hh4dw70UzctiMXmQW/vStGeeyLv7OA= root@vm1",
		"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHtOReNwl7HPAz5EUR/6mRdACoNszPBcSS9tCUeot7CE root@vm1",
		// the RSA line is cut short on that console: skipped
	}
	if !ok || strings.Join(keys, "\n") != strings.Join(want, "\n") {
		t.Fatalf("keys %q ok=%v", keys, ok)
	}
	// As a serial terminal delivers it: CRLF, split anywhere.
	crlf := strings.ReplaceAll(string(log), "\n", "\r\n")
	for cut := 0; cut < len(crlf); cut += 97 {
		keys, ok := ParseConsoleHostKeys([]byte(crlf[:cut]))
		if ok && cut < strings.Index(crlf, hostKeysEnd)+len(hostKeysEnd) {
			t.Fatalf("complete at %d of %d", cut, len(crlf))
		}
		_ = keys
	}
	if keys, ok := ParseConsoleHostKeys([]byte(crlf)); !ok || len(keys) != 2 {
		t.Fatalf("CRLF: %q %v", keys, ok)
	}
	if _, ok := ParseConsoleHostKeys([]byte("[  OK  ] Reached target Cloud-init target.\r\n")); ok {
		t.Fatal("no block, but ok")
	}
	// The simulator's console renders what the parser reads.
	lines := pvesim.ConsoleLines("c1", want[1:], time.Now(), 12*time.Second, true)
	if keys, ok := ParseConsoleHostKeys([]byte(strings.Join(lines, "\r\n"))); !ok || len(keys) != 1 || keys[0] != want[1] {
		t.Fatalf("simulator console: %q %v", keys, ok)
	}
}

// fakeBaker records the bake; it cannot log in to the simulator's default
// guests (they boot nothing). With sim set it installs the guest agent in
// VM vmid the way the simulator models it. The real path is the lab e2e
// test.
type fakeBaker struct {
	mu     sync.Mutex
	target BakeTarget
	steps  *RecipeBake
	calls  int
	err    error
	sim    *pvesim.Sim
	vmid   int
}

func (f *fakeBaker) Bake(_ context.Context, t BakeTarget, s *RecipeBake) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.target, f.steps = t, s
	if f.err == nil && f.sim != nil {
		return f.sim.InstallGuestAgent(f.vmid)
	}
	return f.err
}

const debianImage = "debian-12-genericcloud-amd64.qcow2"

// bakeEnv is a simulator with Debian's cloud image (no guest agent) on the
// import storage, and a provider that logs in with a password.
func bakeEnv(t *testing.T, opts ...pvesim.Option) (*simEnv, *pvesim.Sim) {
	t.Helper()
	opts = append([]pvesim.Option{pvesim.WithConfig(func(c *pvesim.Config) {
		c.ImportImages = []pvesim.ImportImage{{File: debianImage}}
		c.Templates = nil
		c.ConsoleDelay = 200 * time.Millisecond
	})}, opts...)
	sim := pvesim.Start(t, opts...)
	c := simCluster(t, sim)
	passwordLogin(t, c, sim, "env:PM_PASSWORD")
	return newSimProvider(t, c, sim, ""), sim
}

var buildAddr = netip.MustParsePrefix("10.200.0.250/24")

// TestBuildTemplateBake: an image without the guest agent is booted once
// with a build user, key and address; the host key the Baker gets is the
// one the VM's console showed; the template keeps none of the one-boot
// settings.
func TestBuildTemplateBake(t *testing.T) {
	ctx := context.Background()
	e, sim := bakeEnv(t)
	r, err := LoadRecipe(nil, "debian")
	if err != nil {
		t.Fatal(err)
	}
	fb := &fakeBaker{sim: sim, vmid: 9100}
	start := time.Now()
	res, err := e.p.BuildTemplate(ctx, r, BuildOptions{VMID: 9100, Address: buildAddr, Baker: fb, ConsoleTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("template build with a bake: %s, %d API calls", time.Since(start).Round(time.Millisecond), sumCalls(sim))
	if !res.Created || !res.Baked || res.VMID != 9100 || res.Downloaded {
		t.Fatalf("result %+v", res)
	}
	vm, _ := sim.VM(9100)
	if !vm.Template || vm.Running {
		t.Fatalf("VM %+v", vm)
	}
	for _, k := range []string{"ciuser", "sshkeys", "ipconfig0", "nameserver", "searchdomain"} {
		if v, ok := vm.Config[k]; ok {
			t.Errorf("template keeps %s=%q", k, v)
		}
	}
	if fb.calls != 1 || fb.target.Host != "10.200.0.250" || fb.target.Port != 22 || fb.target.User != "kthw" ||
		len(fb.steps.Packages) != 1 || fb.steps.Packages[0] != "qemu-guest-agent" {
		t.Fatalf("bake %+v %+v", fb.target, fb.steps)
	}
	// The key the console showed is the guest's.
	pub, err := pvesim.DefaultHostKey(pvesim.VMInfo{VMID: 9100, Config: map[string]string{"smbios1": vm.Config["smbios1"]}})
	if err != nil {
		t.Fatal(err)
	}
	if len(fb.target.HostKeys) != 1 || !strings.HasPrefix(fb.target.HostKeys[0], strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))) {
		t.Fatalf("host keys %q", fb.target.HostKeys)
	}
	if n := sim.CallCount("POST /nodes/{node}/qemu/{vmid}/termproxy"); n != 1 {
		t.Errorf("%d termproxy calls", n)
	}
	if n := sim.CallCount("POST /nodes/{node}/qemu/{vmid}/agent/ping"); n < 1 {
		t.Errorf("the baked guest agent was not checked")
	}
	// Clones of the template have the guest agent the bake installed.
	if vols := sim.Volumes(); !slices.ContainsFunc(vols, func(v pvesim.VolumeState) bool {
		return strings.HasPrefix(v.VolID, "local-lvm:base-9100-disk") && v.GuestAgent
	}) {
		t.Errorf("the template's disk does not carry the guest agent: %+v", vols)
	}
}

// TestBuildTemplateBakedAgentSilent: a bake that leaves no answering guest
// agent fails the build, naming it, and removes the VM.
func TestBuildTemplateBakedAgentSilent(t *testing.T) {
	ctx := context.Background()
	e, sim := bakeEnv(t)
	r, _ := LoadRecipe(nil, "debian")
	fb := &fakeBaker{} // installs nothing
	_, err := e.p.BuildTemplate(ctx, r, BuildOptions{VMID: 9100, Address: buildAddr, Baker: fb, ConsoleTimeout: 2 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "does not answer through the API") || !strings.Contains(err.Error(), "QEMU guest agent is not running") {
		t.Fatalf("err %v", err)
	}
	if fb.calls != 1 {
		t.Fatalf("%d bakes", fb.calls)
	}
	if _, ok := sim.VM(9100); ok {
		t.Fatal("the half-built VM was left")
	}
}

// TestBuildTemplateConsoleWithoutKeys: a console that never shows the key
// block fails the build clearly, and the builder VM is removed.
func TestBuildTemplateConsoleWithoutKeys(t *testing.T) {
	ctx := context.Background()
	e, sim := bakeEnv(t, pvesim.WithFaults(pvesim.Faults{ConsoleNoKeys: true}))
	r, _ := LoadRecipe(nil, "debian")
	fb := &fakeBaker{}
	_, err := e.p.BuildTemplate(ctx, r, BuildOptions{VMID: 9100, Address: buildAddr, Baker: fb, ConsoleTimeout: 1500 * time.Millisecond})
	if !errors.Is(err, ErrNoConsoleKeys) || !strings.Contains(err.Error(), "-----BEGIN SSH HOST KEY KEYS-----") ||
		!strings.Contains(err.Error(), "login: ") {
		t.Fatalf("err %v", err)
	}
	if fb.calls != 0 {
		t.Fatal("baked without keys")
	}
	if _, ok := sim.VM(9100); ok {
		t.Fatal("the half-built VM was left")
	}
	nothingMade(t, sim)
}

// TestBuildTemplateBakeRefusals: what cannot work is refused before
// anything is made: a token (no console), no address, no baker; a failing
// bake removes the VM.
func TestBuildTemplateBakeRefusals(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t, pvesim.WithConfig(func(c *pvesim.Config) {
		c.ImportImages = []pvesim.ImportImage{{File: debianImage}}
		c.Templates = nil
	}))
	e := buildEnv(t, sim, "debian") // a token
	r, _ := LoadRecipe(nil, "debian")
	_, err := e.p.BuildTemplate(ctx, r, BuildOptions{Address: buildAddr, Baker: &fakeBaker{}})
	if err == nil || !strings.Contains(err.Error(), "termproxy does not accept API tokens") || !strings.Contains(err.Error(), "passwordRef") {
		t.Fatalf("token: %v", err)
	}
	if _, err := e.p.BuildTemplate(ctx, r, BuildOptions{}); err == nil || !strings.Contains(err.Error(), "--address") {
		t.Fatalf("no address: %v", err)
	}
	if n := sim.CallCount("POST /nodes/{node}/qemu"); n != 0 {
		t.Fatalf("a VM was created")
	}

	e2, sim2 := bakeEnv(t)
	fb := &fakeBaker{err: errors.New("apt-get failed")}
	_, err = e2.p.BuildTemplate(ctx, r, BuildOptions{VMID: 9100, Address: buildAddr, Baker: fb, ConsoleTimeout: 10 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "apt-get failed") {
		t.Fatalf("failing bake: %v", err)
	}
	if _, ok := sim2.VM(9100); ok {
		t.Fatal("the failed build's VM was left")
	}
}

func sumCalls(sim *pvesim.Sim) int {
	n := 0
	for _, c := range sim.Calls() {
		n += c
	}
	return n
}
