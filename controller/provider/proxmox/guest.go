package proxmox

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	pve "github.com/luthermonson/go-proxmox"
	"golang.org/x/crypto/ssh"
)

// Files read through the guest agent.
const (
	// BootFinishedFile appears when cloud-init's last stage is done: the
	// SSH host keys are the instance's own then, not the image's.
	BootFinishedFile = "/var/lib/cloud/instance/boot-finished"
	// HostKeyFile is the SSH host key kthw pins.
	HostKeyFile = "/etc/ssh/ssh_host_ed25519_key.pub"
)

// guest is what a booted VM reports through its guest agent.
type guest struct {
	addr    netip.Addr
	hostKey string // authorized_keys format; "" when it could not be read
}

// waitGuest waits, while the VM runs, for its guest agent to report want on
// the NIC whose MAC is net0's, then for cloud-init to finish, and reads the
// SSH host key. The agent starts late, reports link-local and DHCP
// addresses first and other NICs later on: only the configured address on
// net0 counts.
func (p *Provider) waitGuest(ctx context.Context, c *pve.Client, r vmRef, mac string, want netip.Addr) (guest, error) {
	deadline := p.o.Clock.Now().Add(p.cfg.BootTimeout)
	vm := handle(c, r)
	var (
		iv       time.Duration
		lastErr  error
		lastSeen []netip.Addr
	)
	for {
		ifaces, err := vm.AgentGetNetworkIFaces(ctx)
		switch {
		case err == nil:
			lastErr = nil
			lastSeen = GuestAddresses(ifaces, mac)
			if slices.Contains(lastSeen, want) {
				return p.waitCloudInit(ctx, vm, r, want, deadline)
			}
		case ctx.Err() != nil:
			return guest{}, ctx.Err()
		case agentNotConfigured(err):
			return guest{}, fmt.Errorf("%w: %s has no QEMU guest agent configured (agent=1)", ErrBoot, r)
		case isUnauthorized(err):
			return guest{}, authError("ask the guest agent of "+r.String(), err)
		case isNotExist(err):
			return guest{}, fmt.Errorf("%w: %s vanished while booting", ErrBoot, r)
		default:
			lastErr = err
			if strings.Contains(msgOf(err), "is not running") && !strings.Contains(msgOf(err), "agent is not running") {
				// The VM itself is not running: confirm, and stop
				// waiting if so.
				if cur, lerr := p.load(ctx, c, r); lerr == nil && cur.Status != pve.StatusVirtualMachineRunning {
					return guest{}, fmt.Errorf("%w: %s is %s: it stopped while booting; see its console (qm terminal %d)", ErrBoot, r, cur.Status, r.id)
				}
			}
		}
		if !p.o.Clock.Now().Before(deadline) {
			switch {
			case len(lastSeen) > 0:
				return guest{}, fmt.Errorf("%w: %s reports %s on net0 (MAC %s), not the configured %s, after %s: is the template's cloud-init (NoCloud) working?",
					ErrBoot, r, joinAddrs(lastSeen), mac, want, p.cfg.BootTimeout)
			case lastErr != nil:
				return guest{}, fmt.Errorf("%w: the guest agent of %s did not answer within %s (%v): the template needs qemu-guest-agent installed and enabled",
					ErrBoot, r, p.cfg.BootTimeout, lastErr)
			}
			return guest{}, fmt.Errorf("%w: %s reports no IPv4 address on net0 (MAC %s) after %s", ErrBoot, r, mac, p.cfg.BootTimeout)
		}
		iv = p.w.interval(iv)
		if err := p.o.Clock.Sleep(ctx, iv); err != nil {
			return guest{}, err
		}
	}
}

// waitCloudInit waits for cloud-init's boot-finished file and reads the
// host key. A guest agent that cannot read files (an older Proxmox, an
// agent that blocks guest-file-*) leaves the key unknown: the first
// connection then needs --accept-new.
func (p *Provider) waitCloudInit(ctx context.Context, vm *pve.VirtualMachine, r vmRef, addr netip.Addr, deadline time.Time) (guest, error) {
	g := guest{addr: addr}
	var iv time.Duration
	for {
		_, err := vm.AgentFileRead(ctx, BootFinishedFile)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return g, ctx.Err()
		}
		if agentUnsupported(err) {
			p.log.WarnContext(ctx, "the guest agent cannot read files; the host key is not pinned (connect with --accept-new)", "vmid", r.id, "error", err)
			return g, nil
		}
		if !p.o.Clock.Now().Before(deadline) {
			return g, fmt.Errorf("%w: cloud-init has not finished on %s after %s (no %s): see /var/log/cloud-init.log on the VM",
				ErrBoot, r, p.cfg.BootTimeout, BootFinishedFile)
		}
		iv = p.w.interval(iv)
		if err := p.o.Clock.Sleep(ctx, iv); err != nil {
			return g, err
		}
	}
	f, err := vm.AgentFileRead(ctx, HostKeyFile)
	if err != nil {
		p.log.WarnContext(ctx, "cannot read the SSH host key through the guest agent; not pinned (connect with --accept-new)", "vmid", r.id, "error", err)
		return g, nil
	}
	key, err := ParseHostKey(f.Content)
	if err != nil {
		p.log.WarnContext(ctx, "the VM's SSH host key does not parse; not pinned", "vmid", r.id, "error", err)
		return g, nil
	}
	g.hostKey = key
	return g, nil
}

// ParseHostKey turns the content of a .pub host key file into the
// authorized_keys form the controller pins ("ssh-ed25519 AAAA...", no
// comment).
func ParseHostKey(content string) (string, error) {
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(content))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))), nil
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}
