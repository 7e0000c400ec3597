package nodeprep_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kthw/kthw/controller/config"
	"github.com/kthw/kthw/controller/internal/labtest"
	"github.com/kthw/kthw/controller/node"
	"github.com/kthw/kthw/controller/nodeprep"
	"github.com/kthw/kthw/controller/sshx"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// Tests of the node-prep modules on real lab nodes (systemd, D-Bus,
// read-only /proc/sys except net, a kernel with everything built in). They
// skip where lab nodes cannot run.

// run runs one module on the node and returns its result and log lines.
type moduleRun struct {
	res *agentv1.ModuleResult
	log []string
	err error
}

func runModule(t *testing.T, nd *labtest.Node, req *agentv1.RunModuleRequest) moduleRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var mu sync.Mutex
	var r moduleRun
	start := time.Now()
	r.res, r.err = node.RunModule(ctx, nd.Agent, req, func(ev *agentv1.RunModuleEvent) {
		if l := ev.GetLog(); l != nil {
			mu.Lock()
			r.log = append(r.log, l.GetText())
			mu.Unlock()
		}
	})
	t.Logf("%s on %s: %s, changed=%v", req.GetName(), nd.Name, time.Since(start).Round(time.Millisecond), r.res.GetChanged())
	if r.err != nil && !errors.Is(r.err, node.ErrModule) {
		t.Fatalf("run %s: %v", req.GetName(), r.err)
	}
	return r
}

// mustModule runs a module that must succeed with the given changed flag.
func mustModule(t *testing.T, nd *labtest.Node, req *agentv1.RunModuleRequest, wantChanged bool) moduleRun {
	t.Helper()
	r := runModule(t, nd, req)
	if r.err != nil {
		t.Fatalf("%s: %v\nlog:\n%s", req.GetName(), r.err, strings.Join(r.log, "\n"))
	}
	if r.res.GetChanged() != wantChanged {
		t.Fatalf("%s: changed = %v, want %v\ndiff:\n%s", req.GetName(), r.res.GetChanged(), wantChanged, r.res.GetDiff())
	}
	return r
}

func unitReq(m *agentv1.SystemdUnitModule, checkOnly bool) *agentv1.RunModuleRequest {
	return &agentv1.RunModuleRequest{Name: "systemd-unit " + m.GetName(), CheckOnly: checkOnly,
		Module: &agentv1.RunModuleRequest_SystemdUnit{SystemdUnit: m}}
}

const labUnit = `[Unit]
Description=kthw lab test unit

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'mkdir -p /var/lib/kthw-lab && echo "$GREETING" >> /var/lib/kthw-lab/starts'

[Install]
WantedBy=multi-user.target
`

func TestLabSystemdUnit(t *testing.T) {
	c := labtest.Start(t, 1)
	nd := c.Nodes[0]
	yes := true
	m := &agentv1.SystemdUnitModule{
		Name:    "kthw-lab.service",
		Content: labUnit,
		Dropins: map[string]string{"greeting": "[Service]\nEnvironment=GREETING=hello\n"},
		Enabled: &yes,
		State:   agentv1.SystemdUnitModule_STATE_RESTARTED_ON_CHANGE,
	}
	starts := func() string {
		return c.Exec(t, nd, "cat /var/lib/kthw-lab/starts 2>/dev/null || true")
	}

	r := mustModule(t, nd, unitReq(m, true), true)
	if !strings.Contains(r.res.GetDiff(), "enable kthw-lab.service") || !strings.Contains(r.res.GetDiff(), "start kthw-lab.service (currently inactive)") {
		t.Errorf("check diff:\n%s", r.res.GetDiff())
	}
	if out := c.Exec(t, nd, "ls /etc/systemd/system/kthw-lab.service 2>&1 || true"); !strings.Contains(out, "No such file") {
		t.Fatalf("check wrote the unit: %s", out)
	}

	mustModule(t, nd, unitReq(m, false), true)
	if got := c.Exec(t, nd, "systemctl is-enabled kthw-lab.service; systemctl is-active kthw-lab.service"); got != "enabled\nactive\n" {
		t.Errorf("after apply: %q", got)
	}
	if got := starts(); got != "hello\n" {
		t.Errorf("starts = %q, want one start", got)
	}

	r = mustModule(t, nd, unitReq(m, false), false)
	if r.res.GetDiff() != "" {
		t.Errorf("second apply diff: %q", r.res.GetDiff())
	}
	mustModule(t, nd, unitReq(m, true), false)
	if got := starts(); got != "hello\n" {
		t.Errorf("starts = %q after an unchanged run, want no restart", got)
	}

	m.Dropins["greeting"] = "[Service]\nEnvironment=GREETING=bye\n"
	r = mustModule(t, nd, unitReq(m, true), true)
	if got := starts(); got != "hello\n" {
		t.Fatalf("check restarted the unit: %q", got)
	}
	r = mustModule(t, nd, unitReq(m, false), true)
	if !strings.Contains(r.res.GetDiff(), "+Environment=GREETING=bye") || !strings.Contains(r.res.GetDiff(), "restart kthw-lab.service (its configuration changed)") {
		t.Errorf("restart diff:\n%s", r.res.GetDiff())
	}
	if got := starts(); got != "hello\nbye\n" {
		t.Errorf("starts = %q, want a restart with the new drop-in", got)
	}
	mustModule(t, nd, unitReq(m, false), false)

	t.Run("disable and stop", func(t *testing.T) {
		no := false
		mustModule(t, nd, unitReq(&agentv1.SystemdUnitModule{Name: "kthw-lab.service", Enabled: &no, State: agentv1.SystemdUnitModule_STATE_STOPPED}, false), true)
		if got := c.Exec(t, nd, "systemctl is-enabled kthw-lab.service; systemctl is-active kthw-lab.service; true"); got != "disabled\ninactive\n" {
			t.Errorf("after disable: %q", got)
		}
	})

	t.Run("mask and unmask", func(t *testing.T) {
		mustModule(t, nd, unitReq(&agentv1.SystemdUnitModule{Name: "kthw-masked.service", Masked: true}, false), true)
		if got := c.Exec(t, nd, "systemctl is-enabled kthw-masked.service; true"); got != "masked\n" {
			t.Errorf("after mask: %q", got)
		}
		mustModule(t, nd, unitReq(&agentv1.SystemdUnitModule{Name: "kthw-masked.service", Masked: true}, false), false)
		un := &agentv1.SystemdUnitModule{Name: "kthw-masked.service", Content: labUnit, Enabled: &yes, State: agentv1.SystemdUnitModule_STATE_STARTED}
		mustModule(t, nd, unitReq(un, false), true)
		if got := c.Exec(t, nd, "systemctl is-enabled kthw-masked.service; systemctl is-active kthw-masked.service"); got != "enabled\nactive\n" {
			t.Errorf("after unmask: %q", got)
		}
	})

	t.Run("failing unit", func(t *testing.T) {
		bad := &agentv1.SystemdUnitModule{
			Name:    "kthw-bad.service",
			Content: "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo kthw-bad-unit-output >&2; exit 3'\n",
			State:   agentv1.SystemdUnitModule_STATE_STARTED,
		}
		r := runModule(t, nd, unitReq(bad, false))
		if r.err == nil {
			t.Fatal("a failing unit started")
		}
		for _, want := range []string{`job result "failed"`, "unit failed", "kthw-bad-unit-output"} {
			if !strings.Contains(r.res.GetError(), want) {
				t.Errorf("error %q does not mention %q", r.res.GetError(), want)
			}
		}
	})
}

func TestLabSysctl(t *testing.T) {
	c := labtest.Start(t, 1)
	nd := c.Nodes[0]
	// kernel.printk_ratelimit is kernel-global: read-only in a lab node.
	// Should the lab ever let it through, the host's value is put back.
	const key, procFile = "kernel.printk_ratelimit", "/proc/sys/kernel/printk_ratelimit"
	hostBefore, err := os.ReadFile(procFile)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if now, _ := os.ReadFile(procFile); string(now) != string(hostBefore) {
			t.Errorf("the host's %s changed: %q -> %q (restoring)", key, hostBefore, now)
			os.WriteFile(procFile, hostBefore, 0o644)
		}
	})
	cur, err := strconv.Atoi(strings.TrimSpace(string(hostBefore)))
	if err != nil {
		t.Fatal(err)
	}
	req := func(values map[string]string) *agentv1.RunModuleRequest {
		return &agentv1.RunModuleRequest{Name: "sysctl", Module: &agentv1.RunModuleRequest_Sysctl{Sysctl: &agentv1.SysctlModule{Values: values}}}
	}
	c.Exec(t, nd, "sysctl -w net.ipv4.ip_forward=0 >/dev/null")

	// A read-only key whose running value is already right is fine.
	ok := map[string]string{"net.ipv4.ip_forward": "1", key: strconv.Itoa(cur), "net.ipv4.tcp_rmem": strings.ReplaceAll(strings.TrimSpace(c.Exec(t, nd, "cat /proc/sys/net/ipv4/tcp_rmem")), "\t", "  ")}
	r := mustModule(t, nd, req(ok), true)
	if !strings.Contains(r.res.GetDiff(), "sysctl net.ipv4.ip_forward: 0 -> 1") {
		t.Errorf("diff:\n%s", r.res.GetDiff())
	}
	if got := c.Exec(t, nd, "cat /proc/sys/net/ipv4/ip_forward"); got != "1\n" {
		t.Errorf("ip_forward = %q", got)
	}
	mustModule(t, nd, req(ok), false)
	// sysctl --system reads the file back.
	if out := c.Exec(t, nd, "sysctl --system 2>&1 | grep -c 99-kthw.conf || true"); strings.TrimSpace(out) == "0" {
		t.Errorf("sysctl --system did not read the file")
	}

	bad := map[string]string{"net.ipv4.ip_forward": "1", key: strconv.Itoa(cur + 1)}
	check := req(bad)
	check.CheckOnly = true
	r = mustModule(t, nd, check, true)
	if !strings.Contains(r.res.GetDiff(), procFile+" is read-only on this node: apply will fail") {
		t.Errorf("check diff does not warn of the read-only key:\n%s", r.res.GetDiff())
	}
	r = runModule(t, nd, req(bad))
	if r.err == nil || !strings.Contains(r.res.GetError(), key) || !strings.Contains(r.res.GetError(), "read-only") {
		t.Fatalf("a read-only key that must change: err %v, result %v", r.err, r.res)
	}
	t.Logf("read-only key: %s", r.res.GetError())
}

func TestLabKernelModules(t *testing.T) {
	c := labtest.Start(t, 1)
	nd := c.Nodes[0]
	req := func(names ...string) *agentv1.RunModuleRequest {
		return &agentv1.RunModuleRequest{Name: "kernel-modules", Module: &agentv1.RunModuleRequest_KernelModules{
			KernelModules: &agentv1.KernelModulesModule{Names: names}}}
	}
	r := mustModule(t, nd, req("overlay", "br_netfilter"), true)
	for _, want := range []string{"kernel module overlay: built in", "kernel module br_netfilter: built in (/proc/sys/net/bridge exists)"} {
		if !strings.Contains(r.res.GetDiff(), want) {
			t.Errorf("diff does not say %q:\n%s", want, r.res.GetDiff())
		}
	}
	if got := c.Exec(t, nd, "cat /etc/modules-load.d/kthw.conf"); !strings.HasSuffix(got, "overlay\nbr_netfilter\n") {
		t.Errorf("modules-load.d file: %q", got)
	}
	mustModule(t, nd, req("overlay", "br_netfilter"), false)

	// modprobe itself fails, as it does on a kernel without loadable
	// modules.
	r = runModule(t, nd, req("kthw_no_such_module"))
	if r.err == nil || !strings.Contains(r.res.GetError(), "load kernel module kthw_no_such_module") || !strings.Contains(r.res.GetError(), "modprobe exited") {
		t.Fatalf("an unknown module: err %v, result %v", r.err, r.res)
	}
	t.Logf("unknown module: %s", r.res.GetError())
}

func TestLabSwap(t *testing.T) {
	c := labtest.Start(t, 1)
	nd := c.Nodes[0]
	c.Exec(t, nd, `printf '/dev/vda1 / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n' > /etc/fstab`)
	req := &agentv1.RunModuleRequest{Name: "swap", Module: &agentv1.RunModuleRequest_Swap{Swap: &agentv1.SwapModule{}}}
	mustModule(t, nd, req, true)
	if got := c.Exec(t, nd, "cat /etc/fstab"); got != "/dev/vda1 / ext4 defaults 0 1\n#/swapfile none swap sw 0 0\n" {
		t.Errorf("fstab = %q", got)
	}
	mustModule(t, nd, req, false)
}

func TestLabHostname(t *testing.T) {
	c := labtest.Start(t, 1)
	nd := c.Nodes[0]
	hosts := []*agentv1.HostnameModule_Host{
		{Address: nd.Address.String(), Names: []string{"kthw-renamed", "kthw-renamed.lab"}},
		{Address: "10.200.0.99", Names: []string{"other"}},
	}
	req := &agentv1.RunModuleRequest{Name: "hostname", Module: &agentv1.RunModuleRequest_Hostname{Hostname: &agentv1.HostnameModule{
		Hostname: "kthw-renamed", Hosts: hosts,
	}}}
	r := mustModule(t, nd, req, true)
	if !strings.Contains(r.res.GetDiff(), "running host name: "+nd.Name+" -> kthw-renamed") {
		t.Errorf("diff:\n%s", r.res.GetDiff())
	}
	for _, l := range r.log {
		if strings.Contains(l, "systemd-hostnamed:") {
			t.Errorf("hostnamed was not used: %s", l)
		}
	}
	if got := c.Exec(t, nd, "hostname; cat /etc/hostname; hostnamectl --static"); got != "kthw-renamed\nkthw-renamed\nkthw-renamed\n" {
		t.Errorf("hostname, /etc/hostname, hostnamectl: %q", got)
	}
	want := fmt.Sprintf("# BEGIN kthw\n%s\tkthw-renamed kthw-renamed.lab\n10.200.0.99\tother\n# END kthw\n", nd.Address)
	if got := c.Exec(t, nd, "cat /etc/hosts"); !strings.HasSuffix(got, want) || !strings.Contains(got, "localhost") {
		t.Errorf("/etc/hosts:\n%s", got)
	}
	if got := c.Exec(t, nd, "getent hosts other"); !strings.HasPrefix(got, "10.200.0.99") {
		t.Errorf("getent hosts other: %q", got)
	}
	mustModule(t, nd, req, false)
}

// TestLabFirewallUFW opens the ubuntu profile's control-plane ports with the
// firewall module in Debian's ufw (iptables-nft in the node's own network
// namespace), and checks the result with ufw and iptables themselves and
// with a connection from the host. Enabling ufw also applies its
// /etc/ufw/sysctl.conf (IPT_SYSCTL): net.* keys only, which lab nodes may
// write, so the node needs no change for it.
func TestLabFirewallUFW(t *testing.T) {
	c := labtest.Start(t, 1)
	nd := c.Nodes[0]
	mustModule(t, nd, &agentv1.RunModuleRequest{Name: "packages ufw", Module: &agentv1.RunModuleRequest_Packages{Packages: &agentv1.PackagesModule{
		Packages: []*agentv1.Package{{Name: "ufw"}}}}}, true)

	cl := config.Default("ubuntu")
	nodes, err := cl.Nodes()
	if err != nil {
		t.Fatal(err)
	}
	params, err := nodeprep.FromProfile(cl, nodes)
	if err != nil {
		t.Fatal(err)
	}
	ports := params.FirewallPorts[config.RoleControlPlane]
	if params.FirewallTool != "ufw" || len(ports) == 0 {
		t.Fatalf("ubuntu profile: firewall %q, control-plane ports %v", params.FirewallTool, ports)
	}
	req := func(checkOnly bool) *agentv1.RunModuleRequest {
		return &agentv1.RunModuleRequest{Name: "firewall", CheckOnly: checkOnly, Module: &agentv1.RunModuleRequest_Firewall{Firewall: &agentv1.FirewallModule{
			Tool: params.FirewallTool, Ports: ports}}}
	}

	// Installed but inactive: the module leaves it alone.
	r := mustModule(t, nd, req(false), false)
	if !strings.Contains(r.res.GetSkippedReason(), "ufw is not running") {
		t.Fatalf("inactive ufw: %v", r.res)
	}
	if got := c.Exec(t, nd, "ufw show added"); !strings.Contains(got, "(None)") {
		t.Fatalf("rules added to an inactive ufw:\n%s", got)
	}

	// ufw loads its rules with iptables and ip6tables (nft backend).
	if out, err := sshx.Run(context.Background(), nd.SSH, "iptables -w -S 2>&1 && ip6tables -w -S 2>&1", nil); err != nil {
		t.Skipf("lab node cannot run iptables for ufw: %v: %s", err, out)
	}
	// What an admin does first: keep SSH open (and here one port of the
	// set, without a comment), then enable ufw.
	c.Exec(t, nd, "ufw allow 22/tcp && ufw allow 6443/tcp && ufw --force enable")
	if got := c.Exec(t, nd, "ufw status"); !strings.Contains(got, "Status: active") {
		t.Fatalf("ufw status after enable:\n%s", got)
	}
	added := c.Exec(t, nd, "ufw show added")
	status := c.Exec(t, nd, "ufw status verbose")

	// A listener on one of the ports: ufw drops connections to it until
	// the module opens it.
	c.Exec(t, nd, "systemd-run --unit=kthw-listen python3 -m http.server --bind 0.0.0.0 10259 >/dev/null 2>&1 && for i in $(seq 50); do ss -Hltn 'sport = :10259' | grep -q . && exit 0; sleep 0.1; done; exit 1")
	listener := netip.AddrPortFrom(nd.Address, 10259).String()
	dial := func() error {
		conn, err := net.DialTimeout("tcp", listener, 2*time.Second)
		if err == nil {
			conn.Close()
		}
		return err
	}
	if err := dial(); err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("connect to %s before the module opened it: %v, want a timeout (dropped)", listener, err)
	}

	r = mustModule(t, nd, req(true), true)
	var want strings.Builder
	for _, p := range ports {
		if p.GetPort() != "6443" {
			fmt.Fprintf(&want, "ufw: open %s/%s (%s)\n", p.GetPort(), p.GetProtocol(), p.GetComment())
		}
	}
	if r.res.GetDiff() != want.String() {
		t.Errorf("check diff:\n%s\nwant:\n%s", r.res.GetDiff(), want.String())
	}
	if got := c.Exec(t, nd, "ufw show added"); got != added {
		t.Fatalf("check changed ufw's rules:\n%s\nbefore:\n%s", got, added)
	}
	if got := c.Exec(t, nd, "ufw status verbose"); got != status {
		t.Fatalf("check changed the running firewall:\n%s\nbefore:\n%s", got, status)
	}

	mustModule(t, nd, req(false), true)
	added = c.Exec(t, nd, "ufw show added")
	status = c.Exec(t, nd, "ufw status verbose")
	v4 := c.Exec(t, nd, "iptables -w -S ufw-user-input")
	v6 := c.Exec(t, nd, "ip6tables -w -S ufw6-user-input")
	if err := dial(); err != nil {
		t.Errorf("connect to %s after the module opened it: %v", listener, err)
	}
	for _, p := range ports {
		spec := strings.Replace(p.GetPort(), "-", ":", 1) + "/" + p.GetProtocol()
		rule := "ufw allow " + spec
		if p.GetPort() != "6443" {
			rule += " comment '" + p.GetComment() + "'"
		}
		if !slices.Contains(strings.Split(added, "\n"), rule) {
			t.Errorf("ufw show added has no %q:\n%s", rule, added)
		}
		if !slices.ContainsFunc(strings.Split(status, "\n"), func(l string) bool {
			f := strings.Fields(l)
			return len(f) >= 4 && f[0] == spec && f[1] == "ALLOW" && f[2] == "IN" && f[3] == "Anywhere"
		}) {
			t.Errorf("ufw status verbose does not allow %s in:\n%s", spec, status)
		}
		// The running firewall: an ACCEPT rule in ufw's user chain.
		dport := "--dport " + p.GetPort() + " "
		if strings.Contains(p.GetPort(), "-") {
			dport = "--dports " + strings.Replace(p.GetPort(), "-", ":", 1) + " "
		}
		for fam, rules := range map[string]string{"iptables ufw-user-input": v4, "ip6tables ufw6-user-input": v6} {
			if !slices.ContainsFunc(strings.Split(rules, "\n"), func(l string) bool {
				return strings.Contains(l, "-p "+p.GetProtocol()+" ") && strings.Contains(l, dport) && strings.HasSuffix(l, "-j ACCEPT")
			}) {
				t.Errorf("%s has no ACCEPT for %s:\n%s", fam, spec, rules)
			}
		}
	}
	if !slices.Contains(strings.Split(added, "\n"), "ufw allow 22/tcp") {
		t.Errorf("the admin's rule is gone:\n%s", added)
	}

	r = mustModule(t, nd, req(false), false)
	if r.res.GetDiff() != "" {
		t.Errorf("second apply diff: %q", r.res.GetDiff())
	}
	if got := c.Exec(t, nd, "ufw show added"); got != added {
		t.Errorf("second apply changed ufw's rules:\n%s\nbefore:\n%s", got, added)
	}
}
