package pkglab_test

import (
	"context"
	"errors"
	"github.com/kthw/kthw/controller/internal/aptrepo"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kthw/kthw/controller/internal/labtest"
	"github.com/kthw/kthw/controller/node"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// result is one module run.
type result struct {
	res *agentv1.ModuleResult
	log []string
	err error
	dur time.Duration
}

func (r result) logText() string { return strings.Join(r.log, "\n") }

func runModule(t *testing.T, nd *labtest.Node, req *agentv1.RunModuleRequest) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var mu sync.Mutex
	var r result
	start := time.Now()
	r.res, r.err = node.RunModule(ctx, nd.Agent, req, func(ev *agentv1.RunModuleEvent) {
		if l := ev.GetLog(); l != nil {
			mu.Lock()
			r.log = append(r.log, l.GetText())
			mu.Unlock()
		}
	})
	r.dur = time.Since(start)
	t.Logf("%s: %s changed=%v err=%v\n%s", req.GetName(), r.dur.Round(time.Millisecond), r.res.GetChanged(), r.err, r.res.GetDiff())
	return r
}

// must runs a module that must succeed with the given changed flag.
func must(t *testing.T, nd *labtest.Node, req *agentv1.RunModuleRequest, changed bool) result {
	t.Helper()
	r := runModule(t, nd, req)
	if r.err != nil {
		t.Fatalf("%s: %v\nlog:\n%s", req.GetName(), r.err, r.logText())
	}
	if r.res.GetChanged() != changed {
		t.Fatalf("%s: changed = %v, want %v; diff:\n%s\nlog:\n%s", req.GetName(), r.res.GetChanged(), changed, r.res.GetDiff(), r.logText())
	}
	return r
}

func repository(name, uri string, key []byte, absent bool) *agentv1.RunModuleRequest {
	m := &agentv1.RepositoryModule{Name: name, Uri: uri, Suite: "/", Key: key}
	if absent {
		m = &agentv1.RepositoryModule{Name: name, State: agentv1.RepositoryModule_STATE_ABSENT}
	}
	return &agentv1.RunModuleRequest{Name: "repository " + name, Module: &agentv1.RunModuleRequest_Repository{Repository: m}}
}

func packages(hold bool, kv ...string) *agentv1.RunModuleRequest {
	m := &agentv1.PackagesModule{Hold: hold}
	var names []string
	for i := 0; i < len(kv); i += 2 {
		m.Packages = append(m.Packages, &agentv1.Package{Name: kv[i], Version: kv[i+1]})
		names = append(names, kv[i])
	}
	return &agentv1.RunModuleRequest{Name: "packages " + strings.Join(names, ","), Module: &agentv1.RunModuleRequest_Packages{Packages: m}}
}

func removePackages(names ...string) *agentv1.RunModuleRequest {
	m := &agentv1.PackagesModule{State: agentv1.PackagesModule_STATE_ABSENT}
	for _, n := range names {
		m.Packages = append(m.Packages, &agentv1.Package{Name: n})
	}
	return &agentv1.RunModuleRequest{Name: "remove " + strings.Join(names, ","), Module: &agentv1.RunModuleRequest_Packages{Packages: m}}
}

// TestAptOnLabNode runs the repository, packages and kubernetes-packages
// modules through a real agent on a real Debian lab node with real apt.
func TestAptOnLabNode(t *testing.T) {
	aptrepo.Skip(t)
	labtest.Skip(t)
	start := time.Now()
	c := labtest.Start(t, 1)
	nd := c.Nodes[0]
	t.Logf("lab node up in %s", time.Since(start).Round(time.Millisecond))
	// The lab proxies only the Debian mirror's hosts: the test's
	// repositories on the bridge are reached directly.
	bridge := c.Lab.Gateway().String()

	good := aptrepo.NewGPG(t, "kthw apt test <apt@kthw.invalid>")
	repo := aptrepo.Build(t, good, bridge, aptrepo.Debs{
		"kthw-hello": {"1.30.1-1", "1.31.2-1"},
		"kubelet":    {"1.30.6-1.1", "1.31.2-1.1", "1.31.20-1.1"},
		"kubeadm":    {"1.30.6-1.1", "1.31.2-1.1", "1.31.20-1.1"},
		"kubectl":    {"1.30.6-1.1", "1.31.2-1.1", "1.31.20-1.1"},
	})

	t.Run("repository", func(t *testing.T) {
		r := must(t, nd, repository("kthwtest", repo.URL, repo.Key, false), true)
		if !strings.Contains(r.res.GetDiff(), "+Signed-By: /etc/apt/keyrings/kthwtest.asc") {
			t.Errorf("diff:\n%s", r.res.GetDiff())
		}
		must(t, nd, repository("kthwtest", repo.URL, repo.Key, false), false)
		if got := c.Exec(t, nd, "cat /etc/apt/sources.list.d/kthwtest.sources"); !strings.Contains(got, "URIs: "+repo.URL) {
			t.Errorf("sources file:\n%s", got)
		}
	})

	t.Run("install and hold from the signed repository", func(t *testing.T) {
		r := must(t, nd, packages(true, "kthw-hello", "1.30.1"), true)
		if !strings.Contains(r.res.GetDiff(), "install kthw-hello 1.30.1-1\nhold kthw-hello\n") {
			t.Errorf("diff:\n%s", r.res.GetDiff())
		}
		if !strings.Contains(r.logText(), "refreshed the package index") {
			t.Errorf("a new repository did not refresh the index; log:\n%s", r.logText())
		}
		if got := c.Exec(t, nd, "dpkg-query -W -f='${Version}' kthw-hello; echo; apt-mark showhold"); got != "1.30.1-1\nkthw-hello\n" {
			t.Errorf("on the node: %q", got)
		}
		r = must(t, nd, packages(true, "kthw-hello", "1.30.1"), false)
		if !strings.Contains(r.logText(), "kthw-hello 1.30.1-1 is already installed and held") {
			t.Errorf("second run log:\n%s", r.logText())
		}
		t.Logf("second run (unchanged): %s", r.dur.Round(time.Millisecond))
	})

	t.Run("held package survives an upgrade", func(t *testing.T) {
		c.Exec(t, nd, "DEBIAN_FRONTEND=noninteractive apt-get upgrade -y -q >/dev/null")
		if got := c.Exec(t, nd, "dpkg-query -W -f='${Version}' kthw-hello"); got != "1.30.1-1" {
			t.Errorf("apt-get upgrade moved a held package to %s", got)
		}
		r := must(t, nd, packages(true, "kthw-hello", "1.31.2-1"), true)
		if !strings.Contains(r.res.GetDiff(), "change kthw-hello 1.30.1-1 -> 1.31.2-1\n") {
			t.Errorf("diff:\n%s", r.res.GetDiff())
		}
		if got := c.Exec(t, nd, "dpkg-query -W -f='${Version}' kthw-hello; echo; apt-mark showhold"); got != "1.31.2-1\nkthw-hello\n" {
			t.Errorf("on the node: %q", got)
		}
	})

	t.Run("kubernetes packages", func(t *testing.T) {
		req := &agentv1.RunModuleRequest{Name: "kubernetes packages", Module: &agentv1.RunModuleRequest_KubernetesPackages{
			KubernetesPackages: &agentv1.KubernetesPackagesModule{Version: "v1.31.2"}}}
		r := must(t, nd, req, true)
		for _, n := range []string{"kubelet", "kubeadm", "kubectl"} {
			if !strings.Contains(r.res.GetDiff(), "install "+n+" 1.31.2-1.1\nhold "+n+"\n") {
				t.Errorf("diff lacks %s:\n%s", n, r.res.GetDiff())
			}
		}
		if got := c.Exec(t, nd, "dpkg-query -W -f='${Package} ${Version}\n' kubelet kubeadm kubectl | LC_ALL=C sort; apt-mark showhold | LC_ALL=C sort"); got != "kubeadm 1.31.2-1.1\nkubectl 1.31.2-1.1\nkubelet 1.31.2-1.1\nkthw-hello\nkubeadm\nkubectl\nkubelet\n" {
			t.Errorf("on the node:\n%s", got)
		}
		r = must(t, nd, req, false)
		if !strings.Contains(r.logText(), "kubelet, kubeadm, kubectl 1.31.2 already installed and held") {
			t.Errorf("second run log:\n%s", r.logText())
		}
	})

	t.Run("bad signature is refused", func(t *testing.T) {
		evilKey := aptrepo.NewGPG(t, "kthw other <other@kthw.invalid>")
		evil := aptrepo.Build(t, evilKey, bridge, aptrepo.Debs{"kthw-evil": {"1.0-1"}})
		// Configured with the good key, signed by another one.
		must(t, nd, repository("kthwevil", evil.URL, repo.Key, false), true)
		r := runModule(t, nd, packages(false, "kthw-evil", ""))
		if r.err == nil || !errors.Is(r.err, node.ErrModule) {
			t.Fatalf("installed from a repository signed by an unknown key: %v", r.err)
		}
		msg := r.res.GetError()
		if !strings.Contains(msg, "refresh apt index") || !(strings.Contains(msg, "NO_PUBKEY") || strings.Contains(msg, "not signed")) {
			t.Errorf("error does not explain the signature failure: %s", msg)
		}
		t.Logf("refused: %s", msg)
		if got := c.Exec(t, nd, "dpkg-query -W kthw-evil 2>/dev/null || true"); got != "" {
			t.Errorf("kthw-evil on the node: %q", got)
		}
		must(t, nd, repository("kthwevil", "", nil, true), true)
		must(t, nd, repository("kthwevil", "", nil, true), false)
	})

	t.Run("debian mirror: install and hold jq", func(t *testing.T) {
		r := must(t, nd, packages(true, "jq", ""), true)
		t.Logf("jq first run: %s", r.dur.Round(time.Millisecond))
		r = must(t, nd, packages(true, "jq", ""), false)
		t.Logf("jq second run (unchanged): %s", r.dur.Round(time.Millisecond))
		if got := c.Exec(t, nd, "apt-mark showhold jq"); got != "jq\n" {
			t.Errorf("jq not held: %q", got)
		}
	})

	t.Run("remove", func(t *testing.T) {
		r := must(t, nd, removePackages("kthw-hello", "jq"), true)
		if !strings.Contains(r.res.GetDiff(), "remove kthw-hello 1.31.2-1\n") {
			t.Errorf("diff:\n%s", r.res.GetDiff())
		}
		must(t, nd, removePackages("kthw-hello", "jq"), false)
		if got := c.Exec(t, nd, "apt-mark showhold | grep -c -e kthw-hello -e '^jq$' || true"); got != "0\n" {
			t.Errorf("holds left behind: %q", got)
		}
	})
	t.Logf("whole test %s", time.Since(start).Round(time.Millisecond))
}
