package module

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"testing"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

func newSysctl(t *testing.T, values map[string]string) *Sysctl {
	t.Helper()
	s, err := NewSysctl(&agentv1.SysctlModule{Values: values})
	if err != nil {
		t.Fatalf("NewSysctl: %v", err)
	}
	return s
}

func TestSysctlApply(t *testing.T) {
	env := newRecorder(t, "")
	if err := os.MkdirAll(env.Path("/etc/sysctl.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	env.write(t, "/proc/sys/net/ipv4/ip_forward", "0\n", 0o644)
	env.write(t, "/proc/sys/net/ipv4/tcp_rmem", "4096\t131072\t6291456\n", 0o644)
	env.write(t, "/proc/sys/net/bridge/bridge-nf-call-iptables", "1\n", 0o644)
	env.write(t, "/proc/sys/net/ipv4/conf/eth0.100/rp_filter", "2\n", 0o644)
	s := newSysctl(t, map[string]string{
		"net.ipv4.ip_forward":                 "1",
		"net.ipv4.tcp_rmem":                   "4096 131072   6291456", // equal after normalization
		"net.bridge.bridge-nf-call-iptables":  "1",
		"net.ipv4.conf.eth0/100.rp_filter":    "1",
		"net/ipv4/conf/eth0.100/accept_local": "1",
	})
	env.write(t, "/proc/sys/net/ipv4/conf/eth0.100/accept_local", "1\n", 0o644)

	res := prepRun(t, "Check", s.Check, &env.Env)
	if !res.Changed {
		t.Fatal("Check: no change")
	}
	if got := env.readFile(t, "/proc/sys/net/ipv4/ip_forward"); got != "0\n" {
		t.Fatalf("Check changed ip_forward to %q", got)
	}
	t.Run("check", func(t *testing.T) { prepGolden(t, res.Diff) })

	res = prepRun(t, "Apply", s.Apply, &env.Env)
	if !res.Changed {
		t.Fatal("Apply: no change")
	}
	t.Run("apply", func(t *testing.T) { prepGolden(t, res.Diff) })
	t.Run("file", func(t *testing.T) { prepGolden(t, env.readFile(t, DefaultSysctlFile)) })
	for path, want := range map[string]string{
		"/proc/sys/net/ipv4/ip_forward":              "1\n",
		"/proc/sys/net/ipv4/conf/eth0.100/rp_filter": "1\n",
		"/proc/sys/net/ipv4/tcp_rmem":                "4096\t131072\t6291456\n", // untouched
	} {
		if got := env.readFile(t, path); got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}

	for _, run := range []func(context.Context, *Env) (Result, error){s.Check, s.Apply} {
		if res := prepRun(t, "second run", run, &env.Env); res.Changed || res.Diff != "" {
			t.Errorf("second run = %+v, want unchanged", res)
		}
	}
}

func TestSysctlReadOnly(t *testing.T) {
	env := newRecorder(t, "")
	env.write(t, "/proc/sys/kernel/pid_max", "4194304\n", 0o644)
	env.write(t, "/proc/sys/vm/overcommit_memory", "1\n", 0o644)
	env.write(t, "/proc/sys/net/ipv4/ip_forward", "0\n", 0o644)
	s := newSysctl(t, map[string]string{
		"kernel.pid_max":       "65536",
		"vm.overcommit_memory": "1", // read-only too, but already right
		"net.ipv4.ip_forward":  "1",
	})
	// Root may write any file; a read-only /proc/sys is simulated, except
	// for net.*, as on a lab node.
	s.procWritable = func(path string) error {
		if !strings.Contains(path, "/proc/sys/net/") {
			return syscall.EROFS
		}
		return nil
	}
	s.writeProc = func(path string, value []byte) error {
		if err := s.procWritable(path); err != nil {
			return &fs.PathError{Op: "open", Path: path, Err: err}
		}
		return writeProcFile(path, value)
	}
	res := prepRun(t, "Check", s.Check, &env.Env)
	if want := "sysctl kernel.pid_max: 4194304 -> 65536 (/proc/sys/kernel/pid_max is read-only on this node: apply will fail)\nsysctl net.ipv4.ip_forward: 0 -> 1\n"; !strings.HasPrefix(res.Diff, want) {
		t.Errorf("Check diff:\n%s\nwant it to start with\n%s", res.Diff, want)
	}
	res, err := s.Apply(context.Background(), &env.Env)
	if !errors.Is(err, ErrSysctlReadOnly) {
		t.Fatalf("Apply: err = %v, want ErrSysctlReadOnly", err)
	}
	msg := err.Error()
	for _, want := range []string{"kernel.pid_max", "65536", "/proc/sys/kernel/pid_max", "4194304", "read-only file system"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if strings.Contains(msg, "overcommit") {
		t.Errorf("error %q blames a key that is already right", msg)
	}
	if !res.Changed || !strings.Contains(res.Diff, "sysctl net.ipv4.ip_forward: 0 -> 1") {
		t.Errorf("result = %+v, want the net key applied", res)
	}
	if got := env.readFile(t, "/proc/sys/net/ipv4/ip_forward"); got != "1\n" {
		t.Errorf("ip_forward = %q", got)
	}
	if !strings.Contains(env.readFile(t, DefaultSysctlFile), "kernel.pid_max = 65536\n") {
		t.Error("the file does not persist kernel.pid_max")
	}
}

func TestSysctlMissingKey(t *testing.T) {
	env := newRecorder(t, "")
	s := newSysctl(t, map[string]string{"net.bridge.bridge-nf-call-iptables": "1"})
	res := prepRun(t, "Check", s.Check, &env.Env)
	if !res.Changed || !strings.Contains(res.Diff, "not in /proc/sys/net/bridge/bridge-nf-call-iptables yet") {
		t.Errorf("Check = %+v", res)
	}
	_, err := s.Apply(context.Background(), &env.Env)
	if err == nil || !strings.Contains(err.Error(), "net.bridge.bridge-nf-call-iptables") || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("Apply: err = %v, want a missing key error", err)
	}
}

func TestSysctlKernelKeepsOtherValue(t *testing.T) {
	env := newRecorder(t, "")
	env.write(t, "/proc/sys/net/core/somaxconn", "128\n", 0o644)
	s := newSysctl(t, map[string]string{"net.core.somaxconn": "99999999"})
	s.writeProc = func(path string, value []byte) error { return writeProcFile(path, []byte("65535\n")) }
	if _, err := s.Apply(context.Background(), &env.Env); err == nil || !strings.Contains(err.Error(), "the kernel kept 65535") {
		t.Errorf("Apply: err = %v, want the clamped value reported", err)
	}
}

func TestSysctlProcPath(t *testing.T) {
	for key, want := range map[string]string{
		"net.ipv4.ip_forward":                 "/proc/sys/net/ipv4/ip_forward",
		"net.ipv4.conf.eth0/100.rp_filter":    "/proc/sys/net/ipv4/conf/eth0.100/rp_filter",
		"net/ipv4/conf/eth0.100/rp_filter":    "/proc/sys/net/ipv4/conf/eth0.100/rp_filter",
		"kernel.pid_max":                      "/proc/sys/kernel/pid_max",
		"net.bridge.bridge-nf-call-ip6tables": "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
	} {
		if got := sysctlProcPath(key); got != want {
			t.Errorf("sysctlProcPath(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestNewSysctlInvalid(t *testing.T) {
	for name, m := range map[string]*agentv1.SysctlModule{
		"no values":     {},
		"empty key":     {Values: map[string]string{"": "1"}},
		"glob":          {Values: map[string]string{"net.ipv4.conf.*.rp_filter": "1"}},
		"dot dot":       {Values: map[string]string{"net..ipv4": "1"}},
		"escape":        {Values: map[string]string{"net/../../etc/passwd": "1"}},
		"newline value": {Values: map[string]string{"net.ipv4.ip_forward": "1\nkernel.x = 2"}},
		"empty value":   {Values: map[string]string{"net.ipv4.ip_forward": "  "}},
		"relative file": {Values: map[string]string{"net.ipv4.ip_forward": "1"}, File: "sysctl.conf"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := NewSysctl(m); !errors.Is(err, ErrInvalid) {
				t.Errorf("NewSysctl: err = %v, want ErrInvalid", err)
			}
		})
	}
}
