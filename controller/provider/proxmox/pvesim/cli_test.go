package pvesim_test

import (
	"bytes"
	"context"
	"io"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	proxmox "github.com/luthermonson/go-proxmox"
	"github.com/spf13/cobra"

	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestCommand runs kthw-pvesim on a free port and talks to it with
// go-proxmox through the CA file it prints.
func TestCommand(t *testing.T) {
	var out syncBuffer
	cmd := pvesim.Command("test", &out, io.Discard)
	cmd.SetArgs([]string{
		"--listen", "127.0.0.1:0", "--cert-dir", t.TempDir(),
		"--token", "root@pam!ci=s3cret", "--user", "root@pam:pw",
		"--template", "9000:kthw-debian-12,tags=kthw;template", "--template", "9001:bare,no-cloudinit,disk=4G",
		"--task-duration", "5ms", "--agent-delay", "10ms", "--log-level", "error",
		"--fault-clone-lock-timeouts", "1", "--fault-forbid", "GET:/storage", "--fault-task-warnings", "qmstart=1",
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	re := regexp.MustCompile(`API: (https://\S+)\n`)
	waitFor(t, "listening", func() bool { return re.MatchString(out.String()) })
	url := re.FindStringSubmatch(out.String())[1]
	ca := regexp.MustCompile(`CA certificate: (\S+)\n`).FindStringSubmatch(out.String())
	if ca == nil {
		t.Fatalf("no CA path in %q", out.String())
	}
	c := proxmox.NewClient(url, proxmox.WithAPIToken("root@pam!ci", "s3cret"), proxmox.WithRootCAFile(ca[1]), proxmox.WithTimeout(5*time.Second))
	cctx := ctxT(t)
	cl, err := c.Cluster(cctx)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := cl.Resources(cctx, "vm")
	if err != nil || len(rs) != 2 || rs[0].Name != "kthw-debian-12" || rs[0].Tags != "kthw;template" || rs[1].MaxDisk != 4<<30 {
		t.Errorf("resources = %+v, %v", rs, err)
	}
	tmpl := &proxmox.VirtualMachine{}
	tmpl.New(c, "pve1", 9000)
	_, task, err := tmpl.Clone(cctx, &proxmox.VirtualMachineCloneOptions{NewID: 100, Name: "x"})
	if err != nil {
		t.Fatal(err)
	}
	wait(t, cctx, task)
	if task.ExitStatus != "can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout" {
		t.Errorf("injected lock timeout: %q", task.ExitStatus)
	}
	if err := c.Get(cctx, "/storage", nil); !proxmox.IsNotAuthorized(err) {
		t.Errorf("forbidden /storage: %v", err)
	}
	if err := c.Get(cctx, "/version", nil); err != nil {
		t.Errorf("version: %v", err)
	}
	// the admin endpoint shows the faults that fired
	var stats map[string]int
	if err := c.Get(cctx, strings.Replace(url, "/api2/json", "/pvesim/stats", 1), &stats); err != nil || stats["clone_lock_timeout"] != 1 {
		t.Errorf("admin stats = %v, %v", stats, err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("command: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("command did not stop")
	}
}

func TestCommandFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--template", "9000"},
		{"--token", "nobang=x"},
		{"--fault-task-warnings", "qmstart"},
		{"--template", "9000:x,bogus"},
		{"--fault-offline-node", "pve2=597"},
		{"--fault-offline-node", "pve2=down"},
	} {
		cmd := pvesim.Command("test", io.Discard, io.Discard)
		cmd.SetArgs(append([]string{"--listen", "127.0.0.1:0", "--no-tls"}, args...))
		if err := cmd.Execute(); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

// testExtension records what kthw-pvesim did with it.
type testExtension struct {
	flag       string
	configured bool
	cfg        pvesim.Config // as the flags made it
	closed     chan struct{}
}

func (e *testExtension) AddFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&e.flag, "test-ext", "", "test extension flag")
}

func (e *testExtension) Configure(_ context.Context, cfg *pvesim.Config, _ io.Writer) (func(context.Context) error, error) {
	e.configured = cfg.Logger != nil
	e.cfg = *cfg
	cfg.Backend = filesBackend{files: map[string]string{"/flag": e.flag}}
	return func(context.Context) error { close(e.closed); return nil }, nil
}

// TestCommandExtension: an extension's flags are parsed, it configures the
// server (here: its backend) before it listens, and its closer runs when the
// command stops.
func TestCommandExtension(t *testing.T) {
	var out syncBuffer
	ext := &testExtension{closed: make(chan struct{})}
	cmd := pvesim.Command("test", &out, io.Discard, ext)
	cmd.SetArgs([]string{"--listen", "127.0.0.1:0", "--no-tls", "--token", "root@pam!ci=s3cret",
		"--template", "9000:kthw-debian-12", "--task-duration", "5ms", "--agent-delay", "0s", "--log-level", "error",
		"--shared-storage", "ceph", "--fault-offline-node", "pve2", "--fault-offline-node", "pve3=595", "--test-ext", "hello"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	re := regexp.MustCompile(`API: (http://\S+)\n`)
	waitFor(t, "listening", func() bool { return re.MatchString(out.String()) })
	if ext.flag != "hello" || !ext.configured {
		t.Fatalf("extension flag %q configured %v", ext.flag, ext.configured)
	}
	if want := append(pvesim.DefaultStorages(), pvesim.StorageSpec{Name: "ceph", Type: "rbd", Content: "images,rootdir", Shared: true}); !reflect.DeepEqual(ext.cfg.Storages, want) {
		t.Errorf("--shared-storage ceph: storages %+v, want %+v", ext.cfg.Storages, want)
	}
	if got := ext.cfg.Faults.OfflineNodes; !reflect.DeepEqual(got, map[string]int{"pve2": 596, "pve3": 595}) {
		t.Errorf("--fault-offline-node: %v", got)
	}
	c := proxmox.NewClient(re.FindStringSubmatch(out.String())[1], proxmox.WithAPIToken("root@pam!ci", "s3cret"), proxmox.WithTimeout(5*time.Second))
	cctx := ctxT(t)
	tmpl := &proxmox.VirtualMachine{}
	tmpl.New(c, "pve1", 9000)
	_, task, err := tmpl.Clone(cctx, &proxmox.VirtualMachineCloneOptions{NewID: 100, Name: "x"})
	mustSucceed(t, cctx, task, err)
	vm := &proxmox.VirtualMachine{}
	vm.New(c, "pve1", 100)
	task, err = vm.Start(cctx)
	mustSucceed(t, cctx, task, err)
	waitFor(t, "agent", func() bool { return vm.AgentPing(cctx) == nil })
	if f, err := vm.AgentFileRead(cctx, "/flag"); err != nil || f.Content != "hello" {
		t.Fatalf("file-read through the extension's backend: %+v %v", f, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	select {
	case <-ext.closed:
	default:
		t.Fatal("the extension's closer did not run")
	}
}
