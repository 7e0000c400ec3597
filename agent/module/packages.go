package module

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/kthw/kthw/distro/pkg"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

var _ Module = (*Packages)(nil)

// DefaultCacheValid is how old the package index may be before an install
// refreshes it, unless the request says otherwise.
const DefaultCacheValid = time.Hour

// Packages installs (optionally pinned and held) or removes packages with
// the node's package manager.
//
// Check compares what is installed (and held) with the request without
// touching the network. Apply refreshes the index only when it is stale and
// something must be installed, resolves each requested version to the exact
// one the repositories offer (so "1.6.20" installs "1.6.20~ds1-1+deb12u3"),
// installs, verifies the result and holds. Packages that are installed at a
// matching version (and held, when asked) are left alone: a second run
// reports unchanged. Without hold, existing holds are left as they are; a
// held package that must change is changed and stays held.
type Packages struct {
	pkgs    []pkg.Package
	absent  bool
	hold    bool
	maxAge  time.Duration
	manager string
}

// NewPackages validates m and returns the module that carries it out.
func NewPackages(m *agentv1.PackagesModule) (*Packages, error) {
	p := &Packages{
		absent:  m.GetState() == agentv1.PackagesModule_STATE_ABSENT,
		hold:    m.GetHold(),
		maxAge:  time.Duration(m.GetCacheValidSeconds()) * time.Second,
		manager: m.GetManager(),
	}
	switch m.GetState() {
	case agentv1.PackagesModule_STATE_PRESENT, agentv1.PackagesModule_STATE_ABSENT:
	default:
		return nil, fmt.Errorf("%w: unknown state %v", ErrInvalid, m.GetState())
	}
	if m.GetCacheValidSeconds() < 0 {
		return nil, fmt.Errorf("%w: cache_valid_seconds %d is negative", ErrInvalid, m.GetCacheValidSeconds())
	}
	if p.maxAge == 0 {
		p.maxAge = DefaultCacheValid
	}
	if err := checkManagerName(p.manager); err != nil {
		return nil, err
	}
	if p.absent && p.hold {
		return nil, fmt.Errorf("%w: hold has no meaning with state absent", ErrInvalid)
	}
	for _, mp := range m.GetPackages() {
		p.pkgs = append(p.pkgs, pkg.Package{Name: mp.GetName(), Version: mp.GetVersion()})
	}
	if err := checkPackages(p.pkgs); err != nil {
		return nil, err
	}
	if p.absent {
		for _, x := range p.pkgs {
			if x.Version != "" {
				return nil, fmt.Errorf("%w: package %s: a version has no meaning with state absent", ErrInvalid, x.Name)
			}
		}
	}
	return p, nil
}

func checkManagerName(name string) error {
	if name != "" && !slices.Contains(pkg.Names(), name) {
		return fmt.Errorf("%w: manager %q is not one of %s", ErrInvalid, name, strings.Join(pkg.Names(), ", "))
	}
	return nil
}

func checkPackages(pkgs []pkg.Package) error {
	if len(pkgs) == 0 {
		return fmt.Errorf("%w: no packages", ErrInvalid)
	}
	seen := map[string]bool{}
	for _, p := range pkgs {
		if p.Name == "" || strings.HasPrefix(p.Name, "-") || strings.ContainsAny(p.Name, " \t\n=<>*?[]/\\'\"") {
			return fmt.Errorf("%w: package name %q is not valid", ErrInvalid, p.Name)
		}
		if strings.HasPrefix(p.Version, "-") || strings.ContainsAny(p.Version, " \t\n=<>*?[]/\\'\"") {
			return fmt.Errorf("%w: package %s: version %q is not valid", ErrInvalid, p.Name, p.Version)
		}
		if seen[p.Name] {
			return fmt.Errorf("%w: package %s is listed twice", ErrInvalid, p.Name)
		}
		seen[p.Name] = true
	}
	return nil
}

// Check reports what Apply would install, hold or remove.
func (p *Packages) Check(ctx context.Context, env *Env) (Result, error) {
	_, pl, err := p.plan(ctx, env)
	if err != nil {
		return Result{}, err
	}
	return pl.result(), nil
}

// Apply installs and holds, or removes.
func (p *Packages) Apply(ctx context.Context, env *Env) (Result, error) {
	mgr, pl, err := p.plan(ctx, env)
	if err != nil {
		return Result{}, err
	}
	if p.absent {
		return pl.applyRemove(ctx, env, mgr)
	}
	return pl.applyInstall(ctx, env, mgr, p.maxAge, "")
}

// plan finds the package manager and compares the node with the request.
func (p *Packages) plan(ctx context.Context, env *Env) (pkg.Manager, *pkgPlan, error) {
	mgr, err := packageManager(ctx, env, p.manager)
	if err != nil {
		return nil, nil, err
	}
	var pl *pkgPlan
	if p.absent {
		pl, err = planRemove(ctx, mgr, p.pkgs)
	} else {
		pl, err = planInstall(ctx, mgr, p.pkgs, p.hold)
	}
	if err != nil {
		return nil, nil, err
	}
	return mgr, pl, nil
}

// packageManager returns the node's package manager, or the one named.
func packageManager(ctx context.Context, env *Env, name string) (pkg.Manager, error) {
	if env.Packages == nil {
		return nil, errors.New("find package manager: this agent has no package manager backend")
	}
	m, err := env.Packages(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("find package manager: %w", err)
	}
	return m, nil
}

// pkgStep is what happens to one package.
type pkgStep struct {
	name    string
	want    string // requested version ("" any), then the exact one resolved
	current string // installed version, "" when not installed
	install bool
	hold    bool // needs a hold it does not have
	held    bool // has a hold
	remove  bool
}

// pkgPlan is what a packages module has to do.
type pkgPlan struct {
	steps []*pkgStep
	hold  bool
}

func planInstall(ctx context.Context, mgr pkg.Manager, pkgs []pkg.Package, hold bool) (*pkgPlan, error) {
	names := packageNames(pkgs)
	installed, err := mgr.Installed(ctx, names)
	if err != nil {
		return nil, err
	}
	held := map[string]bool{}
	if hold {
		if held, err = mgr.Held(ctx, names); err != nil {
			return nil, err
		}
	}
	pl := &pkgPlan{hold: hold}
	for _, p := range pkgs {
		cur, ok := installed[p.Name]
		s := &pkgStep{name: p.Name, want: p.Version, current: cur, held: held[p.Name]}
		s.install = !ok || !pkg.MatchVersion(cur, p.Version)
		s.hold = hold && !s.held
		pl.steps = append(pl.steps, s)
	}
	return pl, nil
}

func planRemove(ctx context.Context, mgr pkg.Manager, pkgs []pkg.Package) (*pkgPlan, error) {
	installed, err := mgr.Installed(ctx, packageNames(pkgs))
	if err != nil {
		return nil, err
	}
	pl := &pkgPlan{}
	for _, p := range pkgs {
		cur, ok := installed[p.Name]
		pl.steps = append(pl.steps, &pkgStep{name: p.Name, current: cur, remove: ok})
	}
	return pl, nil
}

func (pl *pkgPlan) changed() bool {
	for _, s := range pl.steps {
		if s.install || s.hold || s.remove {
			return true
		}
	}
	return false
}

// diff describes the plan, one line a package that changes.
func (pl *pkgPlan) diff() string {
	var b strings.Builder
	for _, s := range pl.steps {
		want := s.want
		if want == "" {
			want = "(newest)"
		}
		switch {
		case s.remove:
			fmt.Fprintf(&b, "remove %s %s\n", s.name, s.current)
		case s.install && s.current == "":
			fmt.Fprintf(&b, "install %s %s\n", s.name, want)
		case s.install:
			fmt.Fprintf(&b, "change %s %s -> %s\n", s.name, s.current, want)
		}
		if s.hold {
			fmt.Fprintf(&b, "hold %s\n", s.name)
		}
	}
	return b.String()
}

func (pl *pkgPlan) result() Result {
	return Result{Changed: pl.changed(), Diff: pl.diff()}
}

// unchanged describes packages that are as requested.
func (pl *pkgPlan) unchanged() string {
	var parts []string
	for _, s := range pl.steps {
		if s.remove {
			continue
		}
		if s.current == "" {
			parts = append(parts, s.name+" is not installed")
			continue
		}
		msg := s.name + " " + s.current
		if pl.hold {
			msg += " is already installed and held"
		} else {
			msg += " is already installed"
		}
		parts = append(parts, msg)
	}
	return strings.Join(parts, "; ")
}

// applyInstall refreshes a stale index (only when something must be
// installed), resolves the wanted versions, installs, checks what got
// installed and holds. unchangedMsg, when set, replaces the log line of a
// run with nothing to do.
func (pl *pkgPlan) applyInstall(ctx context.Context, env *Env, mgr pkg.Manager, maxAge time.Duration, unchangedMsg string) (Result, error) {
	if !pl.changed() {
		if unchangedMsg == "" {
			unchangedMsg = pl.unchanged()
		}
		env.info(unchangedMsg)
		return Result{}, nil
	}
	var install []pkg.Package
	for _, s := range pl.steps {
		if s.install {
			install = append(install, pkg.Package{Name: s.name, Version: s.want})
		}
	}
	if len(install) > 0 {
		refreshed, err := mgr.Refresh(ctx, maxAge)
		if err != nil {
			return Result{}, err
		}
		if refreshed {
			env.info("refreshed the package index")
		} else {
			env.info(fmt.Sprintf("package index is younger than %s; not refreshed", maxAge))
		}
		for i, p := range install {
			if p.Version == "" {
				continue
			}
			if err := ctx.Err(); err != nil {
				return Result{}, err
			}
			exact, err := mgr.Resolve(ctx, p.Name, p.Version)
			if err != nil {
				return Result{}, err
			}
			if exact != p.Version {
				env.info(fmt.Sprintf("%s %s resolves to %s", p.Name, p.Version, exact))
			}
			install[i].Version = exact
			pl.step(p.Name).want = exact
		}
		env.info("installing " + pkgList(install))
		env.logger().InfoContext(ctx, "installing packages", "manager", mgr.Name(), "packages", pkgList(install))
		if err := mgr.Install(ctx, install); err != nil {
			return Result{Changed: true, Diff: pl.diff()}, err
		}
		if err := verifyInstalled(ctx, mgr, install); err != nil {
			return Result{Changed: true, Diff: pl.diff()}, err
		}
	}
	var hold []string
	for _, s := range pl.steps {
		if s.hold {
			hold = append(hold, s.name)
		}
	}
	if len(hold) > 0 {
		if err := mgr.Hold(ctx, hold, true); err != nil {
			return Result{Changed: true, Diff: pl.diff()}, err
		}
		env.info("held " + strings.Join(hold, ", "))
	}
	return pl.result(), nil
}

// verifyInstalled checks that the manager installed what it was asked for.
func verifyInstalled(ctx context.Context, mgr pkg.Manager, want []pkg.Package) error {
	got, err := mgr.Installed(ctx, packageNames(want))
	if err != nil {
		return fmt.Errorf("verify installed packages: %w", err)
	}
	var bad []string
	for _, p := range want {
		v, ok := got[p.Name]
		switch {
		case !ok:
			bad = append(bad, p.Name+" is not installed")
		case !pkg.MatchVersion(v, p.Version):
			bad = append(bad, fmt.Sprintf("%s is at %s, not %s", p.Name, v, p.Version))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("verify installed packages: %s", strings.Join(bad, "; "))
	}
	return nil
}

func (pl *pkgPlan) applyRemove(ctx context.Context, env *Env, mgr pkg.Manager) (Result, error) {
	var rm []string
	for _, s := range pl.steps {
		if s.remove {
			rm = append(rm, s.name)
		}
	}
	if len(rm) == 0 {
		env.info(strings.Join(packageNamesOf(pl.steps), ", ") + ": not installed")
		return Result{}, nil
	}
	env.info("removing " + strings.Join(rm, ", "))
	if err := mgr.Remove(ctx, rm); err != nil {
		return Result{Changed: true, Diff: pl.diff()}, err
	}
	left, err := mgr.Installed(ctx, rm)
	if err != nil {
		return Result{Changed: true, Diff: pl.diff()}, fmt.Errorf("verify removed packages: %w", err)
	}
	if len(left) > 0 {
		return Result{Changed: true, Diff: pl.diff()}, fmt.Errorf("verify removed packages: still installed: %s", strings.Join(slices.Sorted(maps.Keys(left)), ", "))
	}
	return pl.result(), nil
}

func (pl *pkgPlan) step(name string) *pkgStep {
	for _, s := range pl.steps {
		if s.name == name {
			return s
		}
	}
	return nil
}

func packageNames(pkgs []pkg.Package) []string {
	n := make([]string, len(pkgs))
	for i, p := range pkgs {
		n[i] = p.Name
	}
	return n
}

func packageNamesOf(steps []*pkgStep) []string {
	n := make([]string, len(steps))
	for i, s := range steps {
		n[i] = s.name
	}
	return n
}

func pkgList(pkgs []pkg.Package) string {
	s := make([]string, len(pkgs))
	for i, p := range pkgs {
		s[i] = p.Name
		if p.Version != "" {
			s[i] += " " + p.Version
		}
	}
	return strings.Join(s, ", ")
}
