package proxmox

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	pve "github.com/luthermonson/go-proxmox"
)

// Template build defaults.
const (
	DefaultImportStorage = "local"
	DefaultDiskStorage   = "local-lvm"
	// TagTemplate marks templates template build made.
	TagTemplate = "kthw-template"
)

// BuildOptions tune a template build.
type BuildOptions struct {
	// VMID is the template's VMID; 0 picks a free one.
	VMID int
	// ImportStorage holds the cloud image, as import content (default
	// local: /var/lib/vz/import on the node).
	ImportStorage string
	// Volume is a volume to import instead of <ImportStorage>:import/<file>,
	// e.g. local:import/my-image.qcow2.
	Volume string

	// For an image without the guest agent (a bake):

	// Address and Gateway are the builder VM's static address for its one
	// boot (ipconfig0); Address is required.
	Address netip.Prefix
	Gateway netip.Addr
	// Baker logs in to the builder VM and does the recipe's bake steps;
	// required.
	Baker Baker
	// ConsoleTimeout bounds the wait for cloud-init's host keys on the
	// serial console (default: the cluster's bootTimeout).
	ConsoleTimeout time.Duration
	// ShutdownTimeout is how long a clean shutdown may take before the VM
	// is stopped (default 2m).
	ShutdownTimeout time.Duration
}

// Baker does a recipe's bake steps inside a running builder VM: it pins
// the host keys read from the VM's console, connects over SSH as the
// cloud-init user with the workspace's key, and installs and cleans.
type Baker interface {
	Bake(ctx context.Context, vm BakeTarget, steps *RecipeBake) error
}

// BakeTarget is the builder VM as the Baker reaches it.
type BakeTarget struct {
	// Host and Port to SSH to, as the user cloud-init made (User) with the
	// key BuildOptions' provider authorizes.
	Host string
	Port int
	User string
	// HostKeys are the VM's SSH host keys, read from its serial console
	// (authorized_keys format): pin them before connecting.
	HostKeys []string
}

// BuildResult is what a template build did.
type BuildResult struct {
	Name string
	VMID int
	Node string
	// Created is false when the template existed already.
	Created bool
	// Downloaded says the cloud image was fetched onto the import storage.
	Downloaded bool
	// Volume is the image the disk was imported from.
	Volume string
	// Baked says the image was booted once to install the guest agent.
	Baked bool
}

const templateMarkerPrefix = "kthw template "

func templateDescription(name, profile, volume string) string {
	return templateMarkerPrefix + name + " (profile " + profile + ")\n" +
		"Built by kthw-controller template build from " + volume + "."
}

// isTemplateBuild reports whether a description is template build's for name.
func isTemplateBuild(desc, name string) bool {
	line, _, _ := strings.Cut(strings.TrimSpace(desc), "\n")
	rest, ok := strings.CutPrefix(line, templateMarkerPrefix)
	return ok && strings.HasPrefix(rest, name+" ")
}

// BuildTemplate creates the provider's VM template from recipe through the
// API alone, the equivalent of
//
//	qm create ID --name NAME --ostype l26 --cores 2 --memory 2048 --agent enabled=1 \
//	  --scsihw virtio-scsi-single --scsi0 STORAGE:0,import-from=IMPORT:import/FILE \
//	  --ide2 STORAGE:cloudinit --serial0 socket --vga serial0 --boot order=scsi0 \
//	  --net0 virtio,bridge=vmbr0
//	qm template ID
//
// A template of that name that exists is left alone (Created false). What a
// failed or killed build left (a VM of that name, not a template, marked by
// template build) is destroyed and built again; a failed build removes its
// VM. The cloud image must be on the import storage, or be one the recipe
// allows downloading.
func (p *Provider) BuildTemplate(ctx context.Context, r *Recipe, o BuildOptions) (BuildResult, error) {
	res := BuildResult{Name: p.template, Node: p.cfg.Node}
	if o.VMID != 0 && (o.VMID < minVMID || o.VMID > maxVMID) {
		return res, fmt.Errorf("VMID %d is outside Proxmox's range %d-%d (--vmid)", o.VMID, minVMID, maxVMID)
	}
	c, err := p.Client(ctx)
	if err != nil {
		return res, err
	}
	if err := p.checkNode(ctx, c); err != nil {
		return res, err
	}
	rs, err := p.clusterAPI(c).Resources(ctx, "vm")
	if err != nil {
		return res, authError("list VMs", err)
	}
	for _, x := range rs {
		if x == nil || x.Type != "qemu" || x.Name != p.template {
			continue
		}
		ref := vmRef{id: int(x.VMID), node: x.Node}
		if x.Template == 1 {
			res.VMID, res.Node = ref.id, ref.node
			return res, nil
		}
		vm, err := p.load(ctx, c, ref)
		if isNotExist(err) {
			continue
		}
		if err != nil {
			return res, authError("read "+ref.String(), err)
		}
		if !isTemplateBuild(vm.VirtualMachineConfig.Description, p.template) {
			return res, fmt.Errorf("a VM named %s exists (VMID %d on %s) and is not a template: rename it, or name the template otherwise with provider.proxmox.template",
				p.template, ref.id, ref.node)
		}
		p.log.WarnContext(ctx, "removing what an earlier template build left", "vmid", ref.id)
		if err := p.destroy(ctx, c, ref); err != nil {
			return res, err
		}
	}

	bake := !r.Image.GuestAgent
	if bake {
		if err := p.checkBake(ctx, r, o); err != nil {
			return res, err
		}
	}
	var free func()
	if o.VMID > 0 {
		ok, err := p.clusterAPI(c).CheckID(ctx, o.VMID)
		if err != nil {
			return res, authError("check VMID", err)
		}
		if !ok {
			return res, fmt.Errorf("VMID %d is taken; choose another with --vmid", o.VMID)
		}
		res.VMID, free = o.VMID, func() {}
	} else if res.VMID, free, err = p.alloc.allocate(ctx, p.clusterAPI(c), 0); err != nil {
		return res, err
	}
	defer free()

	if o.ImportStorage == "" {
		o.ImportStorage = DefaultImportStorage
	}
	vol := o.Volume
	if vol == "" {
		vol = o.ImportStorage + ":import/" + r.Image.File
		if res.Downloaded, err = p.ensureImage(ctx, c, r, o.ImportStorage, vol); err != nil {
			return res, err
		}
	}
	res.Volume = vol

	disk := p.cfg.Storage
	if disk == "" {
		disk = DefaultDiskStorage
	}
	opts := []pve.VirtualMachineOption{
		{Name: "name", Value: p.template},
		{Name: "ostype", Value: r.OSType},
		{Name: "cores", Value: r.Cores},
		{Name: "memory", Value: r.MemoryMiB},
		{Name: "agent", Value: "enabled=1"},
		{Name: "scsihw", Value: "virtio-scsi-single"},
		{Name: "scsi0", Value: disk + ":0,import-from=" + vol},
		{Name: "ide2", Value: disk + ":cloudinit"},
		{Name: "serial0", Value: "socket"},
		{Name: "vga", Value: "serial0"},
		{Name: "boot", Value: "order=scsi0"},
		{Name: "net0", Value: "virtio,bridge=" + p.cfg.Bridge},
		{Name: "tags", Value: TagString([]string{TagTemplate, r.Profile})},
		{Name: "description", Value: templateDescription(p.template, r.Profile, vol)},
	}
	if p.cfg.Pool != "" {
		opts = append(opts, pve.VirtualMachineOption{Name: "pool", Value: p.cfg.Pool})
	}
	ref := vmRef{id: res.VMID, node: p.cfg.Node}
	p.log.InfoContext(ctx, "creating template VM", "name", p.template, "vmid", ref.id, "image", vol)
	task, err := nodeAPI(c, p.cfg.Node).NewVirtualMachine(ctx, ref.id, opts...)
	if err == nil {
		err = p.w.waitTask(ctx, task, p.cfg.TaskTimeout)
	}
	if err != nil {
		err = fmt.Errorf("create template VM %d from %s (is the image there and readable?): %w", ref.id, vol, err)
		return res, p.cleanBuild(ctx, c, ref, err)
	}
	if bake {
		if err := p.bake(ctx, c, ref, r, o); err != nil {
			return res, p.cleanBuild(ctx, c, ref, err)
		}
		res.Baked = true
	}
	task, err = handle(c, ref).ConvertToTemplate(ctx)
	if err == nil {
		err = p.w.waitTask(ctx, task, p.cfg.TaskTimeout)
	}
	if err != nil {
		return res, p.cleanBuild(ctx, c, ref, fmt.Errorf("convert VM %d to a template: %w", ref.id, err))
	}
	res.Created = true
	return res, nil
}

// cleanBuild removes a failed build's VM, if it made one, and returns why
// the build failed.
func (p *Provider) cleanBuild(ctx context.Context, c *pve.Client, r vmRef, cause error) error {
	ctx = context.WithoutCancel(ctx)
	vm, err := p.waitUnlocked(ctx, c, r)
	if isNotExist(err) {
		return cause
	}
	if err != nil {
		return errors.Join(cause, err)
	}
	if !isTemplateBuild(vm.VirtualMachineConfig.Description, p.template) {
		return cause
	}
	if err := p.destroy(ctx, c, r); err != nil {
		return errors.Join(cause, fmt.Errorf("remove the half-built VM %d: %w", r.id, err))
	}
	return cause
}

// ensureImage checks the cloud image is on the import storage and, where
// the recipe allows, downloads it there (download-url).
func (p *Provider) ensureImage(ctx context.Context, c *pve.Client, r *Recipe, storage, vol string) (bool, error) {
	n := nodeAPI(c, p.cfg.Node)
	st, err := n.Storage(ctx, storage)
	if err != nil {
		return false, authError("import storage "+storage+" on "+p.cfg.Node, err)
	}
	content, err := st.GetContent(ctx)
	if err != nil {
		return false, authError("list import storage "+storage, err)
	}
	for _, x := range content {
		if x != nil && x.Volid == vol {
			return false, nil
		}
	}
	if !r.Image.Download {
		return false, fmt.Errorf("the cloud image %s is not on storage %s of %s: put it there as import content (from %s), or give --volume",
			r.Image.File, storage, p.cfg.Node, r.Image.URL)
	}
	p.log.InfoContext(ctx, "downloading the cloud image onto the import storage", "url", r.Image.URL, "storage", storage)
	upid, err := n.StorageDownloadURL(ctx, &pve.StorageDownloadURLOptions{
		Storage: storage, Content: "import", Filename: r.Image.File, URL: r.Image.URL,
	})
	if err != nil {
		return false, authError("download "+r.Image.URL+" to "+storage, err)
	}
	if err := p.w.waitTask(ctx, pve.NewTask(pve.UPID(upid), c), p.cfg.TaskTimeout); err != nil {
		return false, fmt.Errorf("download %s to %s: %w", r.Image.URL, storage, err)
	}
	return true, nil
}
