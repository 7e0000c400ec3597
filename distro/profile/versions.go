package profile

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Component names, as cluster files and Matrix.Get use them.
const (
	Kubernetes = "kubernetes" // the control plane and kubeadm
	Kubelet    = "kubelet"
	Kubectl    = "kubectl"
	Containerd = "containerd"
	CNIPlugins = "cni-plugins"
	Calico     = "calico"
	MetalLB    = "metallb"
	CoreDNS    = "coredns"
	Etcd       = "etcd"
	Pause      = "pause" // the sandbox image's tag
)

// pinned are the components a profile gives a default and a range for;
// kubelet and kubectl follow kubernetes unless overridden, within the
// Kubernetes version-skew policy.
var pinned = []string{Kubernetes, Containerd, CNIPlugins, Calico, MetalLB, CoreDNS, Etcd, Pause}

// Components lists every component a Matrix has, in a fixed order.
func Components() []string {
	return []string{Kubernetes, Kubelet, Kubectl, Containerd, CNIPlugins, Calico, MetalLB, CoreDNS, Etcd, Pause}
}

// Matrix is the version of every component of one cluster.
type Matrix struct {
	// Kubernetes is the control plane's version (kube-apiserver, kubeadm):
	// v1.31.2.
	Kubernetes string `yaml:"kubernetes"`
	// Kubelet and Kubectl default to Kubernetes.
	Kubelet string `yaml:"kubelet"`
	Kubectl string `yaml:"kubectl"`
	// Containerd is in the distribution's own terms where it packages
	// containerd ("1.6.20" resolves to Debian's 1.6.20~ds1-1+deb12u1;
	// "1.7" to the newest 1.7.x on offer).
	Containerd string `yaml:"containerd"`
	CNIPlugins string `yaml:"cni-plugins"`
	Calico     string `yaml:"calico"`
	MetalLB    string `yaml:"metallb"`
	CoreDNS    string `yaml:"coredns"`
	// Etcd is the etcd image tag kubeadm runs: 3.5.15-0.
	Etcd string `yaml:"etcd"`
	// Pause is the sandbox image tag: 3.10.
	Pause string `yaml:"pause"`
}

func (m *Matrix) field(component string) *string {
	switch component {
	case Kubernetes:
		return &m.Kubernetes
	case Kubelet:
		return &m.Kubelet
	case Kubectl:
		return &m.Kubectl
	case Containerd:
		return &m.Containerd
	case CNIPlugins:
		return &m.CNIPlugins
	case Calico:
		return &m.Calico
	case MetalLB:
		return &m.MetalLB
	case CoreDNS:
		return &m.CoreDNS
	case Etcd:
		return &m.Etcd
	case Pause:
		return &m.Pause
	}
	return nil
}

// Get returns the version of a component ("" for an unknown one).
func (m Matrix) Get(component string) string {
	if f := m.field(component); f != nil {
		return *f
	}
	return ""
}

// KubernetesMinor returns the Kubernetes minor version, "v1.31", which
// names pkgs.k8s.io's repositories.
func (m Matrix) KubernetesMinor() string {
	v, err := parseVersion(m.Kubernetes)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("v%d.%d", v.nums[0], v.nums[1])
}

// SandboxImage is the pause image containerd and the kubelet use.
func (m Matrix) SandboxImage() string { return "registry.k8s.io/pause:" + m.Pause }

// Versions returns the profile's version matrix with overrides applied
// (component name -> version). It refuses unknown components, malformed
// versions, versions outside the profile's supported ranges and
// combinations the Kubernetes version-skew policy forbids: a kubelet newer
// than the control plane or more than three minor versions older, a
// kubectl more than one minor version away. Every problem is reported at
// once.
func (p *Profile) Versions(overrides map[string]string) (Matrix, error) {
	var m Matrix
	for _, c := range pinned {
		*m.field(c) = p.VersionRanges[c].Default
	}
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}
	keys := make([]string, 0, len(overrides))
	for k := range overrides {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return order(a) - order(b) })
	for _, c := range keys {
		v := strings.TrimSpace(overrides[c])
		if m.field(c) == nil {
			fail("unknown component %q (known: %s)", c, strings.Join(Components(), ", "))
			continue
		}
		if v == "" {
			fail("%s: version is empty", c)
			continue
		}
		*m.field(c) = v
	}
	// Each pinned component: well formed and in its range, written the
	// way the profile writes it ("v" or not).
	for _, c := range pinned {
		f := m.field(c)
		r := p.VersionRanges[c]
		*f = likeDefault(*f, r.Default)
		v, err := parseVersion(*f)
		if err != nil {
			fail("%s %q is not a version (e.g. %s)", c, *f, r.Default)
			continue
		}
		if !r.contains(v) {
			fail("%s %s is not supported by profile %s (supported: %s to %s)", c, *f, p.Name, r.Min, r.Max)
		}
	}
	// kubelet and kubectl: the control plane's unless set, then skew.
	for _, c := range []string{Kubelet, Kubectl} {
		f := m.field(c)
		if *f == "" {
			*f = m.Kubernetes
		}
		*f = likeDefault(*f, "v")
	}
	if err := checkSkew(m); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return Matrix{}, fmt.Errorf("profile %s versions: %w", p.Name, err)
	}
	return m, nil
}

func order(component string) int {
	if i := slices.Index(Components(), component); i >= 0 {
		return i
	}
	return len(Components())
}

// checkSkew applies the Kubernetes version-skew policy
// (kubernetes.io/releases/version-skew-policy): the kubelet is never newer
// than kube-apiserver and at most three minor versions older (kubeadm's
// MinimumKubeletVersion is the same); kubectl is within one minor version
// of kube-apiserver, older or newer.
func checkSkew(m Matrix) error {
	cp, err := parseVersion(m.Kubernetes)
	if err != nil {
		return nil // reported already
	}
	var errs []error
	for _, c := range []string{Kubelet, Kubectl} {
		v, err := parseVersion(m.Get(c))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %q is not a version (e.g. %s)", c, m.Get(c), m.Kubernetes))
			continue
		}
		if v.nums[0] != cp.nums[0] {
			errs = append(errs, fmt.Errorf("%s %s and kubernetes %s differ in their major version", c, m.Get(c), m.Kubernetes))
			continue
		}
		skew := v.nums[1] - cp.nums[1] // minor versions newer than the control plane
		switch {
		case c == Kubelet && v.compare(cp) > 0:
			errs = append(errs, fmt.Errorf("kubelet %s is newer than the control plane (kubernetes %s): a kubelet must not be newer than kube-apiserver", m.Kubelet, m.Kubernetes))
		case c == Kubelet && skew < -3:
			errs = append(errs, fmt.Errorf("kubelet %s is %d minor versions older than the control plane (kubernetes %s): at most 3 are supported", m.Kubelet, -skew, m.Kubernetes))
		case c == Kubectl && (skew > 1 || skew < -1):
			errs = append(errs, fmt.Errorf("kubectl %s is %d minor versions away from the control plane (kubernetes %s): kubectl is supported within one minor version", m.Kubectl, max(skew, -skew), m.Kubernetes))
		}
	}
	return errors.Join(errs...)
}

// likeDefault writes v with a leading "v" when def has one, without when
// def has none.
func likeDefault(v, def string) string {
	bare := strings.TrimPrefix(v, "v")
	if strings.HasPrefix(def, "v") {
		return "v" + bare
	}
	return bare
}

// version is a lenient semantic version: 1 to 3 numeric parts, an
// optional leading "v" and an optional suffix after "-", "+" or "~"
// ("3.5.15-0", "1.6.20~ds1"). A part may be a wildcard (only in range
// maxima).
type version struct {
	nums   [3]int
	n      int // how many parts were given
	wild   int // index of the first wildcard part, or -1
	suffix string
}

const wildcard = -1

func parseVersion(s string) (version, error) {
	return parseVersionWild(s, false)
}

func parseVersionWild(s string, allowWild bool) (version, error) {
	v := version{wild: -1}
	rest := strings.TrimPrefix(s, "v")
	if i := strings.IndexAny(rest, "-+~"); i >= 0 {
		rest, v.suffix = rest[:i], rest[i:]
	}
	parts := strings.Split(rest, ".")
	if rest == "" || len(parts) > 3 {
		return v, fmt.Errorf("%q is not a version", s)
	}
	for i, p := range parts {
		if allowWild && p == "x" {
			if i == 0 || i != len(parts)-1 || v.suffix != "" {
				return v, fmt.Errorf("%q: only the last part may be x", s)
			}
			v.nums[i], v.wild = wildcard, i
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || p == "" || (len(p) > 1 && p[0] == '0') {
			return v, fmt.Errorf("%q is not a version", s)
		}
		v.nums[i] = n
	}
	v.n = len(parts)
	return v, nil
}

// compare orders two versions; a wildcard part in either is larger than
// any number, missing parts are 0 and the suffix breaks ties.
func (v version) compare(o version) int {
	for i := 0; i < 3; i++ {
		a, b := v.nums[i], o.nums[i]
		if a == wildcard && b == wildcard {
			return 0
		}
		if a == wildcard {
			return 1
		}
		if b == wildcard {
			return -1
		}
		if a != b {
			return cmp.Compare(a, b)
		}
	}
	// A pre-release ("-rc.1") or Debian "~" suffix sorts before the
	// release; build metadata ("+...") does not count.
	rank := func(s string) int {
		if s == "" || s[0] == '+' {
			return 0
		}
		return -1
	}
	if a, b := rank(v.suffix), rank(o.suffix); a != b {
		return cmp.Compare(a, b)
	}
	if rank(v.suffix) == 0 {
		return 0
	}
	return strings.Compare(v.suffix, o.suffix)
}

// contains reports whether v is within the range, both ends included.
func (r VersionRange) contains(v version) bool {
	lo, err1 := parseVersion(r.Min)
	hi, err2 := parseVersionWild(r.Max, true)
	if err1 != nil || err2 != nil {
		return false
	}
	if v.n < lo.n {
		// "1.7" against 1.7.0..1.7.x stands for any 1.7.x (the package
		// manager installs the newest): every one of them must be in
		// range. Components whose versions have two parts (pause 3.10)
		// have two-part ranges.
		top := v
		for i := v.n; i < 3; i++ {
			top.nums[i] = wildcard
		}
		return v.compare(lo) >= 0 && top.compare(hi) <= 0
	}
	return v.compare(lo) >= 0 && v.compare(hi) <= 0
}

// check validates the range itself: both ends parse, min <= max and the
// default is inside.
func (r VersionRange) check() error {
	lo, err := parseVersion(r.Min)
	if err != nil {
		return fmt.Errorf("min: %w", err)
	}
	hi, err := parseVersionWild(r.Max, true)
	if err != nil {
		return fmt.Errorf("max: %w", err)
	}
	if lo.compare(hi) > 0 {
		return fmt.Errorf("min %s is above max %s", r.Min, r.Max)
	}
	d, err := parseVersion(r.Default)
	if err != nil {
		return fmt.Errorf("default: %w", err)
	}
	if !r.contains(d) {
		return fmt.Errorf("default %s is outside %s to %s", r.Default, r.Min, r.Max)
	}
	if strings.HasPrefix(r.Default, "v") != strings.HasPrefix(r.Min, "v") {
		return fmt.Errorf("default %s and min %s disagree on the leading v", r.Default, r.Min)
	}
	return nil
}
