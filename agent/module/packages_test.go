package module

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kthw/kthw/distro/pkg"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// memManager is a pkg.Manager over in-memory state: what the repositories
// offer (oldest first), what is installed and held. It records the calls
// that change something. RepoFiles and RepoPaths come from a real backend.
type memManager struct {
	pkg.Manager // the real backend, for RepoFiles and RepoPaths

	mu        sync.Mutex
	offered   map[string][]string
	installed map[string]string
	held      map[string]bool
	calls     []string
	// installAs, when set, is the version Install installs whatever is asked
	// (a misbehaving manager).
	installAs string
}

func newMemManager(t *testing.T, offered map[string][]string) *memManager {
	t.Helper()
	real, err := pkg.New(pkg.APT, ExecRunner(&Env{}), pkg.Options{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return &memManager{Manager: real, offered: offered, installed: map[string]string{}, held: map[string]bool{}}
}

func (m *memManager) record(format string, args ...any) {
	m.calls = append(m.calls, fmt.Sprintf(format, args...))
}

func (m *memManager) Calls() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.calls)
}

func (m *memManager) Refresh(ctx context.Context, maxAge time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.record("refresh %s", maxAge)
	return true, nil
}

func (m *memManager) Installed(ctx context.Context, names []string) (map[string]string, error) {
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

func (m *memManager) Resolve(ctx context.Context, name, want string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	vs := m.offered[name]
	for i := len(vs) - 1; i >= 0; i-- {
		if pkg.MatchVersion(vs[i], want) {
			return vs[i], nil
		}
	}
	return "", fmt.Errorf("package %s version %s: %w; the repositories offer %s", name, want, pkg.ErrNotFound, strings.Join(vs, ", "))
}

func (m *memManager) Install(ctx context.Context, pkgs []pkg.Package) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range pkgs {
		vs := m.offered[p.Name]
		if len(vs) == 0 {
			return fmt.Errorf("install %s: %w", p.Name, pkg.ErrNotFound)
		}
		v := p.Version
		if v == "" {
			v = vs[len(vs)-1]
		}
		if m.installAs != "" {
			v = m.installAs
		}
		m.installed[p.Name] = v
		m.record("install %s=%s", p.Name, p.Version)
	}
	return nil
}

func (m *memManager) Remove(ctx context.Context, names []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, n := range names {
		delete(m.installed, n)
		delete(m.held, n)
		m.record("remove %s", n)
	}
	return nil
}

func (m *memManager) Held(ctx context.Context, names []string) (map[string]bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]bool{}
	for _, n := range names {
		if m.held[n] {
			out[n] = true
		}
	}
	return out, nil
}

func (m *memManager) Hold(ctx context.Context, names []string, hold bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, n := range names {
		m.held[n] = hold
		m.record("hold %s %v", n, hold)
	}
	return nil
}

// withManager makes env hand out mgr.
func withManager(env *recorder, mgr pkg.Manager) *recorder {
	env.Packages = func(ctx context.Context, name string) (pkg.Manager, error) { return mgr, nil }
	return env
}

func newPackages(t *testing.T, m *agentv1.PackagesModule) *Packages {
	t.Helper()
	p, err := NewPackages(m)
	if err != nil {
		t.Fatalf("NewPackages: %v", err)
	}
	return p
}

func pkgs(kv ...string) []*agentv1.Package {
	var out []*agentv1.Package
	for i := 0; i < len(kv); i += 2 {
		out = append(out, &agentv1.Package{Name: kv[i], Version: kv[i+1]})
	}
	return out
}

func TestNewPackagesInvalid(t *testing.T) {
	tests := map[string]*agentv1.PackagesModule{
		"no packages":       {},
		"empty name":        {Packages: pkgs("", "")},
		"option as name":    {Packages: pkgs("-y", "")},
		"name with space":   {Packages: pkgs("a b", "")},
		"version with =":    {Packages: pkgs("jq", "1=2")},
		"duplicate":         {Packages: pkgs("jq", "", "jq", "1.6")},
		"negative cache":    {Packages: pkgs("jq", ""), CacheValidSeconds: -1},
		"unknown manager":   {Packages: pkgs("jq", ""), Manager: "pacman"},
		"hold and absent":   {Packages: pkgs("jq", ""), Hold: true, State: agentv1.PackagesModule_STATE_ABSENT},
		"version of absent": {Packages: pkgs("jq", "1.6"), State: agentv1.PackagesModule_STATE_ABSENT},
		"unknown state":     {Packages: pkgs("jq", ""), State: 7},
	}
	for name, m := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := NewPackages(m); !errors.Is(err, ErrInvalid) {
				t.Fatalf("NewPackages: err = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestPackagesInstallHoldIdempotent(t *testing.T) {
	mgr := newMemManager(t, map[string][]string{"jq": {"1.6-2.1+deb12u2", "1.6-2.1+deb12u3"}})
	env := withManager(newRecorder(t, ""), mgr)
	p := newPackages(t, &agentv1.PackagesModule{Packages: pkgs("jq", ""), Hold: true, CacheValidSeconds: 600})

	res := mustCheck(t, env, p)
	if !res.Changed || res.Diff != "install jq (newest)\nhold jq\n" {
		t.Errorf("Check = %+v", res)
	}
	if calls := mgr.Calls(); len(calls) != 0 {
		t.Errorf("Check changed something: %q", calls)
	}
	mustApply(t, env, p, true)
	if want := []string{"refresh 10m0s", "install jq=", "hold jq true"}; !slices.Equal(mgr.Calls(), want) {
		t.Errorf("calls = %q, want %q", mgr.Calls(), want)
	}
	res = mustApply(t, env, p, false)
	if res.Diff != "" {
		t.Errorf("second Apply diff = %q", res.Diff)
	}
	if len(mgr.Calls()) != 3 {
		t.Errorf("second Apply changed something: %q", mgr.Calls())
	}
	info := env.stream(agentv1.LogLine_STREAM_INFO)
	if last := info[len(info)-1]; last != "jq 1.6-2.1+deb12u3 is already installed and held" {
		t.Errorf("last log line = %q", last)
	}
	if res := mustCheck(t, env, p); res.Changed {
		t.Errorf("Check after Apply = %+v", res)
	}
}

func TestPackagesPinnedResolves(t *testing.T) {
	ctx := context.Background()
	mgr := newMemManager(t, map[string][]string{"containerd": {"1.6.20~ds1-1+deb12u2", "1.6.20~ds1-1+deb12u3", "1.7.0-1"}})
	mgr.installed["containerd"] = "1.7.0-1"
	env := withManager(newRecorder(t, ""), mgr)
	p := newPackages(t, &agentv1.PackagesModule{Packages: pkgs("containerd", "1.6.20")})
	if res := mustCheck(t, env, p); res.Diff != "change containerd 1.7.0-1 -> 1.6.20\n" {
		t.Errorf("Check diff = %q", res.Diff)
	}
	res, err := p.Apply(ctx, &env.Env)
	if err != nil || !res.Changed {
		t.Fatalf("Apply = %+v, %v", res, err)
	}
	if res.Diff != "change containerd 1.7.0-1 -> 1.6.20~ds1-1+deb12u3\n" {
		t.Errorf("Apply diff = %q (want the resolved version)", res.Diff)
	}
	if got := mgr.installed["containerd"]; got != "1.6.20~ds1-1+deb12u3" {
		t.Errorf("installed %s", got)
	}
	if !slices.Contains(mgr.Calls(), "refresh "+DefaultCacheValid.String()) {
		t.Errorf("calls = %q, want a refresh with the default max age", mgr.Calls())
	}
	mustApply(t, env, p, false)
}

func TestPackagesUnknownVersion(t *testing.T) {
	mgr := newMemManager(t, map[string][]string{"jq": {"1.6-2.1"}})
	env := withManager(newRecorder(t, ""), mgr)
	p := newPackages(t, &agentv1.PackagesModule{Packages: pkgs("jq", "1.7")})
	_, err := p.Apply(context.Background(), &env.Env)
	if !errors.Is(err, pkg.ErrNotFound) || !strings.Contains(err.Error(), "offer 1.6-2.1") {
		t.Fatalf("Apply: err = %v, want ErrNotFound listing what exists", err)
	}
	if errors.Is(err, ErrInvalid) {
		t.Error("an unknown version is a failed run, not an invalid request")
	}
}

func TestPackagesVerifiesInstall(t *testing.T) {
	mgr := newMemManager(t, map[string][]string{"jq": {"1.5-1", "1.6-2.1"}})
	mgr.installAs = "1.5-1"
	env := withManager(newRecorder(t, ""), mgr)
	p := newPackages(t, &agentv1.PackagesModule{Packages: pkgs("jq", "1.6")})
	_, err := p.Apply(context.Background(), &env.Env)
	if err == nil || !strings.Contains(err.Error(), "jq is at 1.5-1, not 1.6-2.1") {
		t.Fatalf("Apply: err = %v, want a verification error", err)
	}
}

func TestPackagesRemove(t *testing.T) {
	mgr := newMemManager(t, map[string][]string{"jq": {"1.6-2.1"}})
	mgr.installed["jq"], mgr.held["jq"] = "1.6-2.1", true
	env := withManager(newRecorder(t, ""), mgr)
	p := newPackages(t, &agentv1.PackagesModule{Packages: pkgs("jq", "", "gone", ""), State: agentv1.PackagesModule_STATE_ABSENT})
	if res := mustCheck(t, env, p); res.Diff != "remove jq 1.6-2.1\n" {
		t.Errorf("Check diff = %q", res.Diff)
	}
	mustApply(t, env, p, true)
	if _, ok := mgr.installed["jq"]; ok {
		t.Error("jq still installed")
	}
	mustApply(t, env, p, false)
	if want := []string{"remove jq"}; !slices.Equal(mgr.Calls(), want) {
		t.Errorf("calls = %q, want %q", mgr.Calls(), want)
	}
}

func TestPackagesNoManager(t *testing.T) {
	env := newRecorder(t, "")
	p := newPackages(t, &agentv1.PackagesModule{Packages: pkgs("jq", "")})
	if _, err := p.Check(context.Background(), &env.Env); err == nil || !strings.Contains(err.Error(), "find package manager") {
		t.Fatalf("Check: err = %v", err)
	}
}

func TestPackagesManagerByName(t *testing.T) {
	env := newRecorder(t, "")
	var asked []string
	env.Packages = func(ctx context.Context, name string) (pkg.Manager, error) {
		asked = append(asked, name)
		return nil, fmt.Errorf("new package manager %q: %w", name, pkg.ErrUnsupported)
	}
	p := newPackages(t, &agentv1.PackagesModule{Packages: pkgs("jq", ""), Manager: "zypper"})
	_, err := p.Check(context.Background(), &env.Env)
	if !errors.Is(err, pkg.ErrUnsupported) || !slices.Equal(asked, []string{"zypper"}) {
		t.Fatalf("Check: err = %v, asked %q", err, asked)
	}
}

func TestRegistryPackageModules(t *testing.T) {
	r := Builtins()
	for _, tt := range []struct {
		req  *agentv1.RunModuleRequest
		want any
	}{
		{&agentv1.RunModuleRequest{Module: &agentv1.RunModuleRequest_Packages{Packages: &agentv1.PackagesModule{Packages: pkgs("jq", "")}}}, &Packages{}},
		{&agentv1.RunModuleRequest{Module: &agentv1.RunModuleRequest_Repository{Repository: &agentv1.RepositoryModule{Name: "k", State: agentv1.RepositoryModule_STATE_ABSENT}}}, &Repository{}},
		{&agentv1.RunModuleRequest{Module: &agentv1.RunModuleRequest_KubernetesPackages{KubernetesPackages: &agentv1.KubernetesPackagesModule{Version: "v1.31.2"}}}, &KubernetesPackages{}},
	} {
		m, err := r.New(tt.req)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		if fmt.Sprintf("%T", m) != fmt.Sprintf("%T", tt.want) {
			t.Errorf("New: got %T, want %T", m, tt.want)
		}
	}
	_, err := r.New(&agentv1.RunModuleRequest{Module: &agentv1.RunModuleRequest_Packages{Packages: &agentv1.PackagesModule{}}})
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("New(empty packages): err = %v, want ErrInvalid", err)
	}
}
