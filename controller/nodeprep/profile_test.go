package nodeprep

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/kthw/kthw/controller/config"
	"github.com/kthw/kthw/distro/profile"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestFromProfileGolden renders the node-preparation inputs of the default
// lab cluster for every profile, with Kubernetes packages on, and compares
// them with testdata/TestFromProfileGolden/<profile>.golden.
func TestFromProfileGolden(t *testing.T) {
	for _, name := range profile.List() {
		t.Run(name, func(t *testing.T) {
			c := config.Default(name)
			c.NodePrep.KubernetesPackages = nil
			c.NodePrep.RegistryMirrors = []config.RegistryMirror{{Registry: "docker.io", Endpoints: []string{"https://mirror.lan:5000"}}}
			nodes, err := c.Nodes()
			if err != nil {
				t.Fatal(err)
			}
			p, err := FromProfile(c, nodes)
			if err != nil {
				t.Fatal(err)
			}
			got := render(t, p)
			path := filepath.Join("testdata", "TestFromProfileGolden", name+".golden")
			if *update {
				os.MkdirAll(filepath.Dir(path), 0o755)
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update)", err)
			}
			if got != string(want) {
				t.Fatalf("rendered inputs differ from %s (run with -update to accept):\n%s", path, got)
			}
		})
	}
}

// render prints the steps' module requests, keys shortened.
func render(t *testing.T, p Params) string {
	t.Helper()
	var b strings.Builder
	for _, s := range Steps(p) {
		b.WriteString("## " + s.Name + "\n")
	}
	mo := stableJSON{t}
	for _, r := range p.Repositories {
		r := &agentv1.RepositoryModule{Name: r.Name, Description: r.Description, Uri: r.Uri, Suite: r.Suite, Components: r.Components,
			Key: []byte(firstLine(string(r.Key)))}
		b.WriteString("repository: " + mo.Format(r) + "\n")
	}
	b.WriteString("containerd: " + mo.Format(p.Containerd) + "\n")
	for _, k := range p.Kubernetes {
		b.WriteString("kubernetes: " + mo.Format(k) + "\n")
	}
	b.WriteString("hostname hosts: " + mo.Format(&agentv1.HostnameModule{Hosts: p.Hosts}) + "\n")
	b.WriteString("kernel modules: " + strings.Join(p.KernelModules, " ") + "\n")
	b.WriteString("sysctls: " + mo.Format(&agentv1.SysctlModule{Values: p.Sysctls}) + "\n")
	b.WriteString("base packages: " + strings.Join(p.BasePackages, " ") + "\n")
	b.WriteString("selinux: " + p.SELinux + "\n")
	if p.FirewallTool != "" {
		for _, role := range []config.Role{config.RoleControlPlane, config.RoleWorker} {
			b.WriteString("firewall " + string(role) + ": " + mo.Format(&agentv1.FirewallModule{Tool: p.FirewallTool, Ports: p.FirewallPorts[role]}) + "\n")
		}
	}
	return b.String()
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// stableJSON renders a message as indented JSON with fixed whitespace
// (protojson's own output varies its whitespace on purpose).
type stableJSON struct{ t *testing.T }

func (s stableJSON) Format(m proto.Message) string {
	raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		s.t.Fatal(err)
	}
	var compact, out bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		s.t.Fatal(err)
	}
	if err := json.Indent(&out, compact.Bytes(), "", "  "); err != nil {
		s.t.Fatal(err)
	}
	return out.String()
}
