package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPlaybookTemplates renders the benchmark playbook's templates with
// Ansible and compares them with kthw's own renderings, the agent modules'
// golden files: the comparison is only fair when both tools write the same
// bytes.
func TestPlaybookTemplates(t *testing.T) {
	if _, err := exec.LookPath("ansible-playbook"); err != nil {
		t.Skip("ansible-playbook not installed (scripts/setup.sh installs Debian's ansible)")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	golden := func(name string) string {
		b, err := os.ReadFile(filepath.Join(root, "agent/module/testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	out := t.TempDir()
	type ctr struct {
		SandboxImage  string `json:"sandbox_image"`
		SystemdCgroup bool   `json:"systemd_cgroup"`
		ConfigVersion int    `json:"config_version"`
		Socket        string `json:"socket"`
		ConfigDir     string `json:"config_dir"`
	}
	full := ctr{"registry.k8s.io/pause:3.10", true, 2, "/run/containerd/containerd.sock", "/etc/containerd"}
	v3 := full
	v3.ConfigVersion = 3
	cases := []struct {
		name, template, want string
		vars                 map[string]any
	}{
		{"config-v2", "config.toml.j2", golden("TestContainerdConfig/v2.golden"), map[string]any{"kthw_containerd": full}},
		{"config-v3", "config.toml.j2", golden("TestContainerdConfig/v3.golden"), map[string]any{"kthw_containerd": v3}},
		{"config-v2-defaults", "config.toml.j2", golden("TestContainerdConfig/v2_defaults.golden"), map[string]any{"kthw_containerd": ctr{
			ConfigVersion: 2, Socket: "/run/kthw/containerd.sock", ConfigDir: "/etc/kthw/containerd"}}},
		{"hosts-docker.io", "hosts.toml.j2", golden("TestContainerdHostsTOML/docker.io.golden"), map[string]any{"item": map[string]any{
			"registry": "docker.io", "endpoints": []string{"https://mirror.lab:5000", "http://10.200.0.1:5001"}}}},
		{"hosts-registry.k8s.io", "hosts.toml.j2", golden("TestContainerdHostsTOML/registry.k8s.io.golden"), map[string]any{"item": map[string]any{
			"registry": "registry.k8s.io", "endpoints": []string{"https://mirror.lab:5000"}}}},
		{"hosts-default", "hosts.toml.j2", golden("TestContainerdHostsTOML/_default.golden"), map[string]any{"item": map[string]any{
			"registry": "_default", "endpoints": []string{"https://mirror.lab:5000"}}}},
		{"sysctl", "sysctl.conf.j2", golden("TestSysctlApply/file.golden"), map[string]any{"kthw_sysctls": map[string]string{
			"net.ipv4.ip_forward": "1", "net.ipv4.tcp_rmem": "4096 131072   6291456", "net.bridge.bridge-nf-call-iptables": "1",
			"net.ipv4.conf.eth0/100.rp_filter": "1", "net/ipv4/conf/eth0.100/accept_local": "1"}}},
		{"modules-load", "modules-load.conf.j2", addedLines(golden("TestKernelModulesLoad.golden")), map[string]any{
			"kthw_kernel_modules": []string{"overlay", "br-netfilter", "nf_conntrack", "xt_conntrack", "ip_vs", "ip_vs"}}},
	}
	var play strings.Builder
	play.WriteString("- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n")
	for _, c := range cases {
		vars, err := json.Marshal(c.vars)
		if err != nil {
			t.Fatal(err)
		}
		play.WriteString("    - ansible.builtin.template:\n")
		play.WriteString("        src: " + filepath.Join(root, "scripts/bench/ansible/templates", c.template) + "\n")
		play.WriteString("        dest: " + filepath.Join(out, c.name) + "\n")
		play.WriteString("      vars: " + string(vars) + "\n")
	}
	pb := filepath.Join(out, "render.yml")
	if err := os.WriteFile(pb, []byte(play.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ansible-playbook", "-i", "localhost,", pb)
	cmd.Env = append(os.Environ(), "ANSIBLE_LOCAL_TEMP="+filepath.Join(out, "tmp"), "ANSIBLE_HOME="+filepath.Join(out, "home"),
		"ANSIBLE_NOCOLOR=1", "ANSIBLE_LOCALHOST_WARNING=false", "ANSIBLE_INVENTORY_UNPARSED_WARNING=false")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ansible-playbook: %v\n%s", err, b)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(out, c.name))
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != c.want {
				t.Errorf("Ansible rendered\n%s\nkthw renders\n%s", b, c.want)
			}
		})
	}
}

// addedLines returns the lines a unified diff adds (the file it creates).
func addedLines(diff string) string {
	var b strings.Builder
	in := false
	for _, l := range strings.Split(diff, "\n") {
		switch {
		case strings.HasPrefix(l, "+++ "):
			in = true
		case in && strings.HasPrefix(l, "+"):
			b.WriteString(l[1:] + "\n")
		}
	}
	return b.String()
}

// TestPlaybookVars checks the playbook's inputs composed from the debian
// profile.
func TestPlaybookVars(t *testing.T) {
	e := &benchEnv{persist: "/var/lib/kthw/bench", imageDir: "/var/lib/kthw/lab/rootfs"}
	file := filepath.Join(t.TempDir(), "cluster.yaml")
	if err := os.WriteFile(file, []byte(e.labCluster("kb", 3)), 0o644); err != nil {
		t.Fatal(err)
	}
	cl, specs, err := loadCluster(file)
	if err != nil {
		t.Fatal(err)
	}
	b, err := playbookVars(cl, specs)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	pk, _ := json.Marshal(v["kthw_packages"])
	if want := `["ca-certificates","conntrack","socat","containerd=1.6.20*"]`; string(pk) != want {
		t.Errorf("kthw_packages = %s, want %s", pk, want)
	}
	hosts, _ := json.Marshal(v["kthw_hosts"])
	if want := `[{"address":"10.200.160.11","names":["cp-1"]},{"address":"10.200.160.12","names":["worker-1"]},{"address":"10.200.160.13","names":["worker-2"]}]`; string(hosts) != want {
		t.Errorf("kthw_hosts = %s, want %s", hosts, want)
	}
	if c := v["kthw_containerd"].(map[string]any); c["config_version"] != float64(2) || c["sandbox_image"] != "registry.k8s.io/pause:3.10" {
		t.Errorf("kthw_containerd = %v", c)
	}
}
