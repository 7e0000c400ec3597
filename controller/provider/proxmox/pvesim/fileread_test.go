package pvesim_test

import (
	"context"
	"encoding/base64"
	"net/netip"
	"strings"
	"testing"

	proxmox "github.com/luthermonson/go-proxmox"
	"golang.org/x/crypto/ssh"

	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
)

// filesBackend serves fixed files through the guest agent.
type filesBackend struct{ files map[string]string }

func (b filesBackend) Start(_ context.Context, vm pvesim.VMInfo) (pvesim.GuestInfo, error) {
	return pvesim.GuestInfo{
		Interfaces: []pvesim.GuestInterface{{Name: "ens18", MAC: strings.ToLower(vm.MAC), Addresses: []netip.Prefix{vm.Address}}},
		Files:      b.files,
	}, nil
}
func (filesBackend) Stop(context.Context, int) error    { return nil }
func (filesBackend) Destroy(context.Context, int) error { return nil }

// startedClone clones the template to 100, configures an address and
// starts it, waiting for the agent.
func startedClone(t *testing.T, sim *pvesim.Sim) *proxmox.VirtualMachine {
	t.Helper()
	ctx := ctxT(t)
	vm := clonedVM(t, tokenClient(t, sim), "cp-1", "ip=10.0.0.21/24,gw=10.0.0.1")
	st, err := vm.Start(ctx)
	mustSucceed(t, ctx, st, err)
	waitFor(t, "agent", func() bool { return vm.AgentPing(ctx) == nil })
	return vm
}

func TestAgentFileReadDefaultBackend(t *testing.T) {
	sim := pvesim.Start(t)
	ctx := ctxT(t)
	c := tokenClient(t, sim)
	node, _ := c.Node(ctx, "pve1")
	vm, err := node.VirtualMachine(ctx, pvesim.TestTemplateID)
	if err != nil {
		t.Fatal(err)
	}
	// A template never runs: the agent is not there.
	if _, err := vm.AgentFileRead(ctx, pvesim.BootFinishedFile); err == nil || err.Error() != "500 VM 9000 is not running" {
		t.Fatalf("file-read of a stopped VM: %v", err)
	}

	vm = startedClone(t, sim)
	ok := succeeds(t, ctx)
	f, err := vm.AgentFileRead(ctx, pvesim.BootFinishedFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(f.Content, " - v. ") || !strings.HasSuffix(f.Content, "\n") || bool(f.Truncated) {
		t.Errorf("boot-finished %+v", f)
	}
	f, err = vm.AgentFileRead(ctx, pvesim.HostKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	pub, comment, _, _, err := ssh.ParseAuthorizedKey([]byte(f.Content))
	if err != nil || pub.Type() != ssh.KeyAlgoED25519 || comment != "root@cp-1" {
		t.Fatalf("host key %q: %v %q", f.Content, err, comment)
	}
	// The key is the VM's: the same after a restart.
	ok(vm.Stop(ctx))
	ok(vm.Start(ctx))
	waitFor(t, "agent", func() bool { return vm.AgentPing(ctx) == nil })
	f2, err := vm.AgentFileRead(ctx, pvesim.HostKeyFile)
	if err != nil || f2.Content != f.Content {
		t.Fatalf("host key after restart %q, %v; want %q", f2.Content, err, f.Content)
	}

	// A missing file fails the way qemu-ga's guest-file-open does.
	if _, err := vm.AgentFileRead(ctx, "/etc/nope"); err == nil || err.Error() != "500 Agent error: Failed to open file '/etc/nope': No such file or directory" {
		t.Fatalf("missing file: %v", err)
	}
	// An agent that blocks guest-file-*.
	sim.UpdateFaults(func(f *pvesim.Faults) { f.AgentFileReadBlocked = true })
	if _, err := vm.AgentFileRead(ctx, pvesim.HostKeyFile); err == nil || err.Error() != "500 Agent error: Command guest-file-open has been disabled" {
		t.Fatalf("blocked file-read: %v", err)
	}
}

// succeeds returns a function that waits for a task and fails the test
// unless it succeeded: ok(vm.Stop(ctx)).
func succeeds(t *testing.T, ctx context.Context) func(*proxmox.Task, error) {
	return func(task *proxmox.Task, err error) {
		t.Helper()
		mustSucceed(t, ctx, task, err)
	}
}

// TestAgentFileReadShape checks the raw answer against qemu-server's
// file-read: content and bytes-read, truncated only when the read did not
// reach the end, the file parameter required, and count/offset/decode only
// from Proxmox VE 9 on.
func TestAgentFileReadShape(t *testing.T) {
	const content = "hello, guest\n"
	sim := pvesim.Start(t, pvesim.WithBackend(filesBackend{files: map[string]string{"/tmp/x": content}}))
	startedClone(t, sim)
	const p = "/nodes/pve1/qemu/100/agent/file-read"

	r := get(t, sim, p+"?file=/tmp/x")
	if r.code != 200 {
		t.Fatalf("file-read: %s %s", r.status, r.body)
	}
	d := r.data(t).(map[string]any)
	checkTypes(t, "file-read", d, map[string]string{"content": "string", "bytes-read": "number", "truncated": "absent"})
	if d["content"] != content || d["bytes-read"] != float64(len(content)) {
		t.Errorf("file-read = %v", d)
	}
	if r := get(t, sim, p); r.code != 400 || !strings.Contains(string(r.body), `"file":"property is missing and it is not optional"`) {
		t.Errorf("without file: %s %s", r.status, r.body)
	}
	if r := get(t, sim, p+"?file=/tmp/x&count=4"); r.code != 400 || !strings.Contains(string(r.body), `"count":"property is not defined in schema`) {
		t.Errorf("count on PVE 8: %s %s", r.status, r.body)
	}

	sim9 := pvesim.Start(t, pvesim.WithPVEVersion("9.1.2"), pvesim.WithBackend(filesBackend{files: map[string]string{"/tmp/x": content}}))
	startedClone(t, sim9)
	for _, tt := range []struct {
		query     string
		content   string
		n         int
		truncated bool
	}{
		{"count=5", "hello", 5, true},
		{"offset=7", "guest\n", 6, false},
		{"offset=7&count=6", "guest\n", 6, true}, // exactly what is left: qemu-ga has not seen EOF
		{"offset=7&count=7", "guest\n", 6, false},
		{"offset=100", "", 0, false},
		{"count=5&decode=0", base64.StdEncoding.EncodeToString([]byte("hello")), 5, true},
	} {
		r := get(t, sim9, p+"?file=/tmp/x&"+tt.query)
		if r.code != 200 {
			t.Errorf("%s: %s %s", tt.query, r.status, r.body)
			continue
		}
		d := r.data(t).(map[string]any)
		want := map[string]string{"truncated": "absent"}
		if tt.truncated {
			want["truncated"] = "number"
		}
		checkTypes(t, tt.query, d, want)
		if d["content"] != tt.content || d["bytes-read"] != float64(tt.n) {
			t.Errorf("%s: %v", tt.query, d)
		}
	}
	if r := get(t, sim9, p+"?file=/tmp/x&count=0"); r.code != 400 {
		t.Errorf("count=0: %s %s", r.status, r.body)
	}
}

// TestStoppedVMConfigClearsPending: a VM that runs keeps changes it cannot
// take pending; once stopped, any config update applies the whole pending
// section (qemu-server's vmconfig_apply_pending), so a new value replaces
// a pending one instead of being overridden by it at the next start.
func TestStoppedVMConfigClearsPending(t *testing.T) {
	sim := pvesim.Start(t)
	ctx := ctxT(t)
	vm := startedClone(t, sim)
	ok := succeeds(t, ctx)
	ok(vm.Config(ctx, proxmox.VirtualMachineOption{Name: "cores", Value: 6}, proxmox.VirtualMachineOption{Name: "memory", Value: 4096}))
	if st, _ := sim.VM(100); st.Pending["cores"] != "6" || st.Pending["memory"] != "4096" {
		t.Fatalf("pending while running: %v", st.Pending)
	}
	ok(vm.Stop(ctx))
	if st, _ := sim.VM(100); st.Pending["cores"] != "6" {
		t.Fatalf("a stop applied pending changes: %v", st.Pending)
	}
	// The change on the stopped VM replaces the pending cores and applies
	// the pending memory.
	ok(vm.Config(ctx, proxmox.VirtualMachineOption{Name: "cores", Value: 2}))
	st, _ := sim.VM(100)
	if st.Config["cores"] != "2" || st.Config["memory"] != "4096" || len(st.Pending) != 0 {
		t.Fatalf("after update of the stopped VM: config cores=%s memory=%s, pending %v", st.Config["cores"], st.Config["memory"], st.Pending)
	}
	r := get(t, sim, "/nodes/pve1/qemu/100/pending")
	for _, e := range r.data(t).([]any) {
		if m := e.(map[string]any); m["pending"] != nil || m["delete"] != nil {
			t.Errorf("pending entry left: %v", m)
		}
	}
	ok(vm.Start(ctx))
	if st, _ := sim.VM(100); st.Config["cores"] != "2" {
		t.Fatalf("cores after start = %s, want 2", st.Config["cores"])
	}

	// A pending deletion is applied the same way.
	ok(vm.Config(ctx, proxmox.VirtualMachineOption{Name: "delete", Value: "cores"}))
	if st, _ := sim.VM(100); st.Config["cores"] != "2" || !strings.Contains(strings.Join(st.PendingDelete, ","), "cores") {
		t.Fatalf("pending delete while running: %v %v", st.Config["cores"], st.PendingDelete)
	}
	ok(vm.Stop(ctx))
	ok(vm.Config(ctx, proxmox.VirtualMachineOption{Name: "name", Value: "cp-1"}))
	if st, _ := sim.VM(100); st.Config["cores"] != "" || len(st.PendingDelete) != 0 {
		t.Fatalf("after update of the stopped VM: cores=%q pending delete %v", st.Config["cores"], st.PendingDelete)
	}
}
