package module

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/kthw/kthw/distro/pkg"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

func fwModule(tool string) *agentv1.FirewallModule {
	return &agentv1.FirewallModule{Tool: tool, Ports: []*agentv1.FirewallModule_Port{
		{Port: "6443", Protocol: "tcp", Comment: "kube-apiserver"},
		{Port: "30000-32767", Protocol: "tcp", Comment: "NodePort services"},
		{Port: "4789", Protocol: "udp", Comment: "Calico VXLAN"},
	}}
}

// ufw: opens what is missing (ranges in ufw's colon syntax), then nothing.
func TestFirewallUFW(t *testing.T) {
	env := newRecorder(t, "")
	env.write(t, "/usr/sbin/ufw", "", 0o755)
	added := []string{"ufw allow 22/tcp", "ufw allow 6443/tcp comment 'kube-apiserver'"}
	r := &prepRunner{handle: func(argv []string) ([]byte, error) {
		switch strings.Join(argv[:2], " ") {
		case "ufw status":
			return []byte("Status: active\n"), nil
		case "ufw show":
			return []byte("Added user rules (see 'ufw status' for running firewall):\n" + strings.Join(added, "\n") + "\n"), nil
		case "ufw allow":
			added = append(added, strings.Join(argv, " "))
		}
		return nil, nil
	}}
	env.Runner = r
	f, err := NewFirewall(fwModule(""))
	if err != nil {
		t.Fatal(err)
	}
	res := prepRun(t, "Check", f.Check, &env.Env)
	want := "ufw: open 30000-32767/tcp (NodePort services)\nufw: open 4789/udp (Calico VXLAN)\n"
	if !res.Changed || res.Diff != want {
		t.Fatalf("Check = %+v", res)
	}
	prepRun(t, "Apply", f.Apply, &env.Env)
	var allows []string
	for _, c := range r.Calls() {
		if strings.HasPrefix(c, "ufw allow") {
			allows = append(allows, c)
		}
	}
	if !slices.Equal(allows, []string{"ufw allow 30000:32767/tcp comment NodePort services", "ufw allow 4789/udp comment Calico VXLAN"}) {
		t.Fatalf("allows = %q", allows)
	}
	if res := prepRun(t, "second", f.Apply, &env.Env); res.Changed {
		t.Fatalf("second run = %+v", res)
	}
}

func TestFirewallFirewalld(t *testing.T) {
	env := newRecorder(t, "")
	env.write(t, "/usr/bin/firewall-cmd", "", 0o755)
	// permanent is firewalld's saved configuration, running what --reload
	// loaded from it.
	permanent, running := []string{"22/tcp"}, []string{"22/tcp"}
	r := &prepRunner{handle: func(argv []string) ([]byte, error) {
		switch {
		case argv[1] == "--state":
			return []byte("running\n"), nil
		case argv[1] == "--list-ports":
			return []byte(strings.Join(running, " ") + "\n"), nil
		case argv[1] == "--reload":
			running = slices.Clone(permanent)
		case argv[1] == "--permanent" && argv[2] == "--list-ports":
			return []byte(strings.Join(permanent, " ") + "\n"), nil
		case argv[1] == "--permanent":
			permanent = append(permanent, strings.TrimPrefix(argv[2], "--add-port="))
		}
		return nil, nil
	}}
	env.Runner = r
	f, _ := NewFirewall(fwModule("firewalld"))
	prepRun(t, "Apply", f.Apply, &env.Env)
	if !slices.Contains(r.Calls(), "firewall-cmd --reload") || !slices.Contains(running, "30000-32767/tcp") {
		t.Fatalf("calls %q, running ports %q", r.Calls(), running)
	}
	n := len(r.Calls())
	if res := prepRun(t, "second", f.Apply, &env.Env); res.Changed || slices.Contains(r.Calls()[n:], "firewall-cmd --reload") {
		t.Fatalf("second run = %+v, calls %q", res, r.Calls()[n:])
	}

	// A run that stopped after saving a port but before the reload: the
	// port is not open yet, and the next run reloads without adding it again.
	running = []string{"22/tcp", "6443/tcp", "30000-32767/tcp"}
	res := prepRun(t, "Check after an interrupted run", f.Check, &env.Env)
	if !res.Changed || res.Diff != "firewalld: open 4789/udp (Calico VXLAN)\n" {
		t.Fatalf("Check = %+v", res)
	}
	n = len(r.Calls())
	prepRun(t, "Apply after an interrupted run", f.Apply, &env.Env)
	if got := r.Calls()[n:]; slices.ContainsFunc(got, func(c string) bool { return strings.Contains(c, "--add-port") }) ||
		!slices.Contains(got, "firewall-cmd --reload") || !slices.Contains(running, "4789/udp") {
		t.Fatalf("calls %q, running ports %q", got, running)
	}
}

// No firewall installed, or one that is not running: skipped, nothing run
// beyond the state query.
func TestFirewallNone(t *testing.T) {
	env := newRecorder(t, "")
	env.Runner = &prepRunner{}
	f, _ := NewFirewall(fwModule(""))
	res := prepRun(t, "Apply", f.Apply, &env.Env)
	if res.Changed || !strings.Contains(res.SkippedReason, "ufw is not installed, firewalld is not installed") {
		t.Fatalf("res = %+v", res)
	}
	env.write(t, "/usr/bin/firewall-cmd", "", 0o755)
	r := &prepRunner{handle: func(argv []string) ([]byte, error) {
		return []byte("not running\n"), &pkg.ExitError{Argv: argv, Code: 252}
	}}
	env.Runner = r
	res = prepRun(t, "Apply", f.Apply, &env.Env)
	if res.Changed || !strings.Contains(res.SkippedReason, "firewalld is not running") || len(r.Calls()) != 1 {
		t.Fatalf("res = %+v, calls %q", res, r.Calls())
	}
}

func TestFirewallInvalid(t *testing.T) {
	for _, m := range []*agentv1.FirewallModule{
		{},
		{Tool: "iptables", Ports: []*agentv1.FirewallModule_Port{{Port: "22"}}},
		{Ports: []*agentv1.FirewallModule_Port{{Port: "70000"}}},
		{Ports: []*agentv1.FirewallModule_Port{{Port: "32767-30000"}}},
		{Ports: []*agentv1.FirewallModule_Port{{Port: "22", Protocol: "sctp"}}},
		{Ports: []*agentv1.FirewallModule_Port{{Port: "22", Comment: "it's"}}},
	} {
		if _, err := NewFirewall(m); !errors.Is(err, ErrInvalid) {
			t.Errorf("NewFirewall(%v) = %v, want ErrInvalid", m, err)
		}
	}
}

func TestSELinux(t *testing.T) {
	env := newRecorder(t, "")
	env.write(t, "/etc/selinux/config", "# comment\nSELINUX=enforcing\nSELINUXTYPE=targeted\n", 0o644)
	env.write(t, "/sys/fs/selinux/enforce", "1\n", 0o644)
	r := &prepRunner{handle: func(argv []string) ([]byte, error) {
		env.write(t, "/sys/fs/selinux/enforce", argv[1]+"\n", 0o644)
		return nil, nil
	}}
	env.Runner = r
	s, err := NewSELinux(&agentv1.SELinuxModule{Mode: "permissive"})
	if err != nil {
		t.Fatal(err)
	}
	res := prepRun(t, "Check", s.Check, &env.Env)
	if !res.Changed || !strings.Contains(res.Diff, "+SELINUX=permissive") || !strings.Contains(res.Diff, "setenforce: enforcing -> permissive") || len(r.Calls()) != 0 {
		t.Fatalf("Check = %+v", res)
	}
	prepRun(t, "Apply", s.Apply, &env.Env)
	if got := env.readFile(t, "/etc/selinux/config"); got != "# comment\nSELINUX=permissive\nSELINUXTYPE=targeted\n" {
		t.Fatalf("config = %q", got)
	}
	if !slices.Equal(r.Calls(), []string{"setenforce 0"}) {
		t.Fatalf("calls = %q", r.Calls())
	}
	if res := prepRun(t, "second", s.Apply, &env.Env); res.Changed {
		t.Fatalf("second = %+v", res)
	}
	if _, err := NewSELinux(&agentv1.SELinuxModule{Mode: "off"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad mode: %v", err)
	}
	// No SELinux at all: skipped.
	env2 := newRecorder(t, "")
	if res := prepRun(t, "none", s.Apply, &env2.Env); res.Changed || res.SkippedReason == "" {
		t.Fatalf("no selinux: %+v", res)
	}
}
