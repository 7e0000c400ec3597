// Package labtest boots real lab nodes (systemd-nspawn, see package lab) for
// tests and connects an agent to each, so modules can be tested against a
// real Debian with systemd, apt and D-Bus.
//
// Every Start takes a free slot (a flock under /run/lock, so parallel test
// binaries never collide) that gives it its own bridge (kthwt<N>), range
// (10.200.<100+N>.0/24), apt proxy port (3200+N) and lab directory; only the
// cached root filesystem under /var/lib/kthw/lab/rootfs is shared. Cleanup
// tears everything down even when the test fails.
package labtest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kthw/kthw/controller/internal/agentbuild"
	"github.com/kthw/kthw/controller/lab"
	"github.com/kthw/kthw/controller/node"
	"github.com/kthw/kthw/controller/sshx"
	"github.com/kthw/kthw/controller/workspace"
)

// ImageDir is the shared root filesystem cache.
const ImageDir = "/var/lib/kthw/lab/rootfs"

const slots = 40

// Cluster is a set of running lab nodes with connected agents.
type Cluster struct {
	Lab   *lab.Lab
	Nodes []*Node
	// Dir holds the lab, the workspace and the agent build.
	Dir  string
	ws   *workspace.Workspace
	opt  node.Options
	slot int
}

// Node is one lab node and its agent connection.
type Node struct {
	Name    string
	Machine string
	Address netip.Addr
	*node.Conn
}

// Skip skips the test unless lab nodes can run here.
func Skip(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("lab nodes need root")
	}
	for _, p := range []string{"systemd-nspawn", "mmdebstrap", "apt-cacher-ng"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("lab nodes need %s (scripts/setup.sh installs it)", p)
		}
	}
}

// Start boots n nodes named node-1..node-n and connects an agent to each;
// Nodes[i] is node-<i+1>.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	Skip(t)
	slot := takeSlot(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	l, err := lab.New(lab.Config{
		Dir:           filepath.Join(dir, "lab"),
		ImageDir:      ImageDir,
		Bridge:        "kthwt" + strconv.Itoa(slot),
		BridgeAddress: netip.MustParsePrefix(fmt.Sprintf("10.200.%d.1/24", 100+slot)),
		ProxyPort:     3200 + slot,
	})
	if err != nil {
		t.Fatalf("labtest: %v", err)
	}
	c := &Cluster{Lab: l, Dir: dir, slot: slot}
	t.Cleanup(func() {
		for _, nd := range c.Nodes {
			if nd.Conn != nil {
				nd.Conn.Close()
			}
		}
		if err := l.Teardown(context.Background()); err != nil {
			t.Errorf("labtest: teardown: %v", err)
		}
	})
	if _, err := l.Prepare(ctx); err != nil {
		t.Fatalf("labtest: prepare: %v", err)
	}
	ws, err := workspace.Open(filepath.Join(dir, "ws"))
	if err != nil {
		t.Fatalf("labtest: %v", err)
	}
	t.Cleanup(func() { ws.Close() })
	c.ws = ws
	t.Cleanup(agentbuild.Cleanup)
	c.opt = node.Options{
		SSH:               sshx.Options{IdentityFiles: []string{ws.KeyPath()}, KnownHostsFile: ws.KnownHostsPath()},
		AgentBinary:       agentbuild.Build(t, agentbuild.Variant{Version: "labtest"}),
		ControllerVersion: "labtest",
	}

	nodes := make([]*Node, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { nodes[i], errs[i] = c.boot(ctx, i+1) })
	}
	wg.Wait()
	for _, nd := range nodes {
		if nd != nil {
			c.Nodes = append(c.Nodes, nd) // in name order: node-1 first
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("labtest: %v", err)
	}
	return c
}

func (c *Cluster) boot(ctx context.Context, i int) (*Node, error) {
	name := fmt.Sprintf("node-%d", i)
	gw := c.Lab.Gateway()
	addr, err := c.Lab.HostAddress(10 + i)
	if err != nil {
		return nil, err
	}
	priv, _, err := lab.GenerateHostKey()
	if err != nil {
		return nil, err
	}
	// Machine names are global on the host (they name the host-side
	// veth), so they carry the slot; the host name is the node name.
	machine := fmt.Sprintf("lt%d-%s", c.slot, name)
	info, err := c.Lab.Start(ctx, lab.NodeSpec{Name: machine, Hostname: name, Address: addr, Gateway: gw, HostKey: priv, AuthorizedKeys: c.ws.PublicKey})
	if err != nil {
		return nil, err
	}
	if err := c.ws.PinHostKey(addr.Addr().String()+":22", info.HostPublicKey); err != nil {
		return nil, err
	}
	conn, err := node.Connect(ctx, sshx.Target{User: "root", Host: addr.Addr().String(), Port: 22}, c.opt)
	if err != nil {
		return nil, err
	}
	return &Node{Name: name, Machine: info.Name, Address: addr.Addr(), Conn: conn}, nil
}

// Reconnect closes the node's agent session and opens a new one (for tests
// that restart things under the agent).
func (c *Cluster) Reconnect(t testing.TB, nd *Node) {
	t.Helper()
	nd.Conn.Close()
	conn, err := node.Connect(context.Background(), sshx.Target{User: "root", Host: nd.Address.String(), Port: 22}, c.opt)
	if err != nil {
		t.Fatalf("labtest: reconnect %s: %v", nd.Name, err)
	}
	nd.Conn = conn
}

// Workspace is the workspace the cluster's nodes are pinned in (its key
// and known_hosts reach them), for tests that drive cluster verbs.
func (c *Cluster) Workspace() *workspace.Workspace { return c.ws }

// Exec runs a shell command on the node over SSH as root and returns its
// stdout; a failure fails the test.
func (c *Cluster) Exec(t testing.TB, nd *Node, cmd string) string {
	t.Helper()
	out, err := sshx.Run(context.Background(), nd.Conn.SSH, cmd, nil)
	if err != nil {
		t.Fatalf("labtest: %s on %s: %v", cmd, nd.Name, err)
	}
	return string(out)
}

// HostLock takes the machine-wide lock /run/lock/<name>.lock, waiting for
// it, for tests whose network, port or directory is fixed: one run at a
// time on the machine. It is released when the test's cleanups reach it,
// so cleanups registered after HostLock (a teardown) run while it is held.
func HostLock(t testing.TB, name string) {
	t.Helper()
	p := "/run/lock/" + name + ".lock"
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatalf("labtest: %v", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		t.Fatalf("labtest: lock %s: %v", p, err)
	}
	t.Cleanup(func() { f.Close() })
}

// takeSlot locks a free slot for the test's lifetime.
func takeSlot(t testing.TB) int {
	t.Helper()
	for i := 0; i < slots; i++ {
		f, err := os.OpenFile(fmt.Sprintf("/run/lock/kthw-labtest-%d.lock", i), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			t.Fatalf("labtest: %v", err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		t.Cleanup(func() { f.Close() })
		return i
	}
	t.Fatalf("labtest: all %d slots busy", slots)
	return 0
}
