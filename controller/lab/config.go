package lab

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/kthw/kthw/images"
)

// Defaults for Config.
const (
	DefaultDir         = "/var/lib/kthw/lab"
	DefaultRecipe      = "debian-bookworm"
	DefaultBridge      = "kthw0"
	DefaultProxyPort   = 3142
	DefaultAptDir      = "/etc/apt"
	DefaultBootTimeout = 60 * time.Second
	DefaultStopTimeout = 20 * time.Second
)

// MaxProxyPort is the highest port apt-cacher-ng (3.7) binds: from 32768 on it fails with
// "Error resolving address for binding".
const MaxProxyPort = 32767

// DefaultBridgeAddress is the bridge's address and the lab's range.
var DefaultBridgeAddress = netip.MustParsePrefix("10.200.0.1/24")

// Config configures a Lab. The zero value, after SetDefaults, is the machine's default lab.
type Config struct {
	// Dir holds the lab's state: nodes/ and proxy/ (default /var/lib/kthw/lab).
	Dir string `yaml:"dir"`
	// ImageDir caches built root filesystems (default Dir/rootfs). Labs may share one.
	ImageDir string `yaml:"imageDir"`
	// Recipe names the root filesystem recipe, <Recipe>.yaml in Recipes (default debian-bookworm).
	Recipe string `yaml:"recipe"`
	// Recipes holds the recipe files (default: images.Lab's lab/ directory).
	Recipes fs.FS `yaml:"-"`
	// Bridge is the host bridge the nodes attach to (default kthw0). At most 15 bytes.
	Bridge string `yaml:"bridge"`
	// BridgeAddress is the bridge's address with the lab's prefix (default 10.200.0.1/24).
	// Node addresses come from this prefix; the bridge address is their gateway and proxy.
	BridgeAddress netip.Prefix `yaml:"bridgeAddress"`
	// ProxyPort is apt-cacher-ng's port on 127.0.0.1 and the bridge address (default 3142,
	// at most MaxProxyPort).
	ProxyPort int `yaml:"proxyPort"`
	// AptDir is the host's apt configuration, read for the mirror URIs (default /etc/apt).
	AptDir string `yaml:"aptDir"`
	// Programs; bare names are looked up in PATH.
	Nspawn      string `yaml:"nspawn"`      // default systemd-nspawn
	Mmdebstrap  string `yaml:"mmdebstrap"`  // default mmdebstrap
	AptCacherNg string `yaml:"aptCacherNg"` // default apt-cacher-ng
	// BootTimeout bounds the wait for a node's sshd (default 60s).
	BootTimeout time.Duration `yaml:"bootTimeout"`
	// StopTimeout bounds a graceful stop before the node is killed (default 20s).
	StopTimeout time.Duration `yaml:"stopTimeout"`
	// Logger receives progress (discarded when nil).
	Logger *slog.Logger `yaml:"-"`
}

// SetDefaults fills the zero fields.
func (c *Config) SetDefaults() {
	if c.Dir == "" {
		c.Dir = DefaultDir
	}
	if c.ImageDir == "" {
		c.ImageDir = filepath.Join(c.Dir, "rootfs")
	}
	if c.Recipe == "" {
		c.Recipe = DefaultRecipe
	}
	if c.Recipes == nil {
		sub, err := fs.Sub(images.Lab, "lab")
		if err != nil {
			panic(err) // a constant, valid path
		}
		c.Recipes = sub
	}
	if c.Bridge == "" {
		c.Bridge = DefaultBridge
	}
	if !c.BridgeAddress.IsValid() {
		c.BridgeAddress = DefaultBridgeAddress
	}
	if c.ProxyPort == 0 {
		c.ProxyPort = DefaultProxyPort
	}
	if c.AptDir == "" {
		c.AptDir = DefaultAptDir
	}
	if c.Nspawn == "" {
		c.Nspawn = "systemd-nspawn"
	}
	if c.Mmdebstrap == "" {
		c.Mmdebstrap = "mmdebstrap"
	}
	if c.AptCacherNg == "" {
		c.AptCacherNg = "apt-cacher-ng"
	}
	if c.BootTimeout == 0 {
		c.BootTimeout = DefaultBootTimeout
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every invalid field at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("lab.%s: %s", field, fmt.Sprintf(format, a...)))
	}
	for field, p := range map[string]string{"dir": c.Dir, "imageDir": c.ImageDir} {
		switch {
		case !filepath.IsAbs(p):
			bad(field, "%q is not an absolute path", p)
		case strings.ContainsAny(p, ",:\n"):
			// Overlay mount options cannot carry these.
			bad(field, "%q contains ',', ':' or a newline", p)
		}
	}
	if !validName(c.Recipe, 64) {
		bad("recipe", "%q is not a valid recipe name", c.Recipe)
	}
	if !validName(c.Bridge, 15) {
		bad("bridge", "%q is not a valid interface name (a-z, 0-9, '-', at most 15)", c.Bridge)
	}
	switch a := c.BridgeAddress; {
	case !a.Addr().Is4():
		bad("bridgeAddress", "%s: only IPv4 is supported", a)
	case a.Bits() < 8 || a.Bits() > 30:
		bad("bridgeAddress", "%s: prefix length must be 8..30", a)
	case a.Masked().Addr() == a.Addr():
		bad("bridgeAddress", "%s is the network address, not a host address", a)
	}
	if c.ProxyPort < 1 || c.ProxyPort > MaxProxyPort {
		bad("proxyPort", "%d is out of range 1..%d", c.ProxyPort, MaxProxyPort)
	}
	if c.BootTimeout < 0 {
		bad("bootTimeout", "negative")
	}
	if c.StopTimeout < 0 {
		bad("stopTimeout", "negative")
	}
	return errors.Join(errs...)
}

// validName reports whether s is a non-empty lower-case DNS label of at most max bytes.
func validName(s string, max int) bool {
	if s == "" || len(s) > max || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}
