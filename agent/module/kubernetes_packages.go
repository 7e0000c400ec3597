package module

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/kthw/kthw/distro/pkg"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

var _ Module = (*KubernetesPackages)(nil)

// DefaultKubernetesPackages are the packages KubernetesPackagesModule pins
// unless the request names others.
var DefaultKubernetesPackages = []string{"kubelet", "kubeadm", "kubectl"}

// kubernetesVersion is a Kubernetes release: v1.31.2 or 1.31.2 (pkgs.k8s.io
// keeps pre-releases in other repositories).
var kubernetesVersion = regexp.MustCompile(`^v?[0-9]+\.[0-9]+\.[0-9]+$`)

// KubernetesPackages installs kubelet, kubeadm and kubectl (or the packages
// named) at one Kubernetes version and holds them, so that an ordinary
// upgrade of the node never moves them. The version is a Kubernetes release
// ("v1.31.2"); each package's exact version is resolved through the
// repositories ("1.31.2-1.1" on pkgs.k8s.io's deb repositories,
// "1.31.2-150500.1.1" on its rpm ones). Installed at that release and held,
// the packages are left alone and the run reports unchanged.
type KubernetesPackages struct {
	version string // without the "v"
	pkgs    []pkg.Package
	manager string
}

// NewKubernetesPackages validates m and returns the module that carries it
// out.
func NewKubernetesPackages(m *agentv1.KubernetesPackagesModule) (*KubernetesPackages, error) {
	v := m.GetVersion()
	if v == "" {
		return nil, fmt.Errorf("%w: version is empty (a Kubernetes release such as v1.31.2)", ErrInvalid)
	}
	if !kubernetesVersion.MatchString(v) {
		return nil, fmt.Errorf("%w: version %q is not a Kubernetes release such as v1.31.2", ErrInvalid, v)
	}
	if err := checkManagerName(m.GetManager()); err != nil {
		return nil, err
	}
	k := &KubernetesPackages{version: strings.TrimPrefix(v, "v"), manager: m.GetManager()}
	names := m.GetPackages()
	if len(names) == 0 {
		names = DefaultKubernetesPackages
	}
	for _, n := range names {
		k.pkgs = append(k.pkgs, pkg.Package{Name: n, Version: k.version})
	}
	if err := checkPackages(k.pkgs); err != nil {
		return nil, err
	}
	return k, nil
}

// Check reports which packages would be installed, changed or held.
func (k *KubernetesPackages) Check(ctx context.Context, env *Env) (Result, error) {
	_, pl, err := k.plan(ctx, env)
	if err != nil {
		return Result{}, err
	}
	return pl.result(), nil
}

// Apply installs the packages pinned to the release and holds them.
func (k *KubernetesPackages) Apply(ctx context.Context, env *Env) (Result, error) {
	mgr, pl, err := k.plan(ctx, env)
	if err != nil {
		return Result{}, err
	}
	names := strings.Join(packageNames(k.pkgs), ", ")
	msg := fmt.Sprintf("%s %s already installed and held", names, k.version)
	return pl.applyInstall(ctx, env, mgr, DefaultCacheValid, msg)
}

// plan finds the package manager and compares the node with the request.
func (k *KubernetesPackages) plan(ctx context.Context, env *Env) (pkg.Manager, *pkgPlan, error) {
	mgr, err := packageManager(ctx, env, k.manager)
	if err != nil {
		return nil, nil, err
	}
	pl, err := planInstall(ctx, mgr, k.pkgs, true)
	if err != nil {
		return nil, nil, err
	}
	return mgr, pl, nil
}
