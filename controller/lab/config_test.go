package lab

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigDefaults(t *testing.T) {
	l, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	c := l.Config()
	if c.Dir != DefaultDir || c.ImageDir != DefaultDir+"/rootfs" || c.Bridge != DefaultBridge ||
		c.BridgeAddress != DefaultBridgeAddress || c.ProxyPort != DefaultProxyPort || c.AptDir != "/etc/apt" {
		t.Fatalf("defaults: %+v", c)
	}
	if got := l.ProxyURL(); got != "http://10.200.0.1:3142" {
		t.Fatalf("proxy URL %s", got)
	}
	if _, err := LoadRecipe(c.Recipes, c.Recipe); err != nil {
		t.Fatalf("default recipe: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	c := Config{Dir: "relative", ImageDir: "/a,b", Recipe: "x/y", Bridge: "much-too-long-bridge-name",
		BridgeAddress: netip.MustParsePrefix("10.200.0.0/24"), ProxyPort: 40000}
	c.SetDefaults()
	err := c.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"lab.dir", "lab.imageDir", "lab.recipe", "lab.bridge", "lab.bridgeAddress", "lab.proxyPort"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestHostAddress(t *testing.T) {
	l, err := New(Config{BridgeAddress: netip.MustParsePrefix("10.200.7.1/24")})
	if err != nil {
		t.Fatal(err)
	}
	for n, want := range map[int]string{2: "10.200.7.2/24", 11: "10.200.7.11/24", 254: "10.200.7.254/24"} {
		got, err := l.HostAddress(n)
		if err != nil || got.String() != want {
			t.Errorf("HostAddress(%d) = %v, %v; want %s", n, got, err, want)
		}
	}
	for _, n := range []int{0, 1, 255, -3} {
		if got, err := l.HostAddress(n); err == nil {
			t.Errorf("HostAddress(%d) = %v, want an error", n, got)
		}
	}
}

func TestProxyConfFiles(t *testing.T) {
	r := mustRecipe(t)
	archives := []ResolvedArchive{
		{Name: "mirror", URI: "http://m.example/debian"},
		{Name: "security", URI: "http://s.example/debian-security"},
	}
	files := proxyConfFiles("/lab/proxy", netip.MustParseAddr("10.200.0.1"), 3142, r, archives)
	conf := files["acng.conf"]
	for _, want := range []string{
		"CacheDir: /lab/proxy/cache\n", "LogDir: /lab/proxy/log\n", "Port: 3142\n",
		"BindAddress: 127.0.0.1 10.200.0.1\n", "PidFile: /lab/proxy/run/apt-cacher-ng.pid\n",
		"SocketPath: /lab/proxy/run/apt-cacher-ng.socket\n", "Remap-debrep: file:deb_mirror*.gz /debian ; file:backends_debian\n",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("acng.conf lacks %q:\n%s", want, conf)
		}
	}
	if files["backends_debian"] != "http://m.example/debian/\n" || files["backends_debian_security"] != "http://s.example/debian-security/\n" {
		t.Errorf("backends: %q", files)
	}
}

// Teardown of a lab that was never set up is a no-op, not an error.
func TestTeardownEmptyLab(t *testing.T) {
	l, err := New(Config{Dir: t.TempDir() + "/never", Bridge: "kthwnone0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Teardown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if nodes, err := l.List(t.Context()); err != nil || len(nodes) != 0 {
		t.Fatalf("list: %v %v", nodes, err)
	}
	if _, err := l.Status(t.Context(), "n1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("status of a missing node: %v", err)
	}
}

// A new node that cannot start leaves no directory and no mount behind.
func TestStartWithoutNetwork(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (bind mount of the nodes directory)")
	}
	dir := t.TempDir()
	l, err := New(Config{Dir: dir, Bridge: "kthwnone0"})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := testSpec(t)
	if _, err := l.Start(t.Context(), s); !errors.Is(err, ErrNoNetwork) {
		t.Fatalf("start without a bridge: %v, want ErrNoNetwork", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "nodes")); len(ents) > 0 {
		t.Errorf("left behind: %v", ents)
	}
	if mps, err := MountsUnder(dir); err != nil || len(mps) > 0 {
		t.Errorf("mounts left: %v %v", mps, err)
	}
}
