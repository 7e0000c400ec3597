package main

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/kthw/kthw/controller/config"
	"github.com/kthw/kthw/controller/nodeprep"
)

// The state check: what node preparation manages, read from every node
// after one tool prepared it, compared line by line with the same node
// prepared by the other tool.

// managedPaths are the files and directories node preparation writes.
var managedPaths = []string{
	"/etc/hostname", "/etc/hosts", "/etc/fstab",
	"/etc/sysctl.d/99-kthw.conf", "/etc/modules-load.d/kthw.conf",
	"/etc/containerd", "/etc/containerd/config.toml", "/etc/containerd/certs.d",
}

// toolPackages are packages a tool installs on the node for itself, not as
// node preparation: Ansible's apt module needs python3-apt (and installs it
// with its dependencies on first use). They are reported, not compared.
var toolPackages = []string{"python3-apt", "python-apt-common", "distro-info-data"}

func nodeprepParams(cl *config.Cluster, specs []config.NodeSpec) (nodeprep.Params, error) {
	p, err := nodeprep.FromProfile(cl, specs)
	if err != nil {
		return p, err
	}
	if p.Containerd == nil {
		return p, fmt.Errorf("profile %s has no containerd module", cl.Profile)
	}
	return p, nil
}

// stateScript prints one sorted line per fact.
func stateScript(p nodeprep.Params) string {
	var b strings.Builder
	b.WriteString("set -u\n(\n")
	for _, f := range managedPaths {
		fmt.Fprintf(&b, "if [ -e %[1]s ]; then s=$( [ -f %[1]s ] && sha256sum < %[1]s | cut -d' ' -f1 || echo -); echo \"file %[1]s $(stat -c '%%F %%a %%U:%%G' %[1]s) $s\"; else echo 'file %[1]s absent'; fi\n", f)
	}
	b.WriteString("echo \"hostname $(hostname)\"\n")
	keys := make([]string, 0, len(p.Sysctls))
	for k := range p.Sysctls {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "echo \"sysctl %s $(cat /proc/sys/%s)\"\n", k, strings.ReplaceAll(k, ".", "/"))
	}
	b.WriteString(`echo "swaps $(awk 'NR > 1' /proc/swaps | wc -l)"
dpkg-query -W -f='pkg ${Package} ${Version} ${db:Status-Abbrev}\n'
apt-mark showhold | sed 's/^/hold /'
echo "unit containerd.service $(systemctl is-enabled containerd.service) $(systemctl is-active containerd.service)"
systemctl list-unit-files --state=enabled --no-legend --no-pager | awk '{print "enabled-unit", $1}'
systemctl --failed --no-legend --no-pager --plain | awk '{print "failed-unit", $1}'
) | sort
`)
	return b.String()
}

// snapshot reads the managed state of every node.
func (e *benchEnv) snapshot(ctx context.Context, ws string, specs []config.NodeSpec, cl *config.Cluster) (map[string][]string, error) {
	p, err := nodeprepParams(cl, specs)
	if err != nil {
		return nil, err
	}
	script := stateScript(p)
	out := map[string][]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, len(specs))
	for i, s := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := timedRun(ctx, e.root, nil, sshArgv(ws, s.Address.Addr().String(), script)...)
			if err != nil {
				errs[i] = err
				return
			}
			mu.Lock()
			out[s.Name] = strings.Split(strings.TrimSpace(string(st.stdout)), "\n")
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// stateDiff is the outcome of comparing two tools' nodes.
type stateDiff struct {
	nodes, lines        int
	files, pkgs, sysctl int
	onlyA, onlyB        []string // node: line
	toolOnlyB           []string // tool packages only on B's nodes
	// failedA, failedB are failed units (node: unit): reported, not
	// compared (see diffStates).
	failedA, failedB []string
}

func (d stateDiff) same() bool { return d.nodes > 0 && len(d.onlyA) == 0 && len(d.onlyB) == 0 }

func (d stateDiff) String() string {
	if d.nodes == 0 {
		return "not checked"
	}
	if d.same() {
		s := fmt.Sprintf("identical on %d nodes: %d managed files and directories (content, type, mode, owner), %d package versions, %d sysctls, swap, host name, unit states (%d facts per node)",
			d.nodes, d.files, d.pkgs, d.sysctl, d.lines)
		if len(d.toolOnlyB) > 0 {
			s += "; not compared: " + strings.Join(d.toolOnlyB, ", ") + " (installed by Ansible's apt module for itself)"
		}
		return s + d.failed()
	}
	return fmt.Sprintf("DIFFERENT: only kthw's nodes: %s; only Ansible's nodes: %s", strings.Join(d.onlyA, "; "), strings.Join(d.onlyB, "; ")) + d.failed()
}

func (d stateDiff) failed() string {
	if len(d.failedA)+len(d.failedB) == 0 {
		return "; no failed units"
	}
	none := func(s []string) string {
		if len(s) == 0 {
			return "none"
		}
		return strings.Join(s, ", ")
	}
	return fmt.Sprintf("; failed units (not compared): kthw's nodes %s, Ansible's nodes %s", none(d.failedA), none(d.failedB))
}

// diffStates compares a (kthw) with b (Ansible) node by node.
func diffStates(a, b map[string][]string) stateDiff {
	d := stateDiff{}
	var names []string
	for n := range a {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		la, lb := a[n], b[n]
		d.nodes++
		d.lines = len(la)
		d.files, d.pkgs, d.sysctl = 0, 0, 0
		for _, l := range la {
			switch strings.SplitN(l, " ", 2)[0] {
			case "file":
				d.files++
			case "pkg":
				d.pkgs++
			case "sysctl":
				d.sysctl++
			}
		}
		// Failed units are reported, not compared: the nodes are prepared
		// right after they boot, and a unit of the boot that fails on a
		// busy machine (seen: systemd-user-sessions) says nothing about
		// node preparation. containerd's own state is compared.
		for _, l := range la {
			if strings.HasPrefix(l, "failed-unit ") {
				d.failedA = append(d.failedA, n+": "+strings.TrimPrefix(l, "failed-unit "))
			} else if !slices.Contains(lb, l) {
				d.onlyA = append(d.onlyA, n+": "+l)
			}
		}
		for _, l := range lb {
			if strings.HasPrefix(l, "failed-unit ") {
				d.failedB = append(d.failedB, n+": "+strings.TrimPrefix(l, "failed-unit "))
				continue
			}
			if slices.Contains(la, l) {
				continue
			}
			if f := strings.Fields(l); len(f) > 1 && f[0] == "pkg" && slices.Contains(toolPackages, f[1]) {
				if !slices.Contains(d.toolOnlyB, f[1]) {
					d.toolOnlyB = append(d.toolOnlyB, f[1])
				}
				continue
			}
			d.onlyB = append(d.onlyB, n+": "+l)
		}
	}
	return d
}

// nodeprepParamsDefault is the node-prep set of the default (debian) lab
// cluster.
func nodeprepParamsDefault() (nodeprep.Params, error) {
	c := config.Default("debian")
	c.SetDefaults()
	specs, err := c.Nodes()
	if err != nil {
		return nodeprep.Params{}, err
	}
	return nodeprepParams(c, specs)
}
