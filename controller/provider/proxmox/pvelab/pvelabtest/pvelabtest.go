// Package pvelabtest runs a Proxmox simulator whose VMs are real lab nodes (package pvelab) for
// tests. Every test that uses it shares one bridge (kthwpx0), range (10.200.88.0/24) and apt
// proxy port (3188), so a host-wide lock (a flock under /run/lock) lets one such test run at a
// time, across test binaries. The lab directory is the test's own; only the cached root
// filesystem under /var/lib/kthw/lab/rootfs is shared. Cleanup stops the simulator and then
// destroys every node, the apt proxy and the bridge, even when the test fails.
package pvelabtest

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/kthw/kthw/controller/internal/labtest"
	"github.com/kthw/kthw/controller/lab"
	"github.com/kthw/kthw/controller/provider/proxmox/pvelab"
	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
)

// The network of the tests' lab.
const (
	Bridge    = "kthwpx0"
	ProxyPort = 3188
	// NodeCIDR is the cluster network to use; its first host is the bridge.
	NodeCIDR = "10.200.88.0/24"
	// Prefix starts the lab node names: <Prefix><vmid>.
	Prefix = "pxt-"
	// ImageDir is the root filesystem cache, shared with labtest's labs.
	ImageDir = labtest.ImageDir
)

// BridgeAddress is the bridge's address (the nodes' gateway).
var BridgeAddress = netip.MustParsePrefix("10.200.88.1/24")

// Env is a running simulator backed by lab nodes.
type Env struct {
	Sim     *pvesim.Sim
	Backend *pvelab.Backend
	Lab     *lab.Lab
	// LabDir is the lab's directory.
	LabDir string

	afterTeardown []func()
}

// AfterTeardown registers f to run once the simulator stopped and the lab
// was torn down, while this test still holds the lab network's lock (so no
// other test's lab can appear in between).
func (e *Env) AfterTeardown(f func()) { e.afterTeardown = append(e.afterTeardown, f) }

// Skip skips the test unless lab nodes can run here.
func Skip(t testing.TB) {
	t.Helper()
	labtest.Skip(t)
}

// Start runs the simulator (pvesim.Start with opts) with the lab backend, prepared (image,
// bridge, apt proxy).
func Start(t testing.TB, opts ...pvesim.Option) *Env {
	t.Helper()
	Skip(t)
	// One run at a time on the machine: the bridge, range and port are fixed.
	labtest.HostLock(t, "kthw-pvelabtest")
	dir := t.TempDir()
	l, err := lab.New(lab.Config{Dir: filepath.Join(dir, "lab"), ImageDir: ImageDir, Bridge: Bridge,
		BridgeAddress: BridgeAddress, ProxyPort: ProxyPort})
	if err != nil {
		t.Fatal(err)
	}
	b, err := pvelab.New(l, pvelab.Options{MachinePrefix: Prefix})
	if err != nil {
		t.Fatal(err)
	}
	env := &Env{Backend: b, Lab: l, LabDir: l.Config().Dir}
	// Registered before the simulator's own cleanup, so it runs after the simulator stopped,
	// and after the lock's, so the lock goes last.
	t.Cleanup(func() {
		if err := l.Teardown(context.Background()); err != nil {
			t.Errorf("pvelabtest: teardown: %v", err)
		}
		for _, f := range env.afterTeardown {
			f()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := b.Prepare(ctx); err != nil {
		t.Fatalf("pvelabtest: prepare: %v", err)
	}
	env.Sim = pvesim.Start(t, append([]pvesim.Option{pvesim.WithBackend(b)}, opts...)...)
	return env
}
