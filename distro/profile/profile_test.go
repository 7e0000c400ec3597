package profile

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/kthw/kthw/distro/pkg"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, got string) {
	t.Helper()
	path := filepath.Join("testdata", t.Name()+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (run with -update to accept):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func get(t *testing.T, name string) *Profile {
	t.Helper()
	p, err := Get(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestList(t *testing.T) {
	if got, want := List(), []string{"debian", "rocky", "suse", "ubuntu"}; !slices.Equal(got, want) {
		t.Errorf("List = %q, want %q", got, want)
	}
}

func TestGetUnknown(t *testing.T) {
	_, err := Get("arch")
	if !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), `"arch" (known: debian, rocky, suse, ubuntu)`) {
		t.Fatalf("Get(arch): %v", err)
	}
}

func TestProfiles(t *testing.T) {
	tests := []struct {
		name, manager, template, firewall, selinux string
		containerd                                 []string
		kubernetes, calico, metallb                string
	}{
		{"debian", pkg.APT, "kthw-debian-12", "none", "none", []string{"containerd"}, "v1.31.2", "v3.28.0", "v0.14.8"},
		{"ubuntu", pkg.APT, "kthw-ubuntu-24.04", "ufw", "none", []string{"containerd"}, "v1.31.2", "v3.28.0", "v0.14.8"},
		{"suse", pkg.Zypper, "kthw-opensuse-leap-15", "firewalld", "none", []string{"containerd"}, "v1.30.6", "v3.27.0", "v0.14.5"},
		{"rocky", pkg.DNF, "kthw-rocky-9", "firewalld", "permissive", []string{"containerd.io"}, "v1.31.2", "v3.28.0", "v0.14.8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := get(t, tt.name)
			if p.PackageManager != tt.manager || p.Template != tt.template || p.Firewall.Tool != tt.firewall || p.SELinux != tt.selinux {
				t.Errorf("manager %s template %s firewall %s selinux %s", p.PackageManager, p.Template, p.Firewall.Tool, p.SELinux)
			}
			if !slices.Equal(p.Packages.Containerd, tt.containerd) || !slices.Equal(p.Packages.Kubernetes, []string{"kubelet", "kubeadm", "kubectl"}) {
				t.Errorf("packages %+v", p.Packages)
			}
			m, err := p.Versions(nil)
			if err != nil {
				t.Fatal(err)
			}
			if m.Kubernetes != tt.kubernetes || m.Calico != tt.calico || m.MetalLB != tt.metallb || m.Kubelet != m.Kubernetes || m.Kubectl != m.Kubernetes {
				t.Errorf("matrix %+v", m)
			}
			if !slices.Equal(p.KernelModules, []string{"overlay", "br_netfilter"}) {
				t.Errorf("kernel modules %q", p.KernelModules)
			}
			want := []Sysctl{{"net.bridge.bridge-nf-call-iptables", "1"}, {"net.bridge.bridge-nf-call-ip6tables", "1"}, {"net.ipv4.ip_forward", "1"}}
			if !slices.Equal(p.Sysctls, want) {
				t.Errorf("sysctls %+v", p.Sysctls)
			}
			if p.Firewall.Tool != "none" && !slices.ContainsFunc(p.Firewall.ControlPlane, func(p Port) bool { return p.Port == "6443" && p.Protocol == "tcp" }) {
				t.Errorf("firewall does not open 6443/tcp on the control plane: %+v", p.Firewall)
			}
			if !strings.HasPrefix(m.SandboxImage(), "registry.k8s.io/pause:3.") {
				t.Errorf("sandbox image %s", m.SandboxImage())
			}
		})
	}
}

func TestVersions(t *testing.T) {
	tests := []struct {
		profile   string
		overrides map[string]string
		check     func(Matrix) bool
		errs      []string // all must appear; none means success
	}{
		{"ubuntu", nil, func(m Matrix) bool { return m.Kubernetes == "v1.31.2" && m.Containerd == "1.7" }, nil},
		{"ubuntu", map[string]string{"kubernetes": "v1.31.5"},
			func(m Matrix) bool {
				return m.Kubernetes == "v1.31.5" && m.Kubelet == "v1.31.5" && m.Kubectl == "v1.31.5"
			}, nil},
		{"ubuntu", map[string]string{"kubernetes": "1.31.5", "calico": "3.28.2", "etcd": "v3.5.16-0"},
			func(m Matrix) bool { return m.Kubernetes == "v1.31.5" && m.Calico == "v3.28.2" && m.Etcd == "3.5.16-0" }, nil},
		{"ubuntu", map[string]string{"kubelet": "v1.28.15", "kubectl": "v1.30.0"},
			func(m Matrix) bool { return m.Kubelet == "v1.28.15" && m.Kubectl == "v1.30.0" }, nil},
		{"ubuntu", map[string]string{"kubectl": "v1.32.0"}, func(m Matrix) bool { return m.Kubectl == "v1.32.0" }, nil},
		{"debian", map[string]string{"containerd": "1.6.20"}, func(m Matrix) bool { return m.Containerd == "1.6.20" }, nil},
		{"ubuntu", map[string]string{"containerd": "1.7.27"}, func(m Matrix) bool { return m.Containerd == "1.7.27" }, nil},
		{"suse", map[string]string{"pause": "3.10"}, func(m Matrix) bool { return m.Pause == "3.10" }, nil},

		{"ubuntu", map[string]string{"kubelett": "v1.31.2"}, nil, []string{`unknown component "kubelett" (known: kubernetes, kubelet, kubectl, containerd, cni-plugins, calico, metallb, coredns, etcd, pause)`}},
		{"ubuntu", map[string]string{"kubernetes": "v1.32.0"}, nil, []string{"kubernetes v1.32.0 is not supported by profile ubuntu (supported: v1.31.0 to v1.31.x)"}},
		{"suse", map[string]string{"kubernetes": "v1.31.2"}, nil, []string{"kubernetes v1.31.2 is not supported by profile suse (supported: v1.30.0 to v1.30.x)"}},
		{"ubuntu", map[string]string{"calico": "v3.27.0"}, nil, []string{"calico v3.27.0 is not supported by profile ubuntu (supported: v3.28.0 to v3.28.x)"}},
		{"debian", map[string]string{"containerd": "1.7.22"}, nil, []string{"containerd 1.7.22 is not supported by profile debian (supported: 1.6.20 to 1.6.x)"}},
		{"ubuntu", map[string]string{"kubernetes": "latest"}, nil, []string{`kubernetes "vlatest" is not a version (e.g. v1.31.2)`}},
		{"ubuntu", map[string]string{"metallb": ""}, nil, []string{"metallb: version is empty"}},
		{"ubuntu", map[string]string{"kubelet": "v1.31.3"}, nil, []string{"kubelet v1.31.3 is newer than the control plane (kubernetes v1.31.2)"}},
		{"ubuntu", map[string]string{"kubelet": "v1.32.0"}, nil, []string{"kubelet v1.32.0 is newer than the control plane"}},
		{"ubuntu", map[string]string{"kubelet": "v1.27.9"}, nil, []string{"kubelet v1.27.9 is 4 minor versions older than the control plane (kubernetes v1.31.2): at most 3 are supported"}},
		{"ubuntu", map[string]string{"kubectl": "v1.29.0"}, nil, []string{"kubectl v1.29.0 is 2 minor versions away from the control plane (kubernetes v1.31.2)"}},
		{"ubuntu", map[string]string{"kubectl": "v1.33.1"}, nil, []string{"kubectl v1.33.1 is 2 minor versions away"}},
		{"ubuntu", map[string]string{"kubectl": "v2.31.0"}, nil, []string{"kubectl v2.31.0 and kubernetes v1.31.2 differ in their major version"}},
		// Every problem at once.
		{"ubuntu", map[string]string{"calico": "v1", "metallb": "v0.13.0", "kubelet": "v1.31.9", "nope": "1"}, nil,
			[]string{`unknown component "nope"`, "calico v1 is not supported", "metallb v0.13.0 is not supported", "kubelet v1.31.9 is newer"}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %v", tt.profile, tt.overrides), func(t *testing.T) {
			m, err := get(t, tt.profile).Versions(tt.overrides)
			if len(tt.errs) == 0 {
				if err != nil {
					t.Fatalf("Versions: %v", err)
				}
				if !tt.check(m) {
					t.Errorf("matrix %+v", m)
				}
				return
			}
			if err == nil {
				t.Fatalf("Versions = %+v, want an error", m)
			}
			if !strings.HasPrefix(err.Error(), "profile "+tt.profile+" versions: ") {
				t.Errorf("error does not name the profile: %v", err)
			}
			for _, e := range tt.errs {
				if !strings.Contains(err.Error(), e) {
					t.Errorf("error lacks %q:\n%v", e, err)
				}
			}
		})
	}
}

func TestVersionRange(t *testing.T) {
	r := VersionRange{Default: "1.7", Min: "1.7.0", Max: "1.7.x"}
	for v, in := range map[string]bool{"1.7": true, "1.7.0": true, "1.7.99": true, "1.6.99": false, "1.8.0": false, "1.8": false, "1": false, "1.7.0-rc.1": false} {
		pv, err := parseVersion(v)
		if err != nil {
			t.Fatalf("parse %s: %v", v, err)
		}
		if got := r.contains(pv); got != in {
			t.Errorf("%s in %s..%s = %v, want %v", v, r.Min, r.Max, got, in)
		}
	}
	for _, bad := range []string{"", "v", "1.x", "1..2", "01.2", "1.2.3.4", "a.b"} {
		if _, err := parseVersion(bad); err == nil {
			t.Errorf("parseVersion(%q) succeeded", bad)
		}
	}
	for _, bad := range []VersionRange{
		{Default: "1.0", Min: "2.0", Max: "1.x"},
		{Default: "3.0", Min: "1.0", Max: "2.x"},
		{Default: "v1.0.0", Min: "1.0.0", Max: "1.x"},
		{Default: "1.0", Min: "1.0", Max: "x"},
	} {
		if err := bad.check(); err == nil {
			t.Errorf("check(%+v) = nil", bad)
		}
	}
}

func TestRepositoriesFor(t *testing.T) {
	p := get(t, "rocky")
	m, err := p.Versions(map[string]string{"kubernetes": "v1.31.4"})
	if err != nil {
		t.Fatal(err)
	}
	repos, err := p.RepositoriesFor(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(repos) != 2 || repos[0].Purpose != "kubernetes" || repos[0].URI != "https://pkgs.k8s.io/core:/stable:/v1.31/rpm/" ||
		repos[0].Description != "Kubernetes v1.31 (pkgs.k8s.io)" || repos[1].Purpose != "containerd" {
		t.Fatalf("repositories %+v", repos)
	}
	other, err := os.ReadFile("keys/download.docker.com-rpm.asc")
	if err != nil {
		t.Fatal(err)
	}
	repos, err = p.RepositoriesFor(m, map[string][]byte{"kubernetes": other})
	if err != nil || string(repos[0].Key) != string(other) {
		t.Fatalf("key override not used: %v", err)
	}
	_, err = p.RepositoriesFor(m, map[string][]byte{"kubernetez": other})
	if err == nil || !strings.Contains(err.Error(), `key for repository "kubernetez": profile rocky has no such repository`) {
		t.Errorf("unknown key name: %v", err)
	}
	_, err = p.RepositoriesFor(m, map[string][]byte{"kubernetes": []byte("not a key")})
	if err == nil || !strings.Contains(err.Error(), "not an ASCII-armored public key block") {
		t.Errorf("bad key: %v", err)
	}

	// A repository without an embedded key needs one from the caller.
	bare := *p
	bare.Repositories = []Repository{{Name: "mirror", Purpose: "kubernetes", URI: "https://mirror.example/{minor}/rpm/"}}
	_, err = bare.RepositoriesFor(m, nil)
	if !errors.Is(err, ErrKeyMissing) || !strings.Contains(err.Error(), "repository mirror (https://mirror.example/{minor}/rpm/)") {
		t.Errorf("missing key: %v", err)
	}
}

// noRunner fails every command: rendering runs none.
type noRunner struct{}

func (noRunner) Run(context.Context, []string, []string, io.Reader) ([]byte, error) {
	return nil, errors.New("no commands in this test")
}

// TestRenderedRepositories renders, per profile, the files its package
// manager writes for its repositories.
func TestRenderedRepositories(t *testing.T) {
	for _, name := range List() {
		t.Run(name, func(t *testing.T) {
			p := get(t, name)
			m, err := p.Versions(nil)
			if err != nil {
				t.Fatal(err)
			}
			repos, err := p.RepositoriesFor(m, nil)
			if err != nil {
				t.Fatal(err)
			}
			mgr, err := pkg.New(p.PackageManager, noRunner{}, pkg.Options{})
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			for _, r := range repos {
				files, err := mgr.RepoFiles(r.Repo)
				if err != nil {
					t.Fatal(err)
				}
				for _, f := range files {
					content := string(f.Content)
					if strings.Contains(content, "BEGIN PGP PUBLIC KEY BLOCK") {
						content = "(the key of " + r.Name + ", as embedded)\n"
					}
					fmt.Fprintf(&b, "=== %s (%04o)\n%s", f.Path, f.Mode, content)
				}
			}
			golden(t, b.String())
		})
	}
}

// TestEmbeddedKeys checks the stored keys with gpg against the
// fingerprints the projects publish.
func TestEmbeddedKeys(t *testing.T) {
	if _, err := exec.LookPath("gpg"); err != nil {
		t.Skip("gpg is not installed")
	}
	want := map[string]struct{ fpr, expires string }{
		"pkgs.k8s.io":             {"DE15B14486CD377B9E876E1A234654DA9A296436", "1798508024"}, // 2026-12-29
		"download.docker.com-rpm": {"060A61C51B558A7F742B77AAC52FEB6B621E9F35", ""},
	}
	home := t.TempDir()
	for name, w := range want {
		cmd := exec.Command("gpg", "--homedir", home, "--show-keys", "--with-colons", "keys/"+name+".asc")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("gpg --show-keys %s: %v", name, err)
		}
		var pub, fpr []string
		for _, l := range strings.Split(string(out), "\n") {
			f := strings.Split(l, ":")
			switch f[0] {
			case "pub":
				pub = f
			case "fpr":
				if fpr == nil {
					fpr = f
				}
			}
		}
		if len(fpr) < 10 || fpr[9] != w.fpr {
			t.Errorf("%s: fingerprint %v, want %s", name, fpr, w.fpr)
		}
		if len(pub) < 7 || pub[6] != w.expires {
			t.Errorf("%s: expiry %v, want %q (update keys/README.md when the key is re-published)", name, pub, w.expires)
		}
	}
}

func TestParseAllRejects(t *testing.T) {
	good, err := files.ReadFile("profiles/debian.yaml")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := files.ReadFile("keys/pkgs.k8s.io.asc")
	tests := map[string]struct {
		file, content, err string
	}{
		"unknown field":    {"debian", string(good) + "colour: blue\n", "colour"},
		"name mismatch":    {"debian", strings.Replace(string(good), "name: debian", "name: other", 1), "does not match the file name"},
		"default outside":  {"debian", strings.Replace(string(good), "default: v3.28.0", "default: v3.29.0", 1), "calico: default v3.29.0 is outside"},
		"missing version":  {"debian", strings.Replace(string(good), "  metallb: {default: v0.14.8, min: v0.14.5, max: v0.14.x}\n", "", 1), "metallb is missing"},
		"unknown manager":  {"debian", strings.Replace(string(good), "packageManager: apt", "packageManager: pacman", 1), `packageManager "pacman"`},
		"missing key file": {"debian", strings.Replace(string(good), "key: pkgs.k8s.io", "key: nope", 1), `key "nope"`},
		"bad firewall":     {"debian", strings.Replace(string(good), "tool: none", "tool: iptables", 1), `tool "iptables"`},
		"bad selinux":      {"debian", strings.Replace(string(good), "selinux: none", "selinux: off", 1), `selinux "off"`},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			fsys := fstest.MapFS{
				"profiles/" + tt.file + ".yaml": {Data: []byte(tt.content)},
				"keys/pkgs.k8s.io.asc":          {Data: key},
			}
			_, err := parseAll(fsys)
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("parseAll: %v, want an error containing %q", err, tt.err)
			}
		})
	}
}

func TestOSMatches(t *testing.T) {
	for _, tc := range []struct {
		os      OS
		id, ver string
		want    bool
	}{
		{OS{ID: "debian", Version: "12"}, "debian", "12", true},
		{OS{ID: "rocky", Version: "9"}, "rocky", "9.4", true},
		{OS{ID: "opensuse-leap", Version: "15"}, "opensuse-leap", "15.6", true},
		{OS{ID: "ubuntu", Version: "24.04"}, "ubuntu", "24.04", true},
		{OS{ID: "ubuntu", Version: "24.04"}, "debian", "12", false},
		{OS{ID: "ubuntu", Version: "24.04"}, "ubuntu", "22.04", false},
		{OS{ID: "rocky", Version: "9"}, "rocky", "90", false},
		{OS{ID: "debian", Version: "12"}, "debian", "", false},
	} {
		if got := tc.os.Matches(tc.id, tc.ver); got != tc.want {
			t.Errorf("%s matches %s %q: %v, want %v", tc.os, tc.id, tc.ver, got, tc.want)
		}
	}
}
