package module

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	introspection "github.com/containerd/containerd/api/services/introspection/v1"
	versionsvc "github.com/containerd/containerd/api/services/version/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kthw/kthw/distro/pkg"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

var _ Module = (*Containerd)(nil)

// Defaults of ContainerdModule.
const (
	DefaultContainerdConfigDir = "/etc/containerd"
	DefaultContainerdSocket    = "/run/containerd/containerd.sock"
	ContainerdUnit             = "containerd.service"
)

// CRIPlugin is the type and id of containerd's CRI plugin, which the
// kubelet talks to.
const (
	CRIPluginType = "io.containerd.grpc.v1"
	CRIPluginID   = "cri"
)

// containerdVerifyTimeout bounds the wait for containerd's API after a
// (re)start.
const containerdVerifyTimeout = 60 * time.Second

// ErrCRINotLoaded marks a containerd whose CRI plugin is missing or failed
// to initialize.
var ErrCRINotLoaded = errors.New("containerd CRI plugin not loaded")

// Containerd installs containerd with the node's package manager, renders
// config.toml (the CRI plugin with SystemdCgroup, the sandbox image and a
// certs.d config_path) and a hosts.toml per registry mirror, restarts
// containerd through systemd only when one of them (or a package) changed,
// keeps it enabled and running, and then verifies it through its API: the
// version service answers and the CRI plugin is loaded.
//
// config.toml is config version 2 for containerd 1.x and 3 for 2.x; with
// config_version 0 the installed containerd's version decides. hosts.toml
// files kthw wrote for registries no longer listed are removed.
type Containerd struct {
	packages      []pkg.Package
	sandboxImage  string
	systemdCgroup bool
	mirrors       []*agentv1.ContainerdModule_Mirror
	configDir     string
	socket        string
	configVersion int
	verifyTimeout time.Duration
}

// NewContainerd validates m and returns the module that sets containerd up.
func NewContainerd(m *agentv1.ContainerdModule) (*Containerd, error) {
	c := &Containerd{
		sandboxImage:  m.GetSandboxImage(),
		systemdCgroup: m.GetSystemdCgroup(),
		mirrors:       m.GetMirrors(),
		configDir:     m.GetConfigDir(),
		socket:        m.GetSocket(),
		configVersion: int(m.GetConfigVersion()),
		verifyTimeout: containerdVerifyTimeout,
	}
	if c.configDir == "" {
		c.configDir = DefaultContainerdConfigDir
	}
	if c.socket == "" {
		c.socket = DefaultContainerdSocket
	}
	for _, p := range []struct{ field, v string }{{"config_dir", c.configDir}, {"socket", c.socket}} {
		if !path.IsAbs(p.v) || path.Clean(p.v) != p.v || !tomlSafe(p.v) {
			return nil, fmt.Errorf("%w: %s %q is not an absolute, clean path", ErrInvalid, p.field, p.v)
		}
	}
	switch c.configVersion {
	case 0, 2, 3:
	default:
		return nil, fmt.Errorf("%w: config_version %d (want 2, 3 or 0 to detect)", ErrInvalid, c.configVersion)
	}
	if !tomlSafe(c.sandboxImage) || strings.ContainsAny(c.sandboxImage, " \t") {
		return nil, fmt.Errorf("%w: sandbox_image %q", ErrInvalid, c.sandboxImage)
	}
	for _, p := range m.GetPackages() {
		c.packages = append(c.packages, pkg.Package{Name: p.GetName(), Version: p.GetVersion()})
	}
	if len(c.packages) > 0 {
		if err := checkPackages(c.packages); err != nil {
			return nil, err
		}
	}
	seen := map[string]bool{}
	for _, mr := range c.mirrors {
		r := mr.GetRegistry()
		if !validRegistryHost(r) || seen[r] {
			return nil, fmt.Errorf("%w: mirror registry %q (a host[:port], given once, or _default)", ErrInvalid, r)
		}
		seen[r] = true
		if len(mr.GetEndpoints()) == 0 {
			return nil, fmt.Errorf("%w: mirror %s has no endpoints", ErrInvalid, r)
		}
		for _, e := range mr.GetEndpoints() {
			u, err := url.Parse(e)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || !tomlSafe(e) {
				return nil, fmt.Errorf("%w: mirror %s endpoint %q is not an http(s) URL", ErrInvalid, r, e)
			}
		}
	}
	return c, nil
}

// tomlSafe reports whether s can go in a TOML basic string as it is.
func tomlSafe(s string) bool {
	return !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '"' || r == '\\' })
}

func validRegistryHost(r string) bool {
	if r == "_default" {
		return true
	}
	host, port, err := net.SplitHostPort(r)
	if err != nil {
		host, port = r, ""
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return false
		}
	}
	if ip := net.ParseIP(strings.Trim(host, "[]")); ip != nil {
		return true
	}
	return validDNSName(host)
}

func (c *Containerd) certsDir() string { return path.Join(c.configDir, "certs.d") }

// Check reports packages to install, file diffs, and what systemd would do.
func (c *Containerd) Check(ctx context.Context, env *Env) (Result, error) {
	return c.run(ctx, env, false)
}

// Apply installs, configures, (re)starts and verifies containerd.
func (c *Containerd) Apply(ctx context.Context, env *Env) (Result, error) {
	return c.run(ctx, env, true)
}

func (c *Containerd) run(ctx context.Context, env *Env, apply bool) (res Result, err error) {
	var d diffBuilder
	defer func() {
		if res.Changed {
			res.Diff = d.String()
		}
	}()
	pkgChanged, pkgVersion, err := c.ensurePackages(ctx, env, apply, &d)
	if err != nil {
		return res, err
	}
	res.Changed = pkgChanged
	version, err := c.detectConfigVersion(ctx, env, pkgVersion)
	if err != nil {
		if apply || !pkgChanged {
			return res, err
		}
		// A plan before containerd is installed, with no version known
		// yet: show version 2 and say so.
		version = 2
		d.line(fmt.Sprintf("config version unknown until containerd is installed (%v); showing version 2", err))
	}
	filesChanged := false
	for _, f := range c.files(version) {
		fr, err := syncFile(ctx, env, f, apply)
		if err != nil {
			return res, err
		}
		if fr.Changed {
			filesChanged, res.Changed = true, true
			d.add(fr.Diff)
		}
	}
	stale, err := c.staleHosts(env)
	if err != nil {
		return res, err
	}
	for _, f := range stale {
		fr, err := syncFile(ctx, env, f, apply)
		if err != nil {
			return res, err
		}
		if fr.Changed {
			filesChanged, res.Changed = true, true
			d.add(fr.Diff)
		}
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}

	conn, err := dialSystemd(ctx)
	if err != nil {
		return res, err
	}
	defer conn.Close()
	enabled := true
	unit := unitSpec{name: ContainerdUnit, enabled: &enabled, state: agentv1.SystemdUnitModule_STATE_RESTARTED_ON_CHANGE}
	ur, err := ensureUnit(ctx, env, conn, unit, filesChanged || pkgChanged, apply)
	if ur.Changed {
		res.Changed = true
		d.add(ur.Diff)
	}
	if err != nil || !apply {
		return res, err
	}
	return res, c.verify(ctx, env)
}

// ensurePackages installs the packages that are missing or at another
// version, as the packages module does (refresh a stale index, resolve,
// install, verify). It returns whether it did (would), and the version of
// the containerd package: the one installed, or the one the package manager
// installs (would install) when it is missing; "" when unknown.
func (c *Containerd) ensurePackages(ctx context.Context, env *Env, apply bool, d *diffBuilder) (bool, string, error) {
	if len(c.packages) == 0 {
		return false, "", nil
	}
	mgr, err := packageManager(ctx, env, "")
	if err != nil {
		return false, "", fmt.Errorf("install containerd packages: %w", err)
	}
	pl, err := planInstall(ctx, mgr, c.packages, false)
	if err != nil {
		return false, "", fmt.Errorf("install containerd packages: %w", err)
	}
	var todo int
	for _, s := range pl.steps {
		if !s.install {
			env.info(fmt.Sprintf("package %s %s is installed", s.name, s.current))
			continue
		}
		todo++
		if s.want != "" && !apply {
			// "1.7.22" becomes the manager's own "1.7.22-1".
			exact, err := mgr.Resolve(ctx, s.name, s.want)
			if err != nil {
				return false, "", fmt.Errorf("install containerd packages: %w", err)
			}
			s.want = exact
		}
	}
	if todo > 0 && apply {
		// Resolves each step's version to the exact one it installs.
		if _, err := pl.applyInstall(ctx, env, mgr, DefaultCacheValid, ""); err != nil {
			return false, "", fmt.Errorf("install containerd packages: %w", err)
		}
		env.info(fmt.Sprintf("installed %d package(s) with %s", todo, mgr.Name()))
	}
	candidate := ""
	for _, s := range pl.steps {
		if s.install {
			from, to := s.current, s.want
			if from == "" {
				from = "not installed"
			}
			if to == "" {
				to = "newest"
			}
			d.line(fmt.Sprintf("install package %s: %s -> %s", s.name, from, to))
		}
		if candidate != "" || !strings.HasPrefix(s.name, "containerd") {
			continue
		}
		switch {
		case !s.install:
			candidate = s.current
		case s.want != "":
			candidate = s.want
		case !apply:
			candidate, _ = mgr.Resolve(ctx, s.name, "")
		}
	}
	return todo > 0, candidate, nil
}

// detectConfigVersion returns the config.toml version to render: the one
// asked for, else 3 for containerd 2.x and 2 for 1.x. pkgVersion is the
// containerd package's version (installed, or about to be) when this module
// manages the package; without it, `containerd --version` says.
func (c *Containerd) detectConfigVersion(ctx context.Context, env *Env, pkgVersion string) (int, error) {
	if c.configVersion != 0 {
		return c.configVersion, nil
	}
	if pkgVersion != "" {
		if v, err := configVersionFor(pkgVersion); err == nil {
			env.info(fmt.Sprintf("containerd package %s: config version %d", pkgVersion, v))
			return v, nil
		}
	}
	out, err := env.cmdRunner().Run(ctx, []string{"containerd", "--version"}, nil, nil)
	if err != nil {
		return 0, fmt.Errorf("detect the containerd version (set config_version to skip): %w", err)
	}
	// containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1
	// containerd github.com/containerd/containerd/v2 v2.0.0 207ad711
	f := strings.Fields(string(out))
	if len(f) < 3 {
		return 0, fmt.Errorf("detect the containerd version: cannot parse %q", strings.TrimSpace(string(out)))
	}
	v, err := configVersionFor(f[2])
	if err != nil {
		return 0, fmt.Errorf("detect the containerd version: %w", err)
	}
	env.info(fmt.Sprintf("containerd %s: config version %d", f[2], v))
	return v, nil
}

// configVersionFor maps a containerd (package) version to its config
// version.
func configVersionFor(version string) (int, error) {
	v := strings.TrimPrefix(version, "v")
	if i := strings.IndexByte(v, ':'); i >= 0 { // a Debian epoch
		v = v[i+1:]
	}
	major, _, _ := strings.Cut(v, ".")
	n, err := strconv.Atoi(major)
	switch {
	case err != nil:
		return 0, fmt.Errorf("containerd version %q has no major number", version)
	case n == 1:
		return 2, nil
	case n >= 2:
		return 3, nil
	}
	return 0, fmt.Errorf("containerd version %q is too old", version)
}

// files renders config.toml and the hosts.toml files.
func (c *Containerd) files(version int) []managedFile {
	out := []managedFile{{path: path.Join(c.configDir, "config.toml"), content: []byte(c.renderConfig(version)), mode: 0o644}}
	for _, m := range c.mirrors {
		out = append(out, managedFile{
			path:    path.Join(c.certsDir(), m.GetRegistry(), "hosts.toml"),
			content: []byte(renderHostsTOML(m)),
			mode:    0o644,
		})
	}
	return out
}

// renderConfig renders config.toml in config version 2 (containerd 1.x)
// or 3 (containerd 2.x).
func (c *Containerd) renderConfig(version int) string {
	var b strings.Builder
	b.WriteString(managedHeader)
	fmt.Fprintf(&b, "version = %d\n\n", version)
	q := func(s string) string { return `"` + s + `"` } // tomlSafe was checked
	fmt.Fprintf(&b, "[grpc]\n  address = %s\n", q(c.socket))
	section := func(name string, kv ...string) {
		fmt.Fprintf(&b, "\n[%s]\n", name)
		for i := 0; i+1 < len(kv); i += 2 {
			fmt.Fprintf(&b, "  %s = %s\n", kv[i], kv[i+1])
		}
	}
	cgroup := strconv.FormatBool(c.systemdCgroup)
	if version == 2 {
		const cri = `plugins."io.containerd.grpc.v1.cri"`
		if c.sandboxImage != "" {
			section(cri, "sandbox_image", q(c.sandboxImage))
		}
		section(cri+".containerd", "default_runtime_name", q("runc"))
		section(cri+".containerd.runtimes.runc", "runtime_type", q("io.containerd.runc.v2"))
		section(cri+".containerd.runtimes.runc.options", "SystemdCgroup", cgroup)
		section(cri+".registry", "config_path", q(c.certsDir()))
		return b.String()
	}
	const images, runtime = `plugins."io.containerd.cri.v1.images"`, `plugins."io.containerd.cri.v1.runtime"`
	if c.sandboxImage != "" {
		section(images+".pinned_images", "sandbox", q(c.sandboxImage))
	}
	section(images+".registry", "config_path", q(c.certsDir()))
	section(runtime+".containerd", "default_runtime_name", q("runc"))
	section(runtime+".containerd.runtimes.runc", "runtime_type", q("io.containerd.runc.v2"))
	section(runtime+".containerd.runtimes.runc.options", "SystemdCgroup", cgroup)
	return b.String()
}

// renderHostsTOML renders certs.d/<registry>/hosts.toml: the mirrors in
// order, then the registry itself (server) as the fallback.
func renderHostsTOML(m *agentv1.ContainerdModule_Mirror) string {
	var b strings.Builder
	b.WriteString(managedHeader)
	switch r := m.GetRegistry(); r {
	case "_default":
	case "docker.io":
		b.WriteString(`server = "https://registry-1.docker.io"` + "\n")
	default:
		b.WriteString(`server = "https://` + r + `"` + "\n")
	}
	for _, e := range m.GetEndpoints() {
		b.WriteString("\n[host.\"" + e + "\"]\n  capabilities = [\"pull\", \"resolve\"]\n")
	}
	return b.String()
}

// staleHosts returns removals of hosts.toml files that kthw wrote (they
// start with its header) for registries no longer listed.
func (c *Containerd) staleHosts(env *Env) ([]managedFile, error) {
	entries, err := os.ReadDir(env.Path(c.certsDir()))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", c.certsDir(), err)
	}
	var out []managedFile
	for _, e := range entries {
		if !e.IsDir() || slices.ContainsFunc(c.mirrors, func(m *agentv1.ContainerdModule_Mirror) bool { return m.GetRegistry() == e.Name() }) {
			continue
		}
		p := path.Join(c.certsDir(), e.Name(), "hosts.toml")
		b, err := os.ReadFile(env.Path(p))
		if err == nil && strings.HasPrefix(string(b), managedHeader) {
			out = append(out, managedFile{path: p, absent: true})
		}
	}
	return out, nil
}

// verify asks containerd for its version and checks that its CRI plugin
// loaded, waiting for the socket while containerd starts.
func (c *Containerd) verify(ctx context.Context, env *Env) error {
	sock := env.Path(c.socket)
	conn, err := grpc.NewClient("passthrough:///containerd",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}))
	if err != nil {
		return fmt.Errorf("verify containerd: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, c.verifyTimeout)
	defer cancel()
	v, err := versionsvc.NewVersionClient(conn).Version(ctx, &emptypb.Empty{}, grpc.WaitForReady(true))
	if err != nil {
		return fmt.Errorf("verify containerd: version service on %s: %w", c.socket, err)
	}
	plugins, err := introspection.NewIntrospectionClient(conn).Plugins(ctx, &introspection.PluginsRequest{})
	if err != nil {
		return fmt.Errorf("verify containerd %s: introspection service: %w", v.GetVersion(), err)
	}
	for _, p := range plugins.GetPlugins() {
		if p.GetType() != CRIPluginType || p.GetID() != CRIPluginID {
			continue
		}
		if ie := p.GetInitErr(); ie != nil {
			return fmt.Errorf("verify containerd %s: %w: %s.%s failed to initialize: %s", v.GetVersion(), ErrCRINotLoaded, CRIPluginType, CRIPluginID, ie.GetMessage())
		}
		env.info(fmt.Sprintf("containerd %s (revision %s) answers on %s; CRI plugin loaded", v.GetVersion(), v.GetRevision(), c.socket))
		return nil
	}
	return fmt.Errorf("verify containerd %s: %w: no %s.%s plugin (disabled in config?)", v.GetVersion(), ErrCRINotLoaded, CRIPluginType, CRIPluginID)
}
