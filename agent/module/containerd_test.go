package module

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	introspection "github.com/containerd/containerd/api/services/introspection/v1"
	versionsvc "github.com/containerd/containerd/api/services/version/v1"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kthw/kthw/agent/internal/systemdtest"
	"github.com/kthw/kthw/distro/pkg"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

const debianContainerdVersion = "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1\n"

func containerdSpec() *agentv1.ContainerdModule {
	return &agentv1.ContainerdModule{
		Packages:      []*agentv1.Package{{Name: "containerd"}, {Name: "runc"}},
		SandboxImage:  "registry.k8s.io/pause:3.10",
		SystemdCgroup: true,
		Mirrors: []*agentv1.ContainerdModule_Mirror{
			{Registry: "docker.io", Endpoints: []string{"https://mirror.lab:5000", "http://10.200.0.1:5001"}},
			{Registry: "registry.k8s.io", Endpoints: []string{"https://mirror.lab:5000"}},
			{Registry: "_default", Endpoints: []string{"https://mirror.lab:5000"}},
		},
	}
}

func newContainerd(t *testing.T, m *agentv1.ContainerdModule) *Containerd {
	t.Helper()
	c, err := NewContainerd(m)
	if err != nil {
		t.Fatalf("NewContainerd: %v", err)
	}
	c.verifyTimeout = 5 * time.Second
	return c
}

func TestContainerdConfig(t *testing.T) {
	c := newContainerd(t, containerdSpec())
	t.Run("v2", func(t *testing.T) { prepGolden(t, c.renderConfig(2)) })
	t.Run("v3", func(t *testing.T) { prepGolden(t, c.renderConfig(3)) })
	c = newContainerd(t, &agentv1.ContainerdModule{ConfigDir: "/etc/kthw/containerd", Socket: "/run/kthw/containerd.sock"})
	t.Run("v2 defaults", func(t *testing.T) { prepGolden(t, c.renderConfig(2)) })
}

func TestContainerdHostsTOML(t *testing.T) {
	for _, m := range containerdSpec().GetMirrors() {
		t.Run(m.GetRegistry(), func(t *testing.T) { prepGolden(t, renderHostsTOML(m)) })
	}
}

func TestContainerdConfigVersionFor(t *testing.T) {
	for v, want := range map[string]int{"1.6.20~ds1": 2, "1.7.22": 2, "v2.0.0": 3, "2.1.4-1": 3, "1:1.7.24~ds1-1": 2} {
		if got, err := configVersionFor(v); err != nil || got != want {
			t.Errorf("configVersionFor(%q) = %d, %v; want %d", v, got, err, want)
		}
	}
	for _, v := range []string{"", "0.2.0", "x"} {
		if _, err := configVersionFor(v); err == nil {
			t.Errorf("configVersionFor(%q): no error", v)
		}
	}
}

// fakeContainerd serves containerd's version and introspection services.
type fakeContainerd struct {
	versionsvc.UnimplementedVersionServer
	introspection.UnimplementedIntrospectionServer

	mu      sync.Mutex
	initErr string
}

func (f *fakeContainerd) Version(context.Context, *emptypb.Empty) (*versionsvc.VersionResponse, error) {
	return &versionsvc.VersionResponse{Version: "1.6.20~ds1", Revision: "1.6.20~ds1-1+b1"}, nil
}

func (f *fakeContainerd) Plugins(context.Context, *introspection.PluginsRequest) (*introspection.PluginsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cri := &introspection.Plugin{Type: CRIPluginType, ID: CRIPluginID}
	if f.initErr != "" {
		cri.InitErr = &rpcstatus.Status{Code: 2, Message: f.initErr}
	}
	return &introspection.PluginsResponse{Plugins: []*introspection.Plugin{
		{Type: "io.containerd.snapshotter.v1", ID: "overlayfs"}, cri,
	}}, nil
}

func startFakeContainerd(t *testing.T, socket string) *fakeContainerd {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(socket), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeContainerd{}
	s := grpc.NewServer()
	versionsvc.RegisterVersionServer(s, f)
	introspection.RegisterIntrospectionServer(s, f)
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return f
}

// containerdEnv is a node with a fake systemd, package manager, containerd
// binary (its --version) and containerd API.
type containerdEnv struct {
	*recorder
	sd     *systemdtest.Systemd
	mgr    *memManager
	runner *prepRunner
	api    *fakeContainerd
}

func newContainerdEnv(t *testing.T, installed bool) *containerdEnv {
	t.Helper()
	e := &containerdEnv{recorder: newRecorder(t, "")}
	e.sd = systemdtest.Start(t, map[string]systemdtest.Unit{ContainerdUnit: {
		LoadState: "loaded", ActiveState: "inactive", SubState: "dead", UnitFileState: "enabled",
	}})
	e.mgr = newMemManager(t, map[string][]string{
		"containerd": {"1.6.20~ds1-1+b1"}, "runc": {"1.1.5+ds1-1+deb12u1"},
	})
	if installed {
		e.mgr.installed["containerd"] = "1.6.20~ds1-1+b1"
		e.mgr.installed["runc"] = "1.1.5+ds1-1+deb12u1"
	}
	e.runner = &prepRunner{handle: func(argv []string) ([]byte, error) {
		e.mgr.mu.Lock()
		_, ok := e.mgr.installed["containerd"]
		e.mgr.mu.Unlock()
		if argv[0] == "containerd" && ok {
			return []byte(debianContainerdVersion), nil
		}
		return nil, &pkg.ExitError{Argv: argv, Code: 127, Stderr: argv[0] + ": not found"}
	}}
	e.Runner = e.runner
	e.Packages = func(ctx context.Context, name string) (pkg.Manager, error) { return e.mgr, nil }
	e.api = startFakeContainerd(t, e.Path(DefaultContainerdSocket))
	if err := os.MkdirAll(e.Path("/etc/containerd"), 0o755); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestContainerdApply(t *testing.T) {
	e := newContainerdEnv(t, false)
	spec := containerdSpec()
	c := newContainerd(t, spec)

	res := prepRun(t, "Check", c.Check, &e.Env)
	if !strings.Contains(res.Diff, "install package containerd: not installed -> newest") || !strings.Contains(res.Diff, "+version = 2") {
		t.Errorf("Check before install:\n%s", res.Diff)
	}
	if len(e.mgr.Calls()) != 0 || len(e.sd.Calls()) != 0 {
		t.Fatalf("Check changed something: %q %q", e.mgr.Calls(), e.sd.Calls())
	}

	res = prepRun(t, "Apply", c.Apply, &e.Env)
	prepGolden(t, res.Diff)
	if got, want := e.mgr.Calls(), []string{"refresh 1h0m0s", "install containerd=", "install runc="}; !slices.Equal(got, want) {
		t.Errorf("package manager calls = %q, want %q", got, want)
	}
	if got, want := e.sd.Calls(), []string{"StartUnit containerd.service"}; !slices.Equal(got, want) {
		t.Errorf("systemd calls = %q, want %q", got, want)
	}
	if !slices.ContainsFunc(e.stream(agentv1.LogLine_STREAM_INFO), func(s string) bool {
		return strings.Contains(s, "containerd 1.6.20~ds1 (revision 1.6.20~ds1-1+b1) answers") && strings.Contains(s, "CRI plugin loaded")
	}) {
		t.Errorf("no verification in the log: %q", e.stream(agentv1.LogLine_STREAM_INFO))
	}

	ran, managed := len(e.runner.Calls()), len(e.mgr.Calls())
	for _, run := range []func(context.Context, *Env) (Result, error){c.Check, c.Apply} {
		if res := prepRun(t, "second run", run, &e.Env); res.Changed || res.Diff != "" {
			t.Errorf("second run = %+v, want unchanged", res)
		}
	}
	// The installed package names the version: the 48 MB containerd binary is not run to ask.
	if got := e.runner.Calls()[ran:]; len(got) != 0 {
		t.Errorf("second runs ran %q", got)
	}
	if len(e.mgr.Calls()) != managed || len(e.sd.Calls()) != 1 {
		t.Errorf("second runs made calls: %q %q", e.mgr.Calls(), e.sd.Calls())
	}

	spec.SandboxImage = "registry.k8s.io/pause:3.9"
	spec.Mirrors = spec.Mirrors[:1]
	c = newContainerd(t, spec)
	res = prepRun(t, "Apply with another sandbox image", c.Apply, &e.Env)
	t.Run("changed", func(t *testing.T) { prepGolden(t, res.Diff) })
	if got := e.sd.Calls(); !slices.Equal(got, []string{"StartUnit containerd.service", "RestartUnit containerd.service"}) {
		t.Errorf("systemd calls = %q, want a restart", got)
	}
	if _, err := os.Stat(e.Path("/etc/containerd/certs.d/registry.k8s.io/hosts.toml")); err == nil {
		t.Error("the hosts.toml of a mirror no longer listed is still there")
	}
}

func TestContainerdCheckWithoutVersion(t *testing.T) {
	e := newContainerdEnv(t, false)
	e.mgr.offered = map[string][]string{} // no package index yet
	c := newContainerd(t, containerdSpec())
	res := prepRun(t, "Check", c.Check, &e.Env)
	if !strings.Contains(res.Diff, "config version unknown until containerd is installed") || !strings.Contains(res.Diff, "+version = 2") {
		t.Errorf("Check:\n%s", res.Diff)
	}
	if _, err := c.Apply(context.Background(), &e.Env); err == nil {
		t.Error("Apply without a version to install succeeded")
	}
}

// A pinned version is resolved to the manager's own; a manager that
// installs something else fails the run before containerd is configured.
func TestContainerdPinnedVerified(t *testing.T) {
	e := newContainerdEnv(t, false)
	e.mgr.offered["containerd"] = []string{"1.6.20~ds1-1+b1", "1.7.22-1"}
	spec := containerdSpec()
	spec.Packages = []*agentv1.Package{{Name: "containerd", Version: "1.6.20"}}
	c := newContainerd(t, spec)
	res := prepRun(t, "Check", c.Check, &e.Env)
	if !strings.Contains(res.Diff, "install package containerd: not installed -> 1.6.20~ds1-1+b1") {
		t.Errorf("Check:\n%s", res.Diff)
	}
	e.mgr.installAs = "1.7.22-1"
	_, err := c.Apply(context.Background(), &e.Env)
	if err == nil || !strings.Contains(err.Error(), "containerd is at 1.7.22-1, not 1.6.20~ds1-1+b1") {
		t.Fatalf("Apply: err = %v, want a verification error", err)
	}
	if _, err := os.Stat(e.Path("/etc/containerd/config.toml")); err == nil {
		t.Error("config.toml written after a failed install")
	}
}

func TestContainerdKeepsHostsItDidNotWrite(t *testing.T) {
	e := newContainerdEnv(t, true)
	e.write(t, "/etc/containerd/certs.d/quay.io/hosts.toml", "server = \"https://quay.io\"\n", 0o644)
	c := newContainerd(t, &agentv1.ContainerdModule{SandboxImage: "registry.k8s.io/pause:3.10"})
	prepRun(t, "Apply", c.Apply, &e.Env)
	if _, err := os.Stat(e.Path("/etc/containerd/certs.d/quay.io/hosts.toml")); err != nil {
		t.Errorf("removed a hosts.toml kthw did not write: %v", err)
	}
}

func TestContainerdCRINotLoaded(t *testing.T) {
	e := newContainerdEnv(t, true)
	e.api.initErr = "failed to create CRI service: failed to find snapshotter \"overlayfs\""
	c := newContainerd(t, containerdSpec())
	_, err := c.Apply(context.Background(), &e.Env)
	if !errors.Is(err, ErrCRINotLoaded) || !strings.Contains(err.Error(), `failed to find snapshotter "overlayfs"`) {
		t.Fatalf("Apply: err = %v, want ErrCRINotLoaded with the init error", err)
	}
}

func TestContainerdNotRunning(t *testing.T) {
	e := newContainerdEnv(t, true)
	c := newContainerd(t, &agentv1.ContainerdModule{Socket: "/run/other/containerd.sock"})
	c.verifyTimeout = 300 * time.Millisecond
	_, err := c.Apply(context.Background(), &e.Env)
	if err == nil || !strings.Contains(err.Error(), "version service on /run/other/containerd.sock") {
		t.Fatalf("Apply: err = %v, want the version service error", err)
	}
}

func TestContainerdNoPackageManager(t *testing.T) {
	e := newContainerdEnv(t, true)
	e.Packages = nil
	c := newContainerd(t, containerdSpec())
	if _, err := c.Apply(context.Background(), &e.Env); err == nil || !strings.Contains(err.Error(), "no package manager") {
		t.Fatalf("Apply: err = %v", err)
	}
}

func TestNewContainerdInvalid(t *testing.T) {
	for name, m := range map[string]*agentv1.ContainerdModule{
		"config version":    {ConfigVersion: 1},
		"relative dir":      {ConfigDir: "etc/containerd"},
		"quote in image":    {SandboxImage: `pause"`},
		"bad registry":      {Mirrors: []*agentv1.ContainerdModule_Mirror{{Registry: "a/b", Endpoints: []string{"https://x"}}}},
		"no endpoints":      {Mirrors: []*agentv1.ContainerdModule_Mirror{{Registry: "docker.io"}}},
		"endpoint scheme":   {Mirrors: []*agentv1.ContainerdModule_Mirror{{Registry: "docker.io", Endpoints: []string{"ftp://x"}}}},
		"registry twice":    {Mirrors: []*agentv1.ContainerdModule_Mirror{{Registry: "docker.io", Endpoints: []string{"https://x"}}, {Registry: "docker.io", Endpoints: []string{"https://y"}}}},
		"empty package":     {Packages: []*agentv1.Package{{}}},
		"package with =":    {Packages: []*agentv1.Package{{Name: "containerd=1.6"}}},
		"option as package": {Packages: []*agentv1.Package{{Name: "-y"}}},
		"package twice":     {Packages: []*agentv1.Package{{Name: "runc"}, {Name: "runc", Version: "1.1"}}},
		"quote in endpoint": {Mirrors: []*agentv1.ContainerdModule_Mirror{{Registry: "docker.io", Endpoints: []string{`https://x"]`}}}},
	} {
		if _, err := NewContainerd(m); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}
