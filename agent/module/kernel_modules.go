package module

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

var _ Module = (*KernelModules)(nil)

// DefaultModulesLoadFile is where KernelModules persists its modules unless
// told otherwise.
const DefaultModulesLoadFile = "/etc/modules-load.d/kthw.conf"

// kmodEvidence lists, for modules that may be built in without showing
// under /sys/module, a path that exists only when the module's code is in
// the kernel.
var kmodEvidence = map[string]string{
	"br_netfilter": "/proc/sys/net/bridge",
	"nf_conntrack": "/proc/sys/net/netfilter/nf_conntrack_max",
	"ip_tables":    "/proc/net/ip_tables_names",
	"ip6_tables":   "/proc/net/ip6_tables_names",
	"ip_vs":        "/proc/net/ip_vs",
}

// KernelModules loads kernel modules with modprobe and persists them in a
// modules-load.d file. A module that is already loaded or built into the
// kernel counts as present: modprobe is not run for it, and the diff says
// which. A kernel without loadable-module support (as lab nodes have)
// still passes when everything asked for is built in.
type KernelModules struct {
	names []string
	file  string
	// release returns the running kernel's release (uname -r).
	release func() (string, error)
}

// NewKernelModules validates m and returns the module that loads its
// modules.
func NewKernelModules(m *agentv1.KernelModulesModule) (*KernelModules, error) {
	k := &KernelModules{file: m.GetFile(), release: kernelRelease}
	if k.file == "" {
		k.file = DefaultModulesLoadFile
	}
	if !filepath.IsAbs(k.file) || filepath.Clean(k.file) != k.file {
		return nil, fmt.Errorf("%w: file %q is not an absolute, clean path", ErrInvalid, k.file)
	}
	if len(m.GetNames()) == 0 {
		return nil, fmt.Errorf("%w: no module names", ErrInvalid)
	}
	seen := map[string]bool{}
	for _, n := range m.GetNames() {
		if !validKmodName(n) {
			return nil, fmt.Errorf("%w: kernel module name %q", ErrInvalid, n)
		}
		if !seen[kmodKey(n)] {
			seen[kmodKey(n)] = true
			k.names = append(k.names, n)
		}
	}
	return k, nil
}

func validKmodName(n string) bool {
	if n == "" || len(n) > 64 || n[0] == '-' {
		return false
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// kmodKey is the kernel's own spelling of a module name: dashes and
// underscores are the same to modprobe, and the kernel uses underscores.
func kmodKey(n string) string { return strings.ReplaceAll(n, "-", "_") }

func kernelRelease() (string, error) {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	return unix.ByteSliceToString(uts.Release[:]), nil
}

func (k *KernelModules) render() []byte {
	return []byte(managedHeader + strings.Join(k.names, "\n") + "\n")
}

// kmodState is whether one module is present, and how we know.
type kmodState struct {
	name     string
	present  string // "already loaded", "built in" or "" (absent)
	evidence string
}

func (s kmodState) describe() string {
	if s.present == "" {
		return "kernel module " + s.name + ": load with modprobe"
	}
	return fmt.Sprintf("kernel module %s: %s (%s)", s.name, s.present, s.evidence)
}

// inspect finds out which of the modules are present.
func (k *KernelModules) inspect(env *Env) ([]kmodState, error) {
	loaded, haveProcModules, err := procModules(env)
	if err != nil {
		return nil, err
	}
	builtin, builtinFile, err := k.builtinModules(env)
	if err != nil {
		return nil, err
	}
	out := make([]kmodState, 0, len(k.names))
	for _, n := range k.names {
		st := kmodState{name: n}
		key := kmodKey(n)
		sysDir := "/sys/module/" + key
		switch {
		case loaded[key]:
			st.present, st.evidence = "already loaded", "listed in /proc/modules"
		case builtin[key]:
			st.present, st.evidence = "built in", "listed in "+builtinFile
		case exists(env, sysDir+"/initstate"):
			st.present, st.evidence = "already loaded", sysDir+"/initstate exists"
		case exists(env, sysDir):
			// Built-in modules show in /sys/module (when they have
			// parameters) without the initstate of a loaded one.
			st.present, st.evidence = "built in", sysDir+" exists without initstate"
		case kmodEvidence[key] != "" && exists(env, kmodEvidence[key]):
			st.present, st.evidence = "built in", kmodEvidence[key]+" exists"
		case hasFilesystem(env, key):
			st.present, st.evidence = "built in", "filesystem "+key+" listed in /proc/filesystems"
		}
		if st.present == "built in" && haveProcModules && st.evidence != "listed in "+builtinFile {
			st.evidence += ", not in /proc/modules"
		}
		out = append(out, st)
	}
	return out, nil
}

// procModules returns the loaded modules, and whether /proc/modules exists
// (it does not on a kernel without loadable-module support).
func procModules(env *Env) (map[string]bool, bool, error) {
	b, err := os.ReadFile(env.Path("/proc/modules"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read /proc/modules: %w", err)
	}
	loaded := map[string]bool{}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) > 0 {
			loaded[f[0]] = true
		}
	}
	return loaded, true, nil
}

// builtinModules reads modules.builtin of the running kernel, when present.
func (k *KernelModules) builtinModules(env *Env) (map[string]bool, string, error) {
	release, err := k.release()
	if err != nil {
		return nil, "", err
	}
	path := "/lib/modules/" + release + "/modules.builtin"
	b, err := os.ReadFile(env.Path(path))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, path, nil
	}
	if err != nil {
		return nil, path, fmt.Errorf("read %s: %w", path, err)
	}
	builtin := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// kernel/net/bridge/br_netfilter.ko
		base := filepath.Base(strings.TrimSpace(sc.Text()))
		if name, ok := strings.CutSuffix(base, ".ko"); ok {
			builtin[kmodKey(name)] = true
		}
	}
	return builtin, path, sc.Err()
}

func hasFilesystem(env *Env, name string) bool {
	b, err := os.ReadFile(env.Path("/proc/filesystems"))
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) > 0 && f[len(f)-1] == name {
			return true
		}
	}
	return false
}

func exists(env *Env, p string) bool {
	_, err := os.Stat(env.Path(p))
	return err == nil
}

// Check reports the modules it would load and the file diff.
func (k *KernelModules) Check(ctx context.Context, env *Env) (Result, error) {
	return k.run(ctx, env, false)
}

// Apply loads every absent module and writes the file.
func (k *KernelModules) Apply(ctx context.Context, env *Env) (Result, error) {
	return k.run(ctx, env, true)
}

func (k *KernelModules) run(ctx context.Context, env *Env, apply bool) (Result, error) {
	states, err := k.inspect(env)
	if err != nil {
		return Result{}, err
	}
	var d diffBuilder
	changed := false
	var errs []error
	for _, st := range states {
		d.line(st.describe())
		if st.present != "" {
			env.info(st.describe())
			continue
		}
		changed = true
		if !apply {
			continue
		}
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		if _, err := env.cmdRunner().Run(ctx, []string{"modprobe", st.name}, nil, nil); err != nil {
			if ctx.Err() != nil {
				return Result{}, ctx.Err()
			}
			errs = append(errs, fmt.Errorf("load kernel module %s: not loaded or built in, and modprobe failed: %w", st.name, err))
			continue
		}
		env.info("loaded kernel module " + st.name)
	}
	if len(errs) > 0 {
		// Not persisted: a module that cannot be loaded would only fail
		// again at boot.
		return Result{Changed: changed, Diff: d.String()}, errors.Join(errs...)
	}
	fileRes, err := syncFile(ctx, env, managedFile{path: k.file, content: k.render()}, apply)
	if err != nil {
		return Result{}, err
	}
	d.add(fileRes.Diff)
	res := Result{Changed: changed || fileRes.Changed}
	if res.Changed {
		res.Diff = d.String()
	}
	return res, nil
}
