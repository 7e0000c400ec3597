package pvelab_test

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	pve "github.com/luthermonson/go-proxmox"
	"golang.org/x/crypto/ssh"

	"github.com/kthw/kthw/controller/lab"
	"github.com/kthw/kthw/controller/provider/proxmox/pvelab"
	"github.com/kthw/kthw/controller/provider/proxmox/pvelab/pvelabtest"
	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
)

func TestHostname(t *testing.T) {
	l, err := lab.New(lab.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pvelab.New(l, pvelab.Options{MachinePrefix: "Bad"}); err == nil {
		t.Error("prefix Bad accepted")
	}
	b, err := pvelab.New(l, pvelab.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if m := b.Machine(101); m != "pve-101" {
		t.Errorf("machine %s", m)
	}
}

// vmClient is a go-proxmox client of the simulator.
func vmClient(t *testing.T, sim *pvesim.Sim) (*pve.Node, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	c := pve.NewClient(sim.URL, pve.WithAPIToken(sim.TokenID, sim.TokenSecret), pve.WithRootCAs(sim.RootCAs), pve.WithTimeout(time.Minute))
	n, err := c.Node(ctx, "pve1")
	if err != nil {
		t.Fatal(err)
	}
	return n, ctx
}

func waitTask(t *testing.T, ctx context.Context, task *pve.Task, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Wait(ctx, 50*time.Millisecond, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	if !task.IsSuccessful {
		t.Fatalf("task %s: %s", task.UPID, task.ExitStatus)
	}
}

// cloneStart clones the template to vmid with the cloud-init options and starts it.
func cloneStart(t *testing.T, ctx context.Context, n *pve.Node, vmid int, name string, opts ...pve.VirtualMachineOption) *pve.VirtualMachine {
	t.Helper()
	vm := cloneConfig(t, ctx, n, vmid, name, opts...)
	task, err := vm.Start(ctx)
	waitTask(t, ctx, task, err)
	deadline := time.Now().Add(time.Minute)
	for vm.AgentPing(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatal("guest agent did not answer")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return vm
}

// cloneConfig clones the template to vmid and sets the cloud-init options; the VM is left
// stopped.
func cloneConfig(t *testing.T, ctx context.Context, n *pve.Node, vmid int, name string, opts ...pve.VirtualMachineOption) *pve.VirtualMachine {
	t.Helper()
	tmpl, err := n.VirtualMachine(ctx, pvesim.TestTemplateID)
	if err != nil {
		t.Fatal(err)
	}
	_, task, err := tmpl.Clone(ctx, &pve.VirtualMachineCloneOptions{NewID: vmid, Name: name})
	waitTask(t, ctx, task, err)
	vm, err := n.VirtualMachine(ctx, vmid)
	if err != nil {
		t.Fatal(err)
	}
	task, err = vm.Config(ctx, opts...)
	waitTask(t, ctx, task, err)
	return vm
}

// sshSession opens a session as user on addr's port 22 with signer, accepting only hostKey;
// closing the session's client is the caller's.
func sshSession(addr, user string, signer ssh.Signer, hostKey ssh.PublicKey) (*ssh.Client, *ssh.Session, error) {
	cc := &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(hostKey), Timeout: 10 * time.Second}
	c, err := ssh.Dial("tcp", net.JoinHostPort(addr, "22"), cc)
	if err != nil {
		return nil, nil, err
	}
	s, err := c.NewSession()
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	return c, s, nil
}

func sshRun(addr, user string, signer ssh.Signer, hostKey ssh.PublicKey, cmd string) (string, error) {
	c, s, err := sshSession(addr, user, signer, hostKey)
	if err != nil {
		return "", err
	}
	defer c.Close()
	out, err := s.CombinedOutput(cmd)
	return string(out), err
}

// TestLabBackedVM boots VMs of the simulator as lab nodes and checks them as cloud-init
// would have set them up: address, host name, the ciuser with sudo and the keys, root
// refusing logins, the host key the guest agent reads, kept across a restart; destroy
// removes the node.
func TestLabBackedVM(t *testing.T) {
	env := pvelabtest.Start(t, pvesim.WithDefaultTaskDuration(20*time.Millisecond))
	n, ctx := vmClient(t, env.Sim)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(priv)
	pub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	vm := cloneStart(t, ctx, n, 100, "CP-1.lab.example",
		pve.VirtualMachineOption{Name: "ipconfig0", Value: "ip=10.200.88.21/24,gw=10.200.88.1"},
		pve.VirtualMachineOption{Name: "ciuser", Value: "kthw"},
		pve.VirtualMachineOption{Name: "sshkeys", Value: pve.EncodeSSHKeys(pub + " test@kthw")})

	// The agent reports the address on net0's MAC and reads the host key.
	ifs, err := vm.AgentGetNetworkIFaces(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := env.Sim.VM(100)
	mac := strings.TrimPrefix(strings.Split(st.Config["net0"], ",")[0], "virtio=")
	found := false
	for _, i := range ifs {
		if strings.EqualFold(i.HardwareAddress, mac) {
			for _, a := range i.IPAddresses {
				found = found || a.IPAddress == "10.200.88.21"
			}
		}
	}
	if !found {
		t.Fatalf("no 10.200.88.21 on MAC %s: %+v", mac, ifs)
	}
	if _, err := vm.AgentFileRead(ctx, pvesim.BootFinishedFile); err != nil {
		t.Fatal(err)
	}
	f, err := vm.AgentFileRead(ctx, pvesim.HostKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	hostKey, comment, _, _, err := ssh.ParseAuthorizedKey([]byte(f.Content))
	if err != nil || comment != "root@cp-1" {
		t.Fatalf("host key %q: %v", f.Content, err)
	}

	// The user logs in with the pinned key and has passwordless sudo.
	out, err := sshRun("10.200.88.21", "kthw", signer, hostKey, "hostname; id -un; sudo -n id -u; ip -4 route show default")
	if err != nil {
		t.Fatalf("ssh kthw: %v\n%s", err, out)
	}
	if want := "cp-1\nkthw\n0\ndefault via 10.200.88.1 dev host0"; !strings.HasPrefix(out, want) {
		t.Fatalf("as kthw: %q, want %q...", out, want)
	}
	// root only says whom to log in as (cloud-init's disable_root; the session then sleeps
	// 10s and exits 142: not waited for).
	if line, err := firstLine("10.200.88.21", "root", signer, hostKey, "id -u"); err != nil || line != `Please login as the user "kthw" rather than the user "root".` {
		t.Fatalf("ssh root: %v %q", err, line)
	}

	// Restart: same node, same host key.
	task, err := vm.Stop(ctx)
	waitTask(t, ctx, task, err)
	if info, err := env.Lab.Status(ctx, "pxt-100"); err != nil || info.State != lab.StateStopped {
		t.Fatalf("after stop: %+v %v", info, err)
	}
	task, err = vm.Start(ctx)
	waitTask(t, ctx, task, err)
	if out, err := sshRun("10.200.88.21", "kthw", signer, hostKey, "sudo -n true"); err != nil {
		t.Fatalf("after restart: %v %s", err, out)
	}

	// A VM with ciuser root and ip=dhcp: root has the keys, the address is leased from the
	// lab's range.
	vm2 := cloneStart(t, ctx, n, 101, "root-vm",
		pve.VirtualMachineOption{Name: "ipconfig0", Value: "ip=dhcp"},
		pve.VirtualMachineOption{Name: "ciuser", Value: "root"},
		pve.VirtualMachineOption{Name: "sshkeys", Value: pve.EncodeSSHKeys(pub)})
	st2, _ := env.Sim.VM(101)
	addr := st2.Guest.Interfaces[0].Addresses[0]
	if addr != netip.MustParsePrefix("10.200.88.100/24") {
		t.Fatalf("DHCP lease %s", addr)
	}
	key2, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(st2.Guest.Files[pvesim.HostKeyFile]))
	if out, err := sshRun(addr.Addr().String(), "root", signer, key2, "id -u; hostname"); err != nil || out != "0\nroot-vm\n" {
		t.Fatalf("ssh root on 101: %v %q", err, out)
	}

	// An address off the lab's network fails the start task, saying why.
	vm3 := cloneConfig(t, ctx, n, 102, "off", pve.VirtualMachineOption{Name: "ipconfig0", Value: "ip=192.0.2.5/24"})
	task, err = vm3.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = task.Wait(ctx, 50*time.Millisecond, time.Minute)
	if task.IsSuccessful || !strings.Contains(task.ExitStatus, "not on the lab bridge's network 10.200.88.0/24") {
		t.Fatalf("start off the network: %q", task.ExitStatus)
	}

	// Destroy removes the nodes.
	for _, v := range []*pve.VirtualMachine{vm, vm2} {
		task, err := v.Stop(ctx)
		waitTask(t, ctx, task, err)
		task, err = v.Delete(ctx, &pve.VirtualMachineDeleteOptions{Purge: true})
		waitTask(t, ctx, task, err)
	}
	if nodes, err := env.Lab.List(ctx); err != nil || len(nodes) != 0 {
		t.Fatalf("lab nodes after destroy: %+v %v", nodes, err)
	}
	if _, err := os.Stat(env.LabDir + "/nodes/pxt-100"); !os.IsNotExist(err) {
		t.Fatalf("node directory left: %v", err)
	}
}

// firstLine runs cmd and returns the first line of its output without waiting for its end.
func firstLine(addr, user string, signer ssh.Signer, hostKey ssh.PublicKey, cmd string) (string, error) {
	c, s, err := sshSession(addr, user, signer, hostKey)
	if err != nil {
		return "", err
	}
	defer c.Close()
	r, err := s.StdoutPipe()
	if err != nil {
		return "", err
	}
	if err := s.Start(cmd); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(r).ReadString('\n')
	return strings.TrimSuffix(line, "\n"), err
}
