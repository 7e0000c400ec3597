package pvesim_test

import (
	"strings"
	"testing"
	"time"

	proxmox "github.com/luthermonson/go-proxmox"

	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
)

// TestGuestAgentFollowsImage: a VM whose disk comes from an import image
// without qemu-guest-agent has no answering agent though agent=1, and
// neither have the clones of a template made from it; an image with the
// agent answers. download-url gives a listed image its properties.
func TestGuestAgentFollowsImage(t *testing.T) {
	sim := pvesim.Start(t, pvesim.WithConfig(func(c *pvesim.Config) {
		c.ImportImages = []pvesim.ImportImage{
			{File: "bare.qcow2"},
			{File: "agent.qcow2", GuestAgent: true},
			{File: "fetched.qcow2", Download: true},
		}
	}))
	c := tokenClient(t, sim)
	ctx := ctxT(t)
	node, err := c.Node(ctx, "pve1")
	if err != nil {
		t.Fatal(err)
	}
	local, _ := node.Storage(ctx, "local")
	dl, err := local.DownloadURL(ctx, "import", "fetched.qcow2", "https://example.org/fetched.qcow2")
	mustSucceed(t, ctx, dl, err)
	for i, img := range []string{"bare.qcow2", "agent.qcow2", "fetched.qcow2"} {
		id := 200 + i
		task, err := node.NewVirtualMachine(ctx, id,
			proxmox.VirtualMachineOption{Name: "agent", Value: "enabled=1"},
			proxmox.VirtualMachineOption{Name: "scsi0", Value: "local-lvm:0,import-from=local:import/" + img},
			proxmox.VirtualMachineOption{Name: "ide2", Value: "local-lvm:cloudinit"},
			proxmox.VirtualMachineOption{Name: "net0", Value: "virtio,bridge=vmbr0"},
			proxmox.VirtualMachineOption{Name: "boot", Value: "order=scsi0"})
		mustSucceed(t, ctx, task, err)
	}
	// A template of the bare image, and a clone of it.
	tvm, _ := node.VirtualMachine(ctx, 200)
	task, err := tvm.ConvertToTemplate(ctx)
	mustSucceed(t, ctx, task, err)
	tvm, _ = node.VirtualMachine(ctx, 200)
	_, task, err = tvm.Clone(ctx, &proxmox.VirtualMachineCloneOptions{NewID: 210, Name: "fromtmpl", Full: proxmox.IntOrBool(true)})
	mustSucceed(t, ctx, task, err)

	for id, answers := range map[int]bool{201: true, 202: false, 210: false} {
		vm, err := node.VirtualMachine(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		task, err := vm.Start(ctx)
		mustSucceed(t, ctx, task, err)
		time.Sleep(50 * time.Millisecond) // the agent's delay is 20ms
		err2 := vm.AgentPing(ctx)
		switch {
		case answers && err2 != nil:
			t.Errorf("VM %d: agent ping: %v", id, err2)
		case !answers && (err2 == nil || !strings.Contains(err2.Error(), "QEMU guest agent is not running")):
			t.Errorf("VM %d (image without the agent): agent ping: %v", id, err2)
		}
	}
	if st, _ := sim.VM(210); !st.Guest.NoGuestAgent {
		t.Errorf("clone of the bare template: guest %+v", st.Guest)
	}
}
