// Package profile holds the distribution profiles kthw builds clusters
// from: debian, ubuntu, suse and rocky. A profile says which VM template a
// node boots from, which package manager it has and what to install from
// where (package names, repositories and their signing keys), which
// versions of the cluster's components it pins by default and which it
// supports when a cluster file overrides them, and how to prepare the
// kernel (modules, sysctls), the firewall and SELinux.
//
// The profiles are YAML data files under profiles/, embedded in the binary
// together with the repository keys under keys/.
package profile

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/goccy/go-yaml"

	"github.com/kthw/kthw/distro/pkg"
)

//go:embed profiles/*.yaml keys/*.asc
var files embed.FS

// Profile is one distribution's way of running Kubernetes.
type Profile struct {
	// Name is how cluster files and the CLI refer to the profile.
	Name string `yaml:"name"`
	// Description is a human name: "Debian 12 (bookworm)".
	Description string `yaml:"description"`
	// OS is the operating system the profile's nodes run.
	OS OS `yaml:"os"`
	// Template is the VM template (Proxmox) or image nodes boot from,
	// e.g. kthw-debian-12.
	Template string `yaml:"template"`
	// PackageManager is the pkg backend: apt, dnf or zypper.
	PackageManager string `yaml:"packageManager"`
	// VersionRanges is the default version of each pinned component and
	// the range of versions the profile supports, by component name
	// (kubernetes, containerd, cni-plugins, calico, metallb, coredns, etcd,
	// pause; kubelet and kubectl follow kubernetes).
	VersionRanges map[string]VersionRange `yaml:"versions"`
	// Packages are the distribution's package names.
	Packages Packages `yaml:"packages"`
	// Repositories are the package repositories the profile adds.
	Repositories []Repository `yaml:"repositories"`
	// KernelModules are loaded and persisted on every node.
	KernelModules []string `yaml:"kernelModules"`
	// Sysctls are set and persisted on every node, in order.
	Sysctls []Sysctl `yaml:"sysctls"`
	// Firewall is what the node firewall needs opened.
	Firewall Firewall `yaml:"firewall"`
	// SELinux is the mode nodes run SELinux in: permissive (rocky: the
	// kubeadm docs' advice until policies for every component exist), or
	// none where the distribution does not use SELinux.
	SELinux string `yaml:"selinux"`
}

// OS identifies an operating system release as os-release does.
type OS struct {
	// ID is os-release's ID: debian, ubuntu, opensuse-leap, rocky.
	ID string `yaml:"id"`
	// Version is os-release's VERSION_ID (its major part for rolling
	// point releases): "12", "24.04", "15", "9".
	Version string `yaml:"version"`
	// Codename is os-release's VERSION_CODENAME, where there is one.
	Codename string `yaml:"codename,omitempty"`
}

// Matches reports whether a node whose os-release says ID=id and
// VERSION_ID=versionID runs this release: the same ID, and the same
// version or a point release of it ("9.4" for "9", "15.6" for "15").
func (o OS) Matches(id, versionID string) bool {
	return id == o.ID && (versionID == o.Version || strings.HasPrefix(versionID, o.Version+"."))
}

// String is "ID VERSION".
func (o OS) String() string { return o.ID + " " + o.Version }

// VersionRange is a component's default version and the versions a
// cluster file may choose instead, both ends included. A part "x" in Max
// stands for any number: v1.31.x is every v1.31 patch release.
type VersionRange struct {
	Default string `yaml:"default"`
	Min     string `yaml:"min"`
	Max     string `yaml:"max"`
}

// Packages are package names in the distribution's package manager.
type Packages struct {
	// Base are installed on every node before anything else.
	Base []string `yaml:"base"`
	// Containerd provide containerd (and runc): containerd on Debian,
	// Ubuntu and SUSE, containerd.io from Docker's repository on Rocky.
	Containerd []string `yaml:"containerd"`
	// Kubernetes are pinned to the Kubernetes version and held.
	Kubernetes []string `yaml:"kubernetes"`
}

// Repository is a package repository of the profile. URI and Description
// may contain {minor}, the Kubernetes minor version ("v1.31"): pkgs.k8s.io
// has one repository per minor.
type Repository struct {
	// Name names the repository's files on the node.
	Name string `yaml:"name"`
	// Purpose is what the repository provides: kubernetes or containerd.
	Purpose     string `yaml:"purpose"`
	Description string `yaml:"description"`
	URI         string `yaml:"uri"`
	// Suite and Components are apt's; flat repositories use suite "/".
	Suite      string   `yaml:"suite,omitempty"`
	Components []string `yaml:"components,omitempty"`
	// Key names the embedded signing key (keys/<key>.asc). Empty means the
	// key must come from the cluster file.
	Key string `yaml:"key,omitempty"`
}

// Sysctl is one kernel parameter.
type Sysctl struct {
	Key   string `yaml:"key"`
	Value string `yaml:"value"`
}

// Firewall is what a node's firewall must let in.
type Firewall struct {
	// Tool is the firewall the distribution runs: ufw, firewalld, or none.
	Tool string `yaml:"tool"`
	// ControlPlane ports are opened on control-plane nodes.
	ControlPlane []Port `yaml:"controlPlane,omitempty"`
	// Worker ports are opened on worker nodes.
	Worker []Port `yaml:"worker,omitempty"`
	// All ports are opened on every node (CNI, load balancer).
	All []Port `yaml:"all,omitempty"`
}

// Port is a port or range ("30000-32767") and its protocol.
type Port struct {
	Port     string `yaml:"port"`
	Protocol string `yaml:"protocol"`
	Purpose  string `yaml:"purpose"`
}

// ErrUnknown marks a profile name that is not embedded.
var ErrUnknown = errors.New("unknown profile")

var (
	loadOnce sync.Once
	loaded   map[string]*Profile
	loadErr  error
)

// load parses every embedded profile once.
func load() (map[string]*Profile, error) {
	loadOnce.Do(func() {
		loaded, loadErr = parseAll(files)
	})
	return loaded, loadErr
}

func parseAll(fsys fs.FS) (map[string]*Profile, error) {
	names, err := fs.Glob(fsys, "profiles/*.yaml")
	if err != nil {
		return nil, err
	}
	out := map[string]*Profile{}
	for _, name := range names {
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		var p Profile
		if err := yaml.NewDecoder(bytes.NewReader(b), yaml.Strict()).Decode(&p); err != nil {
			return nil, fmt.Errorf("load profile %s: %w", name, err)
		}
		if want := strings.TrimSuffix(path.Base(name), ".yaml"); p.Name != want {
			return nil, fmt.Errorf("load profile %s: name %q does not match the file name", name, p.Name)
		}
		if err := p.validate(fsys); err != nil {
			return nil, fmt.Errorf("load profile %s: %w", name, err)
		}
		out[p.Name] = &p
	}
	return out, nil
}

// List returns the names of the embedded profiles, sorted.
func List() []string {
	ps, err := load()
	if err != nil {
		panic(err) // the embedded files are checked by the package's tests
	}
	names := make([]string, 0, len(ps))
	for n := range ps {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Get returns the profile called name. The profile is shared: callers must
// not change it.
func Get(name string) (*Profile, error) {
	ps, err := load()
	if err != nil {
		return nil, err
	}
	p, ok := ps[name]
	if !ok {
		return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknown, name, strings.Join(List(), ", "))
	}
	return p, nil
}

// validate checks a profile's own consistency: every component has a
// default inside its range, the package manager is known, the keys exist
// and parse, the kernel settings are well formed.
func (p *Profile) validate(fsys fs.FS) error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if p.Description == "" || p.Template == "" || p.OS.ID == "" || p.OS.Version == "" {
		add("description, template, os.id and os.version are required")
	}
	if !slices.Contains(pkg.Names(), p.PackageManager) {
		add("packageManager %q is not one of %s", p.PackageManager, strings.Join(pkg.Names(), ", "))
	}
	for _, c := range pinned {
		r, ok := p.VersionRanges[c]
		if !ok {
			add("versions: %s is missing", c)
			continue
		}
		if err := r.check(); err != nil {
			add("versions: %s: %w", c, err)
		}
	}
	for c := range p.VersionRanges {
		if !slices.Contains(pinned, c) {
			add("versions: unknown component %q (known: %s)", c, strings.Join(pinned, ", "))
		}
	}
	if len(p.Packages.Containerd) == 0 || len(p.Packages.Kubernetes) == 0 {
		add("packages: containerd and kubernetes are required")
	}
	for i, r := range p.Repositories {
		if r.Purpose != "kubernetes" && r.Purpose != "containerd" {
			add("repositories[%d]: purpose %q is not kubernetes or containerd", i, r.Purpose)
		}
		if r.Key != "" {
			if _, err := fs.ReadFile(fsys, "keys/"+r.Key+".asc"); err != nil {
				add("repositories[%d]: key %q: %w", i, r.Key, err)
			}
		}
		if err := pkg.CheckRepoName(r.Name); err != nil {
			add("repositories[%d]: %w", i, err)
		}
		if !strings.Contains(r.URI, "://") {
			add("repositories[%d]: uri %q is not a URL", i, r.URI)
		}
	}
	if len(p.KernelModules) == 0 || len(p.Sysctls) == 0 {
		add("kernelModules and sysctls are required")
	}
	for _, s := range p.Sysctls {
		if s.Key == "" || strings.ContainsAny(s.Key, " =/") || s.Value == "" {
			add("sysctl %q = %q is not valid", s.Key, s.Value)
		}
	}
	switch p.Firewall.Tool {
	case "none":
		if len(p.Firewall.ControlPlane)+len(p.Firewall.Worker)+len(p.Firewall.All) > 0 {
			add("firewall: tool none lists ports")
		}
	case "ufw", "firewalld":
		for _, port := range slices.Concat(p.Firewall.ControlPlane, p.Firewall.Worker, p.Firewall.All) {
			if port.Protocol != "tcp" && port.Protocol != "udp" || port.Port == "" {
				add("firewall: port %q/%q is not valid", port.Port, port.Protocol)
			}
		}
	default:
		add("firewall: tool %q is not ufw, firewalld or none", p.Firewall.Tool)
	}
	switch p.SELinux {
	case "none", "permissive", "enforcing":
	default:
		add("selinux %q is not none, permissive or enforcing", p.SELinux)
	}
	return errors.Join(errs...)
}
