package module

import (
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pmezard/go-difflib/difflib"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// Test helpers of the node-prep modules: a recording command runner and
// golden files.

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
