package lab

import (
	"net/netip"
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
