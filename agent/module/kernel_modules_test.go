package module

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/kthw/kthw/distro/pkg"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

func newKernelModules(t *testing.T, env *recorder, r *prepRunner, names ...string) *KernelModules {
	t.Helper()
	k, err := NewKernelModules(&agentv1.KernelModulesModule{Names: names})
	if err != nil {
		t.Fatalf("NewKernelModules: %v", err)
	}
	k.release = func() (string, error) { return "6.1.0-test", nil }
	env.Runner = r
	if err := os.MkdirAll(env.Path("/etc/modules-load.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	return k
}

func mkdirs(t *testing.T, env *recorder, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(env.Path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// A kernel without loadable modules, as on lab nodes: no /proc/modules, no
// modules.builtin; overlay shows in /sys/module, br_netfilter only by its
// /proc/sys/net/bridge.
func TestKernelModulesBuiltIn(t *testing.T) {
	env := newRecorder(t, "")
	mkdirs(t, env, "/sys/module/overlay/parameters", "/proc/sys/net/bridge")
	r := &prepRunner{handle: func(argv []string) ([]byte, error) {
		return nil, &pkg.ExitError{Argv: argv, Code: 1, Stderr: "modprobe: FATAL: Module x not found"}
	}}
	k := newKernelModules(t, env, r, "overlay", "br_netfilter")

	res := prepRun(t, "Check", k.Check, &env.Env)
	t.Run("check", func(t *testing.T) { prepGolden(t, res.Diff) })
	res = prepRun(t, "Apply", k.Apply, &env.Env)
	if !res.Changed || !strings.Contains(res.Diff, "kernel module br_netfilter: built in (/proc/sys/net/bridge exists)") {
		t.Errorf("Apply = %+v", res)
	}
	if calls := r.Calls(); len(calls) != 0 {
		t.Errorf("ran %q for built-in modules", calls)
	}
	if got, want := env.readFile(t, DefaultModulesLoadFile), managedHeader+"overlay\nbr_netfilter\n"; got != want {
		t.Errorf("file = %q, want %q", got, want)
	}
	res = prepRun(t, "second Apply", k.Apply, &env.Env)
	if res.Changed || res.Diff != "" {
		t.Errorf("second Apply = %+v, want unchanged", res)
	}
	if !slices.Contains(env.stream(agentv1.LogLine_STREAM_INFO), "kernel module overlay: built in (/sys/module/overlay exists without initstate)") {
		t.Errorf("log does not say overlay is built in: %q", env.stream(agentv1.LogLine_STREAM_INFO))
	}
}

func TestKernelModulesLoad(t *testing.T) {
	env := newRecorder(t, "")
	env.write(t, "/proc/modules", "nf_conntrack 172032 1 - Live 0x0000000000000000\n", 0o444)
	env.write(t, "/lib/modules/6.1.0-test/modules.builtin", "kernel/fs/overlayfs/overlay.ko\nkernel/net/bridge/br_netfilter.ko\n", 0o644)
	mkdirs(t, env, "/sys/module/xt_conntrack")
	env.write(t, "/sys/module/xt_conntrack/initstate", "live\n", 0o444)
	r := &prepRunner{}
	k := newKernelModules(t, env, r, "overlay", "br-netfilter", "nf_conntrack", "xt_conntrack", "ip_vs", "ip_vs")

	res := prepRun(t, "Apply", k.Apply, &env.Env)
	prepGolden(t, res.Diff)
	if got, want := r.Calls(), []string{"modprobe ip_vs"}; !slices.Equal(got, want) {
		t.Errorf("commands = %q, want %q", got, want)
	}
}

func TestKernelModulesModprobeFails(t *testing.T) {
	env := newRecorder(t, "")
	r := &prepRunner{handle: func(argv []string) ([]byte, error) {
		return nil, &pkg.ExitError{Argv: argv, Code: 1, Stderr: "modprobe: FATAL: Module nosuch not found in directory /lib/modules/6.1.0-test"}
	}}
	k := newKernelModules(t, env, r, "nosuch")
	_, err := k.Apply(context.Background(), &env.Env)
	var xe *pkg.ExitError
	if !errors.As(err, &xe) || !strings.Contains(err.Error(), "load kernel module nosuch") || !strings.Contains(err.Error(), "not found in directory") {
		t.Errorf("Apply: err = %v, want a modprobe error naming the module", err)
	}
	if _, err := os.Stat(env.Path(DefaultModulesLoadFile)); err == nil {
		t.Error("persisted a module that failed to load")
	}
}

func TestNewKernelModulesInvalid(t *testing.T) {
	for name, m := range map[string]*agentv1.KernelModulesModule{
		"no names":      {},
		"option":        {Names: []string{"-r"}},
		"path":          {Names: []string{"../x"}},
		"space":         {Names: []string{"br netfilter"}},
		"relative file": {Names: []string{"overlay"}, File: "x.conf"},
	} {
		if _, err := NewKernelModules(m); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}
