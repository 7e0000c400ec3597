package module

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"github.com/kthw/kthw/agent/facts"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

var _ Module = (*Hostname)(nil)

// The lines that delimit kthw's block in /etc/hosts.
const (
	HostsBegin = "# BEGIN kthw"
	HostsEnd   = "# END kthw"
)

const (
	hostnamePath = "/etc/hostname"
	hostsPath    = "/etc/hosts"
	// maxHostname is the kernel's HOST_NAME_MAX.
	maxHostname = 64
)

// Hostname sets the host name, in /etc/hostname and on the running system,
// and manages kthw's marked block in /etc/hosts, leaving the rest of that
// file alone. Where systemd runs, the running name is set through
// systemd-hostnamed (D-Bus), else with sethostname(2). An empty host name
// leaves the name alone and manages only the hosts block.
type Hostname struct {
	hostname string
	hosts    []*agentv1.HostnameModule_Host

	// current returns the running host name; set changes it. Tests
	// replace both: the running name is the kernel's, not under Root.
	current func() (string, error)
	set     func(ctx context.Context, env *Env, name string) error
}

// NewHostname validates m and returns the module that applies it.
func NewHostname(m *agentv1.HostnameModule) (*Hostname, error) {
	h := &Hostname{hostname: m.GetHostname(), hosts: m.GetHosts(), current: os.Hostname, set: setRunningHostname}
	if h.hostname != "" && (len(h.hostname) > maxHostname || !validDNSName(h.hostname)) {
		return nil, fmt.Errorf("%w: host name %q is not a valid name of at most %d characters", ErrInvalid, h.hostname, maxHostname)
	}
	for _, e := range h.hosts {
		if _, err := netip.ParseAddr(e.GetAddress()); err != nil {
			return nil, fmt.Errorf("%w: hosts entry address %q: %v", ErrInvalid, e.GetAddress(), err)
		}
		if len(e.GetNames()) == 0 {
			return nil, fmt.Errorf("%w: hosts entry %s has no names", ErrInvalid, e.GetAddress())
		}
		for _, n := range e.GetNames() {
			if !validDNSName(n) {
				return nil, fmt.Errorf("%w: hosts entry %s: name %q", ErrInvalid, e.GetAddress(), n)
			}
		}
	}
	if h.hostname == "" && len(h.hosts) == 0 {
		return nil, fmt.Errorf("%w: neither a host name nor hosts entries", ErrInvalid)
	}
	return h, nil
}

// validDNSName reports whether s is a DNS name of RFC 1123 labels.
func validDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// hostsBlock renders kthw's block of /etc/hosts ("" without entries).
func (h *Hostname) hostsBlock() string {
	if len(h.hosts) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString(HostsBegin + "\n")
	for _, e := range h.hosts {
		fmt.Fprintf(&b, "%s\t%s\n", e.GetAddress(), strings.Join(e.GetNames(), " "))
	}
	b.WriteString(HostsEnd + "\n")
	return b.String()
}

// withHostsBlock returns cur with kthw's block replaced by block (removed
// when block is ""), or block appended when cur has none.
func withHostsBlock(cur, block string) (string, error) {
	lines := strings.SplitAfter(cur, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	begin, end := -1, -1
	for i, l := range lines {
		switch strings.TrimSpace(l) {
		case HostsBegin:
			if begin >= 0 {
				return "", fmt.Errorf("two %q lines", HostsBegin)
			}
			begin = i
		case HostsEnd:
			if begin < 0 || end >= 0 {
				return "", fmt.Errorf("%q without a %q before it", HostsEnd, HostsBegin)
			}
			end = i
		}
	}
	switch {
	case begin >= 0 && end < 0:
		return "", fmt.Errorf("%q without a %q after it", HostsBegin, HostsEnd)
	case begin >= 0:
		return strings.Join(lines[:begin], "") + block + strings.Join(lines[end+1:], ""), nil
	case block == "":
		return cur, nil
	case cur != "" && !strings.HasSuffix(cur, "\n"):
		return cur + "\n" + block, nil
	default:
		return cur + block, nil
	}
}

// hostnamePlan is what Hostname would change.
type hostnamePlan struct {
	running   string
	setName   bool
	hostsFile managedFile
}

func (h *Hostname) plan(env *Env) (*hostnamePlan, error) {
	p := &hostnamePlan{}
	if h.hostname != "" {
		cur, err := h.current()
		if err != nil {
			return nil, fmt.Errorf("read the running host name: %w", err)
		}
		p.running, p.setName = cur, cur != h.hostname
	}
	b, err := os.ReadFile(env.Path(hostsPath))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", hostsPath, err)
	}
	hosts, err := withHostsBlock(string(b), h.hostsBlock())
	if err != nil {
		return nil, fmt.Errorf("update kthw's block in %s: %w", hostsPath, err)
	}
	p.hostsFile = managedFile{path: hostsPath, content: []byte(hosts)}
	return p, nil
}

// Check reports the host name change and the file diffs.
func (h *Hostname) Check(ctx context.Context, env *Env) (Result, error) {
	return h.run(ctx, env, false)
}

// Apply sets the host name and writes /etc/hostname and /etc/hosts.
func (h *Hostname) Apply(ctx context.Context, env *Env) (Result, error) {
	return h.run(ctx, env, true)
}

func (h *Hostname) run(ctx context.Context, env *Env, apply bool) (Result, error) {
	p, err := h.plan(env)
	if err != nil {
		return Result{}, err
	}
	var d diffBuilder
	res := Result{}
	if p.setName {
		res.Changed = true
		d.line(fmt.Sprintf("running host name: %s -> %s", p.running, h.hostname))
		if apply {
			// systemd-hostnamed writes /etc/hostname too; the file
			// module below then finds it right.
			if err := h.set(ctx, env, h.hostname); err != nil {
				return Result{}, fmt.Errorf("set host name %s: %w", h.hostname, err)
			}
			env.info("set the running host name to " + h.hostname)
		}
	}
	files := []managedFile{p.hostsFile}
	if h.hostname != "" {
		files = append([]managedFile{{path: hostnamePath, content: []byte(h.hostname + "\n")}}, files...)
	}
	for _, f := range files {
		fr, err := syncFile(ctx, env, f, apply)
		if err != nil {
			return Result{}, err
		}
		res.Changed = res.Changed || fr.Changed
		d.add(fr.Diff)
	}
	if res.Changed {
		res.Diff = d.String()
	}
	return res, nil
}

// setRunningHostname sets the kernel's host name: through systemd-hostnamed
// where systemd runs (so it and its clients see the change; it also writes
// /etc/hostname), and with sethostname(2) when hostnamed is not there or left
// the name unchanged (it does when /etc/hostname already has the name).
func setRunningHostname(ctx context.Context, env *Env, name string) error {
	if env.Root != "" {
		return fmt.Errorf("refusing to set the host name of the machine with a root prefix (%s)", env.Root)
	}
	if facts.SystemdRunning("") == nil {
		if err := hostnamedSetStatic(ctx, name); err != nil {
			env.info("systemd-hostnamed: " + err.Error() + "; setting the host name directly")
		}
	}
	if cur, err := os.Hostname(); err == nil && cur == name {
		return nil
	}
	if err := unix.Sethostname([]byte(name)); err != nil {
		return fmt.Errorf("sethostname: %w", err)
	}
	return nil
}

// hostnamedSetStatic asks systemd-hostnamed (started on demand by D-Bus) to
// set the static host name, which it writes to /etc/hostname and makes the
// running one.
func hostnamedSetStatic(ctx context.Context, name string) error {
	conn, err := dbus.SystemBusPrivate(dbus.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("connect to the system bus: %w", err)
	}
	defer conn.Close()
	// EXTERNAL with the numeric uid, as go-systemd does: no user lookup.
	if err := conn.Auth([]dbus.Auth{dbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
		return fmt.Errorf("authenticate on the system bus: %w", err)
	}
	if err := conn.Hello(); err != nil {
		return fmt.Errorf("hello on the system bus: %w", err)
	}
	obj := conn.Object("org.freedesktop.hostname1", "/org/freedesktop/hostname1")
	if err := obj.CallWithContext(ctx, "org.freedesktop.hostname1.SetStaticHostname", 0, name, false).Err; err != nil {
		return fmt.Errorf("SetStaticHostname: %w", err)
	}
	return nil
}
