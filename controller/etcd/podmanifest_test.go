package etcd

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func TestEtcdPodKubeadm(t *testing.T) {
	raw, err := os.ReadFile("testdata/kubeadm-v1.34.4/etcd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseEtcdPod(raw)
	if err != nil {
		t.Fatal(err)
	}
	if p.Member.Name != "cp-1" || len(p.Member.PeerURLs) != 1 || p.Member.PeerURLs[0] != "https://10.200.0.11:2380" ||
		p.DataDir != "/var/lib/etcd" || p.DataVolume != "etcd-data" || p.HostPath != "/var/lib/etcd" ||
		p.InitialCluster != "cp-1=https://10.200.0.11:2380" || len(p.ClientURLs) != 2 || p.Member.InitialClusterToken != "" {
		t.Fatalf("parsed %+v", p)
	}
	out, err := p.WithHostPath("/var/lib/etcd-restore-20260102T150405Z")
	if err != nil {
		t.Fatal(err)
	}
	a, b := strings.Split(string(raw), "\n"), strings.Split(string(out), "\n")
	if len(a) != len(b) {
		t.Fatalf("line count %d -> %d", len(a), len(b))
	}
	var changed []string
	for i := range a {
		if a[i] != b[i] {
			changed = append(changed, a[i]+" -> "+b[i])
		}
	}
	// Only the etcd-data volume's hostPath moves; --data-dir, the mount
	// and the certificates' hostPath (the line above it) stay.
	if len(changed) != 1 || changed[0] != "      path: /var/lib/etcd ->       path: /var/lib/etcd-restore-20260102T150405Z" {
		t.Fatalf("changed lines %q", changed)
	}
	q, err := ParseEtcdPod(out)
	if err != nil || q.HostPath != "/var/lib/etcd-restore-20260102T150405Z" || q.DataDir != "/var/lib/etcd" {
		t.Fatalf("reparsed %+v %v", q, err)
	}
	if _, err := p.WithHostPath("relative/dir"); err == nil {
		t.Error("relative data dir accepted")
	}
}

func TestEtcdPodRejects(t *testing.T) {
	raw, _ := os.ReadFile("testdata/kubeadm-v1.34.4/etcd.yaml")
	api, _ := os.ReadFile("testdata/kubeadm-v1.34.4/kube-apiserver.yaml")
	for name, b := range map[string]string{
		"apiserver":    string(api),
		"not yaml":     "{{{",
		"no name":      strings.Replace(string(raw), "    - --name=cp-1\n", "", 1),
		"no data dir":  strings.Replace(string(raw), "    - --data-dir=/var/lib/etcd\n", "", 1),
		"no mount":     strings.Replace(string(raw), "    - mountPath: /var/lib/etcd\n      name: etcd-data\n", "", 1),
		"not hostPath": strings.Replace(string(raw), "  - hostPath:\n      path: /var/lib/etcd\n      type: DirectoryOrCreate\n    name: etcd-data", "  - emptyDir: {}\n    name: etcd-data", 1),
		"a deployment": strings.Replace(string(raw), "kind: Pod", "kind: Deployment", 1),
	} {
		if _, err := ParseEtcdPod([]byte(b)); !errors.Is(err, ErrPodManifest) {
			t.Errorf("%s: %v", name, err)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}
