package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/renameio/v2"
)

const acngProg = "apt-cacher-ng"

// ProxyURL is the apt proxy as the nodes reach it, on the bridge address.
func (l *Lab) ProxyURL() string {
	return "http://" + netip.AddrPortFrom(l.Gateway(), uint16(l.cfg.ProxyPort)).String()
}

// Proxy directories below Dir/proxy.
func (l *Lab) proxyConfDir() string { return filepath.Join(l.proxyDir(), "conf") }
func (l *Lab) proxyRunDir() string  { return filepath.Join(l.proxyDir(), "run") }
func (l *Lab) proxyPIDFile() string { return filepath.Join(l.proxyRunDir(), "apt-cacher-ng.pid") }

// EnsureProxy starts the lab's apt-cacher-ng when it does not run: one process for all nodes,
// with its own configuration, cache and logs under Dir/proxy, listening on 127.0.0.1 and the
// bridge address at Config.ProxyPort, fetching from the same mirrors as the host. A pid file
// whose process is gone or is not our apt-cacher-ng is stale and replaced. The bridge must
// exist.
func (l *Lab) EnsureProxy(ctx context.Context) error {
	if err := os.MkdirAll(l.proxyRunDir(), 0o755); err != nil {
		return fmt.Errorf("start apt proxy: %w", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(l.proxyDir(), "lock"))
	if err != nil {
		return fmt.Errorf("start apt proxy: %w", err)
	}
	defer unlock()

	pid, err := readPIDFile(l.proxyPIDFile())
	if err != nil {
		return fmt.Errorf("start apt proxy: %w", err)
	}
	if l.isOurProxy(pid) {
		if err := l.waitProxy(ctx, pid, 10*time.Second); err == nil {
			return nil
		}
		l.log.WarnContext(ctx, "apt proxy does not answer; restarting it", "pid", pid)
		if err := l.stopProxy(ctx, pid); err != nil {
			return err
		}
	} else if pid != 0 {
		l.log.InfoContext(ctx, "removing a stale apt proxy pid file", "pid", pid)
	}
	_ = os.Remove(l.proxyPIDFile())

	if err := l.checkBridge(); err != nil {
		return fmt.Errorf("start apt proxy: %w", err)
	}
	if err := l.checkProxyPortFree(); err != nil {
		return fmt.Errorf("start apt proxy: %w", err)
	}
	r, archives, err := l.recipe()
	if err != nil {
		return fmt.Errorf("start apt proxy: %w", err)
	}
	if err := l.writeProxyConf(r, archives); err != nil {
		return fmt.Errorf("start apt proxy: %w", err)
	}
	logDir := filepath.Join(l.proxyDir(), "log")
	outPath := filepath.Join(logDir, "apt-cacher-ng.out")
	out, err := os.OpenFile(outPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("start apt proxy: %w", err)
	}
	defer out.Close()
	cmd := exec.Command(l.cfg.AptCacherNg, "-c", l.proxyConfDir(), "ForeGround=1")
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start apt proxy: %w", err)
	}
	pid = cmd.Process.Pid
	go cmd.Wait() //nolint:errcheck // reap it if it exits while we live
	if err := writePIDFile(l.proxyPIDFile(), pid); err != nil {
		_ = signal(pid, syscall.SIGKILL)
		return fmt.Errorf("start apt proxy: %w", err)
	}
	if err := l.waitProxy(ctx, pid, 15*time.Second); err != nil {
		_ = l.stopProxy(context.WithoutCancel(ctx), pid)
		return fmt.Errorf("start apt proxy: %w\n%s\n%s", err, tailFile(outPath, 10),
			tailFile(filepath.Join(logDir, "apt-cacher.err"), 10))
	}
	l.log.InfoContext(ctx, "apt proxy started", "pid", pid, "url", l.ProxyURL())
	return nil
}

// StopProxy stops the lab's apt-cacher-ng by the PID in its pid file. Not running is fine; a
// stale pid file is removed.
func (l *Lab) StopProxy(ctx context.Context) error {
	if !isDir(l.proxyDir()) {
		return nil
	}
	unlock, err := lockFile(ctx, filepath.Join(l.proxyDir(), "lock"))
	if err != nil {
		return fmt.Errorf("stop apt proxy: %w", err)
	}
	defer unlock()
	pid, err := readPIDFile(l.proxyPIDFile())
	if err != nil {
		_ = os.Remove(l.proxyPIDFile())
		return nil
	}
	return l.stopProxy(ctx, pid)
}

func (l *Lab) stopProxy(ctx context.Context, pid int) error {
	if l.isOurProxy(pid) {
		if err := signal(pid, syscall.SIGTERM); err != nil {
			return fmt.Errorf("stop apt proxy: %w", err)
		}
		if !waitGone(ctx, pid, 10*time.Second) {
			_ = signal(pid, syscall.SIGKILL)
			if !waitGone(ctx, pid, 5*time.Second) {
				return fmt.Errorf("stop apt proxy: pid %d does not exit", pid)
			}
		}
		l.log.InfoContext(ctx, "apt proxy stopped", "pid", pid)
	}
	if err := os.Remove(l.proxyPIDFile()); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("stop apt proxy: %w", err)
	}
	return nil
}

// ProxyPID returns the running proxy's PID, 0 when it does not run.
func (l *Lab) ProxyPID() int {
	pid, err := readPIDFile(l.proxyPIDFile())
	if err != nil || !l.isOurProxy(pid) {
		return 0
	}
	return pid
}

func (l *Lab) isOurProxy(pid int) bool {
	return pid > 0 && alive(pid) && isProgram(cmdline(pid), acngProg, l.proxyConfDir())
}

// checkProxyPortFree fails when something else listens on the proxy's port: a system
// apt-cacher-ng on 0.0.0.0:3142 would answer in our place.
func (l *Lab) checkProxyPortFree() error {
	for _, a := range l.proxyAddrs() {
		ln, err := net.Listen("tcp", a.String())
		if err != nil {
			return fmt.Errorf("port %d is taken (%v): stop what listens there or set another proxy port", a.Port(), err)
		}
		ln.Close()
	}
	return nil
}

func (l *Lab) proxyAddrs() []netip.AddrPort {
	port := uint16(l.cfg.ProxyPort)
	return []netip.AddrPort{
		netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port),
		netip.AddrPortFrom(l.Gateway(), port),
	}
}

// waitProxy waits until the proxy answers on 127.0.0.1 and the bridge address.
func (l *Lab) waitProxy(ctx context.Context, pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	targets := l.proxyAddrs()
	for {
		if !alive(pid) {
			return fmt.Errorf("apt-cacher-ng (pid %d) exited", pid)
		}
		var err error
		for _, t := range targets {
			var c net.Conn
			if c, err = net.DialTimeout("tcp", t.String(), 500*time.Millisecond); err != nil {
				break
			}
			c.Close()
		}
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("apt-cacher-ng does not answer: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// writeProxyConf writes acng.conf and the backends files. Each backends file names the host's
// URI of its archive: apt-cacher-ng's default Debian mirror list answered 503 here.
func (l *Lab) writeProxyConf(r *Recipe, archives []ResolvedArchive) error {
	conf := l.proxyConfDir()
	for _, d := range []string{conf, filepath.Join(l.proxyDir(), "cache"), filepath.Join(l.proxyDir(), "log")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	files := proxyConfFiles(l.proxyDir(), l.Gateway(), l.cfg.ProxyPort, r, archives)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := renameio.WriteFile(filepath.Join(conf, n), []byte(files[n]), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// proxyConfFiles renders apt-cacher-ng's configuration directory.
func proxyConfFiles(dir string, bridge netip.Addr, port int, r *Recipe, archives []ResolvedArchive) map[string]string {
	var b strings.Builder
	b.WriteString("# Written by kthw: apt-cacher-ng for the lab's nodes. Regenerated on every start.\n")
	for _, kv := range [][2]string{
		{"CacheDir", filepath.Join(dir, "cache")},
		{"LogDir", filepath.Join(dir, "log")},
		{"SupportDir", "/usr/lib/apt-cacher-ng"},
		{"Port", strconv.Itoa(port)},
		{"BindAddress", "127.0.0.1 " + bridge.String()},
		{"PidFile", filepath.Join(dir, "run", "apt-cacher-ng.pid")},
		{"SocketPath", filepath.Join(dir, "run", "apt-cacher-ng.socket")},
		{"ReportPage", "acng-report.html"},
		{"ExThreshold", "4"},
	} {
		fmt.Fprintf(&b, "%s: %s\n", kv[0], kv[1])
	}
	for _, line := range r.Proxy.Remap {
		b.WriteString(line + "\n")
	}
	files := map[string]string{"acng.conf": b.String()}
	byName := map[string]string{}
	for _, a := range archives {
		byName[a.Name] = a.URI
	}
	for file, archive := range r.Proxy.Backends {
		files[file] = byName[archive] + "/\n"
	}
	return files
}
