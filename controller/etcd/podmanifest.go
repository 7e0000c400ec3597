package etcd

import (
	"bytes"
	"fmt"
	"path"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// EtcdPod is what a restore needs of kubeadm's etcd static-pod manifest
// (/etc/kubernetes/manifests/etcd.yaml).
type EtcdPod struct {
	// Member is the member the node runs: --name,
	// --initial-advertise-peer-urls and --initial-cluster-token.
	Member Member
	// InitialCluster is --initial-cluster as written.
	InitialCluster string
	// DataDir is --data-dir, the path inside the container.
	DataDir string
	// DataVolume is the volume mounted at DataDir (kubeadm: etcd-data) and
	// HostPath its hostPath: the data directory on the node.
	DataVolume string
	HostPath   string
	// ClientURLs are --listen-client-urls.
	ClientURLs []string

	raw       []byte
	hostIndex int // index of the data volume in spec.volumes
}

// podManifest is the part of a pod this package reads.
type podManifest struct {
	Kind string `yaml:"kind"`
	Spec struct {
		Containers []struct {
			Name         string   `yaml:"name"`
			Command      []string `yaml:"command"`
			Args         []string `yaml:"args"`
			VolumeMounts []struct {
				Name      string `yaml:"name"`
				MountPath string `yaml:"mountPath"`
			} `yaml:"volumeMounts"`
		} `yaml:"containers"`
		Volumes []struct {
			Name     string `yaml:"name"`
			HostPath *struct {
				Path string `yaml:"path"`
			} `yaml:"hostPath"`
		} `yaml:"volumes"`
	} `yaml:"spec"`
}

// ParseEtcdPod reads kubeadm's etcd static-pod manifest.
func ParseEtcdPod(b []byte) (*EtcdPod, error) {
	var pm podManifest
	if err := yaml.Unmarshal(b, &pm); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPodManifest, err)
	}
	if pm.Kind != "Pod" {
		return nil, fmt.Errorf("%w: kind %q, want Pod", ErrPodManifest, pm.Kind)
	}
	ci := -1
	for i, c := range pm.Spec.Containers {
		if c.Name == "etcd" {
			ci = i
		}
	}
	if ci < 0 {
		return nil, fmt.Errorf("%w: no container named etcd", ErrPodManifest)
	}
	c := pm.Spec.Containers[ci]
	flags := map[string]string{}
	for _, a := range append(append([]string(nil), c.Command...), c.Args...) {
		if k, v, ok := strings.Cut(a, "="); ok && strings.HasPrefix(k, "--") {
			flags[k[2:]] = v
		}
	}
	p := &EtcdPod{
		Member: Member{
			Name:                flags["name"],
			PeerURLs:            splitList(flags["initial-advertise-peer-urls"]),
			InitialClusterToken: flags["initial-cluster-token"],
		},
		InitialCluster: flags["initial-cluster"],
		DataDir:        flags["data-dir"],
		ClientURLs:     splitList(flags["listen-client-urls"]),
		raw:            b,
		hostIndex:      -1,
	}
	switch {
	case p.Member.Name == "":
		return nil, fmt.Errorf("%w: the etcd command has no --name", ErrPodManifest)
	case len(p.Member.PeerURLs) == 0:
		return nil, fmt.Errorf("%w: the etcd command has no --initial-advertise-peer-urls", ErrPodManifest)
	case p.DataDir == "":
		return nil, fmt.Errorf("%w: the etcd command has no --data-dir", ErrPodManifest)
	}
	for _, m := range c.VolumeMounts {
		if path.Clean(m.MountPath) == path.Clean(p.DataDir) {
			p.DataVolume = m.Name
		}
	}
	if p.DataVolume == "" {
		return nil, fmt.Errorf("%w: no volume is mounted at the data directory %s", ErrPodManifest, p.DataDir)
	}
	for i, v := range pm.Spec.Volumes {
		if v.Name == p.DataVolume && v.HostPath != nil {
			p.HostPath, p.hostIndex = v.HostPath.Path, i
		}
	}
	if p.hostIndex < 0 || p.HostPath == "" {
		return nil, fmt.Errorf("%w: volume %s (the data directory) is not a hostPath volume", ErrPodManifest, p.DataVolume)
	}
	return p, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// WithHostPath returns the manifest with the data volume's hostPath set to
// dir and every other byte as it was: the data directory inside the
// container (--data-dir, the mount) stays, as the Kubernetes documentation
// for restoring kubeadm's etcd does it.
func (p *EtcdPod) WithHostPath(dir string) ([]byte, error) {
	if !path.IsAbs(dir) || path.Clean(dir) != dir || strings.ContainsAny(dir, " \t\n\"'#:") {
		return nil, fmt.Errorf("data directory %q is not an absolute, clean path without blanks or YAML specials", dir)
	}
	f, err := parser.ParseBytes(p.raw, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPodManifest, err)
	}
	yp, err := yaml.PathString(fmt.Sprintf("$.spec.volumes[%d].hostPath.path", p.hostIndex))
	if err != nil {
		return nil, err
	}
	n, err := yp.FilterFile(f)
	if err != nil {
		return nil, fmt.Errorf("%w: find the hostPath of %s: %w", ErrPodManifest, p.DataVolume, err)
	}
	sn, ok := n.(*ast.StringNode)
	if !ok || sn.Value != p.HostPath {
		return nil, fmt.Errorf("%w: the hostPath of %s is not a plain string", ErrPodManifest, p.DataVolume)
	}
	// Replace the scalar where it stands, so the diff is that one line.
	pos := sn.GetToken().Position
	lines := bytes.SplitAfter(p.raw, []byte("\n"))
	if pos.Line < 1 || pos.Line > len(lines) {
		return nil, fmt.Errorf("%w: hostPath position out of range", ErrPodManifest)
	}
	line := lines[pos.Line-1]
	col := bytes.Index(line, []byte(p.HostPath))
	if col < 0 || !bytes.HasPrefix(bytes.TrimSpace(line), []byte("path:")) {
		return nil, fmt.Errorf("%w: the hostPath of %s is not written as a plain scalar", ErrPodManifest, p.DataVolume)
	}
	nl := append(append(append([]byte(nil), line[:col]...), dir...), line[col+len(p.HostPath):]...)
	lines[pos.Line-1] = nl
	out := bytes.Join(lines, nil)
	// The result must read back as the same pod with only that path moved.
	q, err := ParseEtcdPod(out)
	if err != nil || q.HostPath != dir || q.DataDir != p.DataDir || q.Member.Name != p.Member.Name {
		return nil, fmt.Errorf("%w: rewriting the hostPath did not give the expected manifest", ErrPodManifest)
	}
	return out, nil
}
