package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kthw/kthw/controller/config"
)

// benchEnv is what the lab benchmarks share: the binaries (copied, so that a
// `make build` elsewhere in the tree cannot change them mid-run), a work
// directory for this run and a persistent one (the bench lab's apt proxy
// cache, the light nodes' package layer).
type benchEnv struct {
	root       string // module root
	work       string // this run's files; removed at the end
	persist    string // /var/lib/kthw/bench
	imageDir   string // the lab's root filesystem cache (shared)
	controller string
	agent      string
	upctl      string
	log        io.Writer
	// retried names the runs repeated after a hang (retryHung).
	retried []string
}

// Networks of the bench labs. They avoid the default lab (10.200.0.0/24,
// kthw0), the e2e tests (10.200.77.0/24 kthwe2e0, 10.200.100-139.0/24
// kthwt*, 10.200.213.0/24 kthwlabt0).
const (
	nspawnBridge = "kthwb0"
	nspawnCIDR   = "10.200.160.0/24"
	nspawnProxy  = 3160
	lightBridge  = "kthwl0"
	lightCIDR    = "10.200.162.0/24"
)

// labCluster is a cluster file of n nspawn nodes (1 control plane, n-1
// workers) in the bench lab.
func (e *benchEnv) labCluster(name string, n int) string {
	return fmt.Sprintf(`apiVersion: kthw.dev/v1alpha1
kind: Cluster
name: %s
profile: debian
provider:
  type: local
  local:
    bridge: %s
    labDir: %s
    imageDir: %s
    proxyPort: %d
network:
  nodeCIDR: %s
nodes:
%s
nodePrep:
  kubernetesPackages: false
`, name, nspawnBridge, filepath.Join(e.persist, "lab"), e.imageDir, nspawnProxy, nspawnCIDR, pools(n))
}

// staticCluster is a cluster file of n light nodes through the static
// provider (root, the workspace's key).
func staticCluster(name string, n int, addrs []string) string {
	var hosts strings.Builder
	for i, a := range addrs {
		fmt.Fprintf(&hosts, "      - {name: %s, address: %s}\n", nodeName(i), a)
	}
	return fmt.Sprintf(`apiVersion: kthw.dev/v1alpha1
kind: Cluster
name: %s
profile: debian
provider:
  type: static
  static:
    hosts:
%snetwork:
  nodeCIDR: %s
nodes:
%s
nodePrep:
  kubernetesPackages: false
`, name, hosts.String(), lightCIDR, pools(n))
}

func pools(n int) string {
	s := "  - {name: cp, role: control-plane, count: 1}"
	if n > 1 {
		s += fmt.Sprintf("\n  - {name: worker, role: worker, count: %d}", n-1)
	}
	return s
}

// nodeName is the i-th node of pools(n): cp-1, worker-1, ...
func nodeName(i int) string {
	if i == 0 {
		return "cp-1"
	}
	return "worker-" + strconv.Itoa(i)
}

// loadCluster reads a cluster file as the controller does.
func loadCluster(path string) (*config.Cluster, []config.NodeSpec, error) {
	cl, err := config.Load(path)
	if err != nil {
		return nil, nil, err
	}
	cl.SetDefaults()
	if err := cl.Validate(config.DefaultProfiles()); err != nil {
		return nil, nil, err
	}
	specs, err := cl.Nodes()
	return cl, specs, err
}

// event is one of the controller's JSON progress events.
type event struct {
	Node     string        `json:"node"`
	Step     string        `json:"step"`
	Status   string        `json:"status"`
	Message  string        `json:"message"`
	Duration time.Duration `json:"duration_ns"`
}

func parseEvents(b []byte) ([]event, error) {
	var out []event
	dec := json.NewDecoder(bytes.NewReader(b))
	for {
		var ev event
		err := dec.Decode(&ev)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("parse progress events: %w", err)
		}
		out = append(out, ev)
	}
}

// upOutcome sums up a controller run's events.
type upOutcome struct {
	changed, failed []string // node/step
	// stepMax is the longest duration per step over the nodes.
	stepMax map[string]time.Duration
}

func outcome(evs []event) upOutcome {
	o := upOutcome{stepMax: map[string]time.Duration{}}
	for _, ev := range evs {
		switch ev.Status {
		case "changed":
			o.changed = append(o.changed, ev.Node+"/"+ev.Step)
		case "failed":
			o.failed = append(o.failed, ev.Node+"/"+ev.Step+": "+ev.Message)
		}
		if ev.Status != "started" && ev.Duration > o.stepMax[ev.Step] {
			o.stepMax[ev.Step] = ev.Duration
		}
	}
	return o
}

// kthw runs the controller with args and the cluster's file and workspace,
// JSON events on stdout. It fails when a node failed.
func (e *benchEnv) kthw(ctx context.Context, file, ws string, extra []string, args ...string) (runStat, upOutcome, error) {
	argv := append([]string{e.controller}, args...)
	argv = append(argv, "-f", file, "--workspace", ws, "--agent-binary", e.agent)
	argv = append(argv, extra...)
	return e.runUp(ctx, argv)
}

// upctl runs scripts/bench/upctl (kthw up, optionally without the
// containerd module).
func (e *benchEnv) upctlRun(ctx context.Context, file, ws string, noContainerd bool, extra ...string) (runStat, upOutcome, error) {
	argv := []string{e.upctl, "-f", file, "-workspace", ws, "-agent-binary", e.agent, "-o", "json"}
	if noContainerd {
		argv = append(argv, "-no-containerd")
	}
	return e.runUp(ctx, append(argv, extra...))
}

func (e *benchEnv) runUp(ctx context.Context, argv []string) (runStat, upOutcome, error) {
	st, err := timedRun(ctx, e.root, nil, argv...)
	evs, perr := parseEvents(st.stdout)
	o := outcome(evs)
	if err == nil && len(o.failed) > 0 {
		err = fmt.Errorf("%s: failed: %s", filepath.Base(argv[0]), strings.Join(o.failed, "; "))
	}
	return st, o, errors.Join(err, perr)
}

// playbookVars renders the playbook's inputs from kthw's own node-prep
// parameters for the cluster, so both tools get the same values.
func playbookVars(cl *config.Cluster, specs []config.NodeSpec) ([]byte, error) {
	p, err := nodeprepParams(cl, specs)
	if err != nil {
		return nil, err
	}
	if len(p.Repositories) > 0 || len(p.Kubernetes) > 0 {
		return nil, errors.New("the playbook covers the lab's node-prep set only (no repositories, no Kubernetes packages)")
	}
	type host struct {
		Address string   `json:"address"`
		Names   []string `json:"names"`
	}
	type mirror struct {
		Registry  string   `json:"registry"`
		Endpoints []string `json:"endpoints"`
	}
	type ctr struct {
		SandboxImage  string   `json:"sandbox_image"`
		SystemdCgroup bool     `json:"systemd_cgroup"`
		ConfigVersion int      `json:"config_version"`
		Socket        string   `json:"socket"`
		ConfigDir     string   `json:"config_dir"`
		Mirrors       []mirror `json:"mirrors"`
	}
	v := struct {
		Hosts         []host            `json:"kthw_hosts"`
		KernelModules []string          `json:"kthw_kernel_modules"`
		Sysctls       map[string]string `json:"kthw_sysctls"`
		Packages      []string          `json:"kthw_packages"`
		Containerd    ctr               `json:"kthw_containerd"`
	}{KernelModules: p.KernelModules, Sysctls: p.Sysctls, Packages: p.BasePackages}
	for _, h := range p.Hosts {
		v.Hosts = append(v.Hosts, host{h.GetAddress(), h.GetNames()})
	}
	c := p.Containerd
	version := 0
	for _, pk := range c.GetPackages() {
		name := pk.GetName()
		if pk.GetVersion() != "" {
			name += "=" + strings.TrimPrefix(pk.GetVersion(), "v") + "*"
			if strings.HasPrefix(pk.GetName(), "containerd") && version == 0 {
				major, _, _ := strings.Cut(strings.TrimPrefix(pk.GetVersion(), "v"), ".")
				if major == "1" {
					version = 2
				} else {
					version = 3
				}
			}
		}
		v.Packages = append(v.Packages, name)
	}
	if c.GetConfigVersion() != 0 {
		version = int(c.GetConfigVersion())
	}
	if version == 0 {
		return nil, errors.New("containerd config version unknown: pin the containerd version")
	}
	v.Containerd = ctr{
		SandboxImage: c.GetSandboxImage(), SystemdCgroup: c.GetSystemdCgroup(), ConfigVersion: version,
		Socket: orDefault(c.GetSocket(), "/run/containerd/containerd.sock"), ConfigDir: orDefault(c.GetConfigDir(), "/etc/containerd"),
		Mirrors: []mirror{},
	}
	for _, m := range c.GetMirrors() {
		v.Containerd.Mirrors = append(v.Containerd.Mirrors, mirror{m.GetRegistry(), m.GetEndpoints()})
	}
	return json.MarshalIndent(v, "", "  ")
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// writeFile writes data to path, making its directory.
func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
