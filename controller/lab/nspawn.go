package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Files in a node's directory.
const (
	pidFile    = "nspawn.pid"
	consoleLog = "console.log"
	nodeLock   = "lock"
	upperDir   = "upper"
	workDir    = "work"
	mergedDir  = "root"
	// dataDir holds the node's directories that must not live on its
	// overlay root: containerd's overlayfs snapshotter cannot use an overlay
	// as its upper layer, so /var/lib/containerd is bound from here.
	dataDir     = "data"
	nspawnProg  = "systemd-nspawn"
	sshReadyMsg = "SSH-"
	// nspawnPropagateDir holds a directory per running machine on the host.
	nspawnPropagateDir = "/run/systemd/nspawn/propagate"
)

// nspawnArgs renders the systemd-nspawn command line for a node. The host's PID 1 is not
// systemd: --register=no --keep-unit keep nspawn away from machined and the host's units.
// SYSTEMD_NSPAWN_API_VFS_WRITABLE is never set, so /proc/sys stays read-only except
// /proc/sys/net, which a private network namespace makes writable.
func (l *Lab) nspawnArgs(name, root string) []string {
	return []string{
		"--boot",
		"--directory=" + root,
		"--machine=" + name,
		"--network-bridge=" + l.cfg.Bridge,
		"--register=no",
		"--keep-unit",
		"--console=passive",
		"--link-journal=no",
		"--resolv-conf=off",
		"--timezone=off",
		// containerd inside: all capabilities, the keyring syscalls, the kernel log.
		"--capability=all",
		"--system-call-filter=add_key keyctl request_key",
		"--bind=/dev/kmsg",
		"--bind=" + filepath.Join(filepath.Dir(root), dataDir, "containerd") + ":/var/lib/containerd",
	}
}

// dataBinds are the node's data directories (see dataDir), created before
// a boot.
var dataBinds = []string{"containerd"}

// nspawnEnv is the environment for systemd-nspawn: ours without SYSTEMD_NSPAWN_* settings
// (SYSTEMD_NSPAWN_API_VFS_WRITABLE would let a node write the host's global sysctls).
func nspawnEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "SYSTEMD_NSPAWN_") && !strings.HasPrefix(e, "NOTIFY_SOCKET=") {
			env = append(env, e)
		}
	}
	return env
}

// spawn starts systemd-nspawn for a node, detached (own session, console to console.log), and
// records its PID.
func (l *Lab) spawn(name, dir string) (int, error) {
	for _, d := range dataBinds {
		if err := os.MkdirAll(filepath.Join(dir, dataDir, d), 0o711); err != nil {
			return 0, fmt.Errorf("start node %s: %w", name, err)
		}
	}
	logPath := filepath.Join(dir, consoleLog)
	_ = os.Rename(logPath, logPath+".1") // keep the previous boot's console for post-mortems
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return 0, fmt.Errorf("start node %s: %w", name, err)
	}
	defer logf.Close()
	cmd := exec.Command(l.cfg.Nspawn, l.nspawnArgs(name, filepath.Join(dir, mergedDir))...)
	cmd.Dir = "/"
	cmd.Env = nspawnEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start node %s: %w", name, err)
	}
	pid := cmd.Process.Pid
	go cmd.Wait() //nolint:errcheck // reap it when it exits while we live; status is read from /proc
	if err := writePIDFile(filepath.Join(dir, pidFile), pid); err != nil {
		_ = signal(pid, syscall.SIGKILL)
		return 0, fmt.Errorf("start node %s: %w", name, err)
	}
	return pid, nil
}

// isOurNspawn reports whether pid is the live systemd-nspawn of the node whose tree is root.
func isOurNspawn(pid int, root string) bool {
	return pid > 0 && alive(pid) && isProgram(cmdline(pid), nspawnProg, "--directory="+root)
}

// leaderOf returns the container's PID 1 (in our PID namespace): systemd-nspawn's child that
// is the init of a new PID namespace.
func leaderOf(nspawnPID int) (int, error) {
	for _, c := range children(nspawnPID) {
		if nsPID1(c) {
			return c, nil
		}
	}
	return 0, fmt.Errorf("find container init of systemd-nspawn %d: none", nspawnPID)
}

// waitSSH waits until the node's sshd sends its banner, the node's nspawn exits, or the boot
// timeout passes.
func (l *Lab) waitSSH(ctx context.Context, name string, pid int, addr netip.Addr, logPath string) error {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.BootTimeout)
	defer cancel()
	target := netip.AddrPortFrom(addr, 22).String()
	var last error
	for {
		if !alive(pid) {
			return fmt.Errorf("boot node %s: systemd-nspawn exited\n%s", name, tailFile(logPath, 30))
		}
		if last = sshBanner(ctx, target); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("boot node %s: sshd on %s did not answer within %s (last: %v)\n%s",
				name, target, l.cfg.BootTimeout, last, tailFile(logPath, 30))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// sshBanner connects to target and reads the SSH identification line.
func sshBanner(ctx context.Context, target string) error {
	d := net.Dialer{Timeout: 500 * time.Millisecond}
	c, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, len(sshReadyMsg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("read ssh banner: %w", err)
	}
	if string(buf) != sshReadyMsg {
		return fmt.Errorf("read ssh banner: got %q", buf)
	}
	return nil
}
