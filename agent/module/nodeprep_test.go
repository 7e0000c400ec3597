package module

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pmezard/go-difflib/difflib"

	"github.com/kthw/kthw/distro/pkg"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// Test helpers of the node-prep modules: a recording command runner, a fake
// package manager and golden files.

func init() {
	// -update rewrites golden files. Defined here unless another test file
	// of the package already did.
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite the golden files in testdata")
	}
}

// prepGolden compares got with testdata/<test name>.golden, or rewrites that
// file under -update.
func prepGolden(t *testing.T, got string) {
	t.Helper()
	path := filepath.Join("testdata", t.Name()+".golden")
	if f := flag.Lookup("update"); f != nil && f.Value.String() == "true" {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run with -update to create it): %v", err)
	}
	if got != string(want) {
		d, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
			A: difflib.SplitLines(string(want)), B: difflib.SplitLines(got),
			FromFile: path, ToFile: "got", Context: 3,
		})
		t.Errorf("%s differs (run with -update to accept):\n%s", path, d)
	}
}

// prepRunner is a pkg.Runner that records commands and answers them with
// handle (nil: succeed with no output).
type prepRunner struct {
	handle func(argv []string) ([]byte, error)

	mu    sync.Mutex
	calls []string
}

func (r *prepRunner) Run(ctx context.Context, argv []string, env []string, stdin io.Reader) ([]byte, error) {
	r.mu.Lock()
	r.calls = append(r.calls, strings.Join(argv, " "))
	r.mu.Unlock()
	if r.handle == nil {
		return nil, nil
	}
	return r.handle(argv)
}

func (r *prepRunner) Calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

// prepManager is a pkg.Manager over an in-memory set of packages.
type prepManager struct {
	mu        sync.Mutex
	installed map[string]string
	available map[string]string // newest version offered
	calls     []string
}

var _ pkg.Manager = (*prepManager)(nil)

func (m *prepManager) record(s string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, s)
}

func (m *prepManager) Calls() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.calls)
}

func (m *prepManager) Name() string { return "fake" }

func (m *prepManager) Refresh(ctx context.Context, maxAge time.Duration) (bool, error) {
	m.record("refresh")
	return true, nil
}

func (m *prepManager) Installed(ctx context.Context, names []string) (map[string]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]string{}
	for _, n := range names {
		if v, ok := m.installed[n]; ok {
			out[n] = v
		}
	}
	return out, nil
}

func (m *prepManager) Resolve(ctx context.Context, name, want string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.available[name]
	if !ok || (want != "" && !strings.HasPrefix(v, want)) {
		return "", fmt.Errorf("resolve %s %s: %w", name, want, pkg.ErrNotFound)
	}
	return v, nil
}

func (m *prepManager) Install(ctx context.Context, pkgs []pkg.Package) error {
	var names []string
	for _, p := range pkgs {
		names = append(names, p.Name+"="+p.Version)
	}
	m.record("install " + strings.Join(names, " "))
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range pkgs {
		v, ok := m.available[p.Name]
		if !ok {
			return fmt.Errorf("install %s: %w", p.Name, pkg.ErrNotFound)
		}
		if p.Version != "" {
			v = p.Version
		}
		m.installed[p.Name] = v
	}
	return nil
}

func (m *prepManager) Remove(ctx context.Context, names []string) error { return nil }
func (m *prepManager) Held(ctx context.Context, names []string) (map[string]bool, error) {
	return nil, nil
}
func (m *prepManager) Hold(ctx context.Context, names []string, hold bool) error { return nil }
func (m *prepManager) RepoFiles(repo pkg.Repo) ([]pkg.File, error)               { return nil, nil }
func (m *prepManager) RepoPaths(name string) []string                            { return nil }

// readFile returns a file under the recorder's root.
func (r *recorder) readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(r.Path(path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// prepRun runs Check or Apply and fails the test on an error.
func prepRun(t *testing.T, what string, run func(context.Context, *Env) (Result, error), env *Env) Result {
	t.Helper()
	res, err := run(context.Background(), env)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return res
}

func TestNodePrepRegistry(t *testing.T) {
	r := Builtins()
	yes := true
	reqs := map[string]*agentv1.RunModuleRequest{
		"sysctl": {Module: &agentv1.RunModuleRequest_Sysctl{Sysctl: &agentv1.SysctlModule{Values: map[string]string{"net.ipv4.ip_forward": "1"}}}},
		"kernel_modules": {Module: &agentv1.RunModuleRequest_KernelModules{KernelModules: &agentv1.KernelModulesModule{
			Names: []string{"overlay"}}}},
		"swap":     {Module: &agentv1.RunModuleRequest_Swap{Swap: &agentv1.SwapModule{}}},
		"hostname": {Module: &agentv1.RunModuleRequest_Hostname{Hostname: &agentv1.HostnameModule{Hostname: "node-1"}}},
		"systemd_unit": {Module: &agentv1.RunModuleRequest_SystemdUnit{SystemdUnit: &agentv1.SystemdUnitModule{
			Name: "foo.service", Enabled: &yes}}},
		"containerd": {Module: &agentv1.RunModuleRequest_Containerd{Containerd: &agentv1.ContainerdModule{}}},
	}
	for name, req := range reqs {
		if _, err := r.New(req); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
