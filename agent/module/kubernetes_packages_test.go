package module

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/kthw/kthw/distro/pkg"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

func TestNewKubernetesPackagesInvalid(t *testing.T) {
	tests := map[string]*agentv1.KubernetesPackagesModule{
		"no version":      {},
		"minor only":      {Version: "v1.31"},
		"apt version":     {Version: "1.31.2-1.1x y"},
		"garbage":         {Version: "latest"},
		"bad package":     {Version: "v1.31.2", Packages: []string{"kube let"}},
		"unknown manager": {Version: "v1.31.2", Manager: "apk"},
	}
	for name, m := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := NewKubernetesPackages(m); !errors.Is(err, ErrInvalid) {
				t.Fatalf("NewKubernetesPackages: err = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestKubernetesPackages(t *testing.T) {
	offered := map[string][]string{}
	for _, n := range DefaultKubernetesPackages {
		offered[n] = []string{"1.30.6-1.1", "1.31.1-1.1", "1.31.2-1.1", "1.31.20-1.1"}
	}
	mgr := newMemManager(t, offered)
	mgr.installed["kubectl"] = "1.30.6-1.1"
	env := withManager(newRecorder(t, ""), mgr)
	k, err := NewKubernetesPackages(&agentv1.KubernetesPackagesModule{Version: "v1.31.2"})
	if err != nil {
		t.Fatal(err)
	}
	res := mustCheck(t, env, k)
	want := "install kubelet 1.31.2\nhold kubelet\ninstall kubeadm 1.31.2\nhold kubeadm\nchange kubectl 1.30.6-1.1 -> 1.31.2\nhold kubectl\n"
	if res.Diff != want {
		t.Errorf("Check diff:\n%s\nwant:\n%s", res.Diff, want)
	}
	res = mustApply(t, env, k, true)
	if want := "install kubelet 1.31.2-1.1\nhold kubelet\ninstall kubeadm 1.31.2-1.1\nhold kubeadm\nchange kubectl 1.30.6-1.1 -> 1.31.2-1.1\nhold kubectl\n"; res.Diff != want {
		t.Errorf("Apply diff:\n%s\nwant:\n%s", res.Diff, want)
	}
	for _, n := range DefaultKubernetesPackages {
		if mgr.installed[n] != "1.31.2-1.1" || !mgr.held[n] {
			t.Errorf("%s: %s held=%v", n, mgr.installed[n], mgr.held[n])
		}
	}
	calls := len(mgr.Calls())
	mustApply(t, env, k, false)
	if len(mgr.Calls()) != calls {
		t.Errorf("second Apply changed something: %q", mgr.Calls()[calls:])
	}
	info := env.stream(agentv1.LogLine_STREAM_INFO)
	if got := info[len(info)-1]; got != "kubelet, kubeadm, kubectl 1.31.2 already installed and held" {
		t.Errorf("last log line = %q", got)
	}

	// A hold taken off by hand is put back; nothing is reinstalled.
	mgr.held["kubeadm"] = false
	res = mustApply(t, env, k, true)
	if res.Diff != "hold kubeadm\n" {
		t.Errorf("re-hold diff = %q", res.Diff)
	}
	if got := mgr.Calls()[calls:]; !slices.Equal(got, []string{"hold kubeadm true"}) {
		t.Errorf("re-hold calls = %q", got)
	}
}

func TestKubernetesPackagesUnknownRelease(t *testing.T) {
	mgr := newMemManager(t, map[string][]string{"kubelet": {"1.31.2-1.1"}})
	env := withManager(newRecorder(t, ""), mgr)
	k, err := NewKubernetesPackages(&agentv1.KubernetesPackagesModule{Version: "1.32.0", Packages: []string{"kubelet"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Apply(context.Background(), &env.Env); !errors.Is(err, pkg.ErrNotFound) {
		t.Fatalf("Apply: err = %v, want ErrNotFound", err)
	}
}
