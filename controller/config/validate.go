package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// FieldError is one invalid field of a cluster.
type FieldError struct {
	// Path is the field's path in the file, e.g. "nodes[1].role" or
	// "network.podCIDR".
	Path string
	// File is the cluster file's name, empty for a cluster not parsed
	// from a file.
	File string
	// Line is the line of the field in File or, for a field the file does
	// not set, of its closest enclosing field; 0 if unknown.
	Line int
	// Msg says what is wrong.
	Msg string
}

func (e *FieldError) Error() string {
	switch {
	case e.Line > 0 && e.File != "":
		return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Path, e.Msg)
	case e.Line > 0:
		return fmt.Sprintf("line %d: %s: %s", e.Line, e.Path, e.Msg)
	case e.File != "":
		return fmt.Sprintf("%s: %s: %s", e.File, e.Path, e.Msg)
	}
	return e.Path + ": " + e.Msg
}

// FieldErrors returns the *FieldError values in err, which may be a single
// one or a tree of joined and wrapped errors, in order.
func FieldErrors(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(err error) {
		switch x := err.(type) {
		case nil:
		case *FieldError:
			out = append(out, x)
		case interface{ Unwrap() []error }:
			for _, e := range x.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			walk(x.Unwrap())
		}
	}
	walk(err)
	return out
}

// fieldErrs collects field errors in the order they are found.
type fieldErrs []*FieldError

func (e *fieldErrs) add(path, format string, args ...any) {
	*e = append(*e, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// join attaches c's file and lines to the errors and joins them; nil if
// there are none.
func (e fieldErrs) join(c *Cluster) error {
	if len(e) == 0 {
		return nil
	}
	errs := make([]error, len(e))
	for i, fe := range e {
		fe.File = c.file
		fe.Line = lineOf(c.lines, fe.Path)
		errs[i] = fe
	}
	return errors.Join(errs...)
}

// Validate checks the cluster and returns every problem at once: an
// errors.Join of *FieldError values (see FieldErrors), or nil.
// knownProfiles is the set of distro profile names to accept; nil means
// DefaultProfiles. Validate expects SetDefaults to have been applied: an
// unset field that has a default is reported as missing.
func (c *Cluster) Validate(knownProfiles []string) error {
	if knownProfiles == nil {
		knownProfiles = DefaultProfiles()
	}
	var e fieldErrs
	if c.APIVersion != APIVersion {
		e.add("apiVersion", "unsupported %q; want %s", c.APIVersion, APIVersion)
	}
	if c.Kind != Kind {
		e.add("kind", "unsupported %q; want %s", c.Kind, Kind)
	}
	switch {
	case c.Name == "":
		e.add("name", "required")
	case !isDNSLabel(c.Name):
		e.add("name", "%q is not a DNS label (lowercase letters, digits and '-', at most 63)", c.Name)
	}
	switch {
	case c.Profile == "":
		e.add("profile", "required; known profiles: %s", strings.Join(knownProfiles, ", "))
	case !slices.Contains(knownProfiles, c.Profile):
		e.add("profile", "unknown profile %q; known profiles: %s", c.Profile, strings.Join(knownProfiles, ", "))
	}

	// The provider is checked against the nodes, but its errors come
	// first, in file order.
	var netErrs fieldErrs
	plan := checkNetwork(&netErrs, c.Network)
	nodes := expand(&netErrs, c.Pools, plan)
	checkProvider(&e, c.Provider, nodes, plan)
	if c.Provider.Type == ProviderProxmox && slices.Contains(proxmoxReservedNames, c.Name) {
		e.add("name", "%q cannot name a Proxmox cluster: it is one of the VM tags kthw sets (%s)", c.Name, strings.Join(proxmoxReservedNames, ", "))
	}
	e = append(e, netErrs...)

	if len(c.Pools) == 0 {
		e.add("nodes", "required: at least one pool with role %s", RoleControlPlane)
	} else if !slices.ContainsFunc(nodes, func(n expanded) bool { return n.Role == RoleControlPlane }) {
		e.add("nodes", "no %s node: at least one pool needs role %s and a count of 1 or more", RoleControlPlane, RoleControlPlane)
	}
	if pod, err := netip.ParsePrefix(c.Network.PodCIDR); err == nil && pod.Bits() <= podCIDRPerNode {
		if room := 1 << min(podCIDRPerNode-pod.Bits(), 30); len(nodes) > room {
			e.add("network.podCIDR", "%s holds %d per-node /%d networks, too few for %d nodes", pod, room, podCIDRPerNode, len(nodes))
		}
	}
	checkVersions(&e, c.Versions)
	checkNodePrep(&e, c.NodePrep)
	checkEtcd(&e, c.Etcd)
	return e.join(c)
}

// calendarExpr is what an OnCalendar value may hold; systemd decides the
// rest when the timer is installed.
var calendarExpr = regexp.MustCompile(`^[0-9A-Za-z*,./:~ +-]+$`)

func checkEtcd(e *fieldErrs, c Etcd) {
	s := c.Snapshots
	if s == nil {
		return
	}
	if len(s.Schedule) > 200 || !calendarExpr.MatchString(s.Schedule) {
		e.add("etcd.snapshots.schedule", "%q is not a systemd calendar event (e.g. hourly, daily, \"*-*-* 00/6:00:00\")", s.Schedule)
	}
	if s.Keep < 1 || s.Keep > 10000 {
		e.add("etcd.snapshots.keep", "%d is out of range 1 to 10000", s.Keep)
	}
	if !filepath.IsAbs(s.Dir) || filepath.Clean(s.Dir) != s.Dir || s.Dir == "/" || strings.ContainsAny(s.Dir, " \t\n\"'\\%") {
		e.add("etcd.snapshots.dir", "%q is not an absolute, clean directory without blanks, quotes or %%", s.Dir)
	}
}

func checkNodePrep(e *fieldErrs, n NodePrep) {
	seen := map[string]bool{}
	for i, r := range n.Repositories {
		path := fmt.Sprintf("nodePrep.repositories[%d]", i)
		switch {
		case r.Name == "":
			e.add(path+".name", "required")
		case seen[r.Name]:
			e.add(path+".name", "repository %q overridden twice", r.Name)
		}
		seen[r.Name] = true
		if r.URI != "" && !isHTTPURL(r.URI) && !strings.HasPrefix(r.URI, "file:/") {
			e.add(path+".uri", "%q is not an http(s) or file: URI", r.URI)
		}
		if r.URI == "" && r.KeyFile == "" && r.Suite == "" && len(r.Components) == 0 {
			e.add(path, "overrides nothing: give uri, suite, components or keyFile")
		}
	}
	for i, m := range n.RegistryMirrors {
		path := fmt.Sprintf("nodePrep.registryMirrors[%d]", i)
		if m.Registry == "" || strings.ContainsAny(m.Registry, "/ ") {
			e.add(path+".registry", "%q is not a registry host (e.g. docker.io)", m.Registry)
		}
		if len(m.Endpoints) == 0 {
			e.add(path+".endpoints", "required: at least one mirror URL")
		}
		for j, ep := range m.Endpoints {
			if !isHTTPURL(ep) {
				e.add(fmt.Sprintf("%s.endpoints[%d]", path, j), "%q is not an http(s) URL", ep)
			}
		}
	}
}

func isHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// podCIDRPerNode is the prefix length of each node's share of the pod
// network (kube-controller-manager's --node-cidr-mask-size for IPv4).
const podCIDRPerNode = 24

// checkNetwork checks the network section and returns what node expansion
// needs of it.
func checkNetwork(e *fieldErrs, n Network) netPlan {
	cidr := func(path, s string) (netip.Prefix, bool) {
		if s == "" {
			e.add(path, "required")
			return netip.Prefix{}, false
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			e.add(path, "%q is not a CIDR prefix like 10.200.0.0/24", s)
			return netip.Prefix{}, false
		}
		if !p.Addr().Is4() {
			e.add(path, "%s is not IPv4; only IPv4 networks are supported", p)
			return netip.Prefix{}, false
		}
		if p != p.Masked() {
			e.add(path, "%s has host bits set; did you mean %s?", p, p.Masked())
			return netip.Prefix{}, false
		}
		return p, true
	}
	var plan netPlan
	node, nodeOK := cidr("network.nodeCIDR", n.NodeCIDR)
	if nodeOK && node.Bits() > 30 {
		e.add("network.nodeCIDR", "%s is too small for nodes; use /30 or larger", node)
		nodeOK = false
	}
	if nodeOK {
		plan.node = node
	}
	pod, podOK := cidr("network.podCIDR", n.PodCIDR)
	if podOK && pod.Bits() > podCIDRPerNode {
		e.add("network.podCIDR", "%s is smaller than one node's /%d; use /%d or larger", pod, podCIDRPerNode, podCIDRPerNode)
	}
	svc, svcOK := cidr("network.serviceCIDR", n.ServiceCIDR)
	if svcOK && svc.Bits() < 12 {
		e.add("network.serviceCIDR", "%s is larger than kube-apiserver's limit of a /12", svc)
	}
	if nodeOK && podOK && node.Overlaps(pod) {
		e.add("network.podCIDR", "%s overlaps network.nodeCIDR %s", pod, node)
	}
	if nodeOK && svcOK && node.Overlaps(svc) {
		e.add("network.serviceCIDR", "%s overlaps network.nodeCIDR %s", svc, node)
	}
	if podOK && svcOK && pod.Overlaps(svc) {
		e.add("network.serviceCIDR", "%s overlaps network.podCIDR %s", svc, pod)
	}

	switch gw, err := netip.ParseAddr(n.Gateway); {
	case n.Gateway == "":
		e.add("network.gateway", "required")
	case err != nil || gw.Zone() != "":
		e.add("network.gateway", "%q is not an IP address", n.Gateway)
	case !gw.Is4():
		e.add("network.gateway", "%s is not IPv4", gw)
	case !nodeOK:
		plan.gateway = gw // cannot check the range; reported on nodeCIDR
	case !node.Contains(gw):
		e.add("network.gateway", "%s is outside network.nodeCIDR %s", gw, node)
	case gw == node.Addr():
		e.add("network.gateway", "%s is the network address of %s", gw, node)
	case gw == lastAddr(node):
		e.add("network.gateway", "%s is the broadcast address of %s", gw, node)
	default:
		plan.gateway = gw
	}

	switch {
	case n.DNSDomain == "":
		e.add("network.dnsDomain", "required")
	case !isDNSName(n.DNSDomain):
		e.add("network.dnsDomain", "%q is not a DNS name like cluster.local", n.DNSDomain)
	}
	return plan
}

func checkProvider(e *fieldErrs, p Provider, nodes []expanded, plan netPlan) {
	if !slices.Contains(ProviderTypes(), p.Type) {
		if p.Type == "" {
			e.add("provider.type", "required: local, static or proxmox")
		} else {
			e.add("provider.type", "unknown provider type %q: want local, static or proxmox", p.Type)
		}
	}
	sections := []struct {
		t   ProviderType
		set bool
	}{{ProviderLocal, p.Local != nil}, {ProviderStatic, p.Static != nil}, {ProviderProxmox, p.Proxmox != nil}}
	for _, s := range sections {
		if s.set && s.t != p.Type {
			e.add("provider."+string(s.t), "is set, but provider.type is %q", p.Type)
		}
	}
	switch p.Type {
	case ProviderLocal:
		checkLocal(e, p.Local)
	case ProviderStatic:
		checkStatic(e, p.Static, nodes, plan)
	case ProviderProxmox:
		checkProxmox(e, p.Proxmox)
	}
}

func checkLocal(e *fieldErrs, l *LocalProvider) {
	if l == nil {
		l = &LocalProvider{}
	}
	switch b := l.Bridge; {
	case b == "":
		e.add("provider.local.bridge", "required")
	case len(b) > 15 || b == "." || b == ".." || strings.ContainsAny(b, "/: \t\n"):
		e.add("provider.local.bridge", "%q is not a Linux interface name (at most 15 characters, no '/', ':' or spaces)", b)
	}
	switch d := l.LabDir; {
	case d == "":
		e.add("provider.local.labDir", "required")
	case !filepath.IsAbs(d):
		e.add("provider.local.labDir", "%q is not an absolute path", d)
	}
	if d := l.ImageDir; d != "" && !filepath.IsAbs(d) {
		e.add("provider.local.imageDir", "%q is not an absolute path", d)
	}
	if p := l.ProxyPort; p != 0 && (p < 1024 || p > 32767) {
		e.add("provider.local.proxyPort", "%d is outside 1024-32767", p)
	}
}

func checkStatic(e *fieldErrs, s *StaticProvider, nodes []expanded, plan netPlan) {
	if s == nil || len(s.Hosts) == 0 {
		e.add("provider.static.hosts", "required: one host per node")
		return
	}
	byName := map[string]expanded{}
	for _, n := range nodes {
		byName[n.Name] = n
	}
	seen := map[string]string{}
	for i, h := range s.Hosts {
		path := "provider.static.hosts[" + strconv.Itoa(i) + "]"
		switch node, ok := byName[h.Name]; {
		case h.Name == "":
			e.add(path+".name", "required: the node this host plays")
		case !ok:
			e.add(path+".name", "no node named %q; static hosts must match the nodes one to one", h.Name)
		default:
			if prev, dup := seen[h.Name]; dup {
				e.add(path+".name", "duplicate host for node %q (also %s)", h.Name, prev)
			}
			seen[h.Name] = path
			// An address on the node network is the node's own address.
			if a, err := netip.ParseAddr(h.Address); err == nil && plan.node.IsValid() && plan.node.Contains(a) &&
				node.Address.IsValid() && node.Address.Addr() != a {
				e.add(path+".address", "%s is in network.nodeCIDR but node %s has address %s; pin it with the pool's addresses", a, h.Name, node.Address.Addr())
			}
		}
		switch {
		case h.Address == "":
			e.add(path+".address", "required: an IP address or host name")
		case !isHost(h.Address):
			e.add(path+".address", "%q is not an IP address or host name", h.Address)
		}
		if h.Port < 1 || h.Port > 65535 {
			e.add(path+".port", "%d is not a TCP port", h.Port)
		}
		if h.User == "" {
			e.add(path+".user", "required")
		}
		if h.Jump != "" && !isJump(h.Jump) {
			e.add(path+".jump", "%q is not [user@]host[:port]", h.Jump)
		}
	}
	for _, n := range nodes {
		if _, ok := seen[n.Name]; !ok {
			e.add("provider.static.hosts", "no host for node %s", n.Name)
		}
	}
}

var (
	tokenIDPattern = regexp.MustCompile(`^[^@!\s]+@[^@!\s]+![A-Za-z][A-Za-z0-9._-]*$`)
	userIDPattern  = regexp.MustCompile(`^[^@!\s]+@[^@!\s]+$`)
	envNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// proxmoxIDPattern is pve-common's configid format (storage, pool).
	proxmoxIDPattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9\-_.]*[A-Za-z0-9]$`)
	unixUserPattern  = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	uuidPattern      = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
)

func checkProxmox(e *fieldErrs, p *ProxmoxProvider) {
	if p == nil {
		// Only what has no default is missing.
		p = &ProxmoxProvider{}
		p.setDefaults()
	}
	const pp = "provider.proxmox."
	if p.Endpoint == "" {
		e.add(pp+"endpoint", "required: the API URL, like https://pve.example:8006")
	} else if u, err := url.Parse(p.Endpoint); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		e.add(pp+"endpoint", "%q is not an http(s) URL like https://pve.example:8006", p.Endpoint)
	}
	switch {
	case p.Node == "":
		e.add(pp+"node", "required: the Proxmox node to create VMs on")
	case !isDNSLabel(strings.ToLower(p.Node)):
		e.add(pp+"node", "%q is not a Proxmox node name (the short name pvecm nodes shows, not an FQDN)", p.Node)
	}
	if p.Username != "" || p.PasswordRef != "" {
		// Password login.
		if p.TokenID != "" {
			e.add(pp+"tokenID", "exclusive with username: log in with a token or a password, not both")
		}
		if p.TokenSecretRef != "" {
			e.add(pp+"tokenSecretRef", "exclusive with username: log in with a token or a password, not both")
		}
		switch {
		case p.Username == "":
			e.add(pp+"username", "required with passwordRef: USER@REALM")
		case !userIDPattern.MatchString(p.Username):
			e.add(pp+"username", "%q is not USER@REALM", p.Username)
		}
		if p.PasswordRef == "" {
			e.add(pp+"passwordRef", "required with username: env:NAME or sops:FILE#KEY")
		} else if msg := checkSecretRef(p.PasswordRef); msg != "" {
			e.add(pp+"passwordRef", "%s", msg)
		}
	} else {
		switch {
		case p.TokenID == "":
			e.add(pp+"tokenID", "required: USER@REALM!TOKENNAME (or log in with username and passwordRef)")
		case !tokenIDPattern.MatchString(p.TokenID):
			e.add(pp+"tokenID", "%q is not USER@REALM!TOKENNAME", p.TokenID)
		}
		if p.TokenSecretRef == "" {
			e.add(pp+"tokenSecretRef", "required: env:NAME or sops:FILE#KEY")
		} else if msg := checkSecretRef(p.TokenSecretRef); msg != "" {
			e.add(pp+"tokenSecretRef", "%s", msg)
		}
	}
	if p.InsecureSkipVerify && p.CAFile != "" {
		e.add(pp+"caFile", "exclusive with insecureSkipVerify")
	}
	if p.Template != "" && !isDNSName(strings.ToLower(p.Template)) {
		e.add(pp+"template", "%q is not a Proxmox VM name (letters, digits, '-' and '.')", p.Template)
	}
	switch p.CloneMode {
	case CloneFull, CloneLinked:
	case "":
		e.add(pp+"cloneMode", "required: full or linked")
	default:
		e.add(pp+"cloneMode", "unknown clone mode %q: want full or linked", p.CloneMode)
	}
	if p.Storage != "" && !proxmoxIDPattern.MatchString(p.Storage) {
		e.add(pp+"storage", "%q is not a Proxmox storage ID", p.Storage)
	}
	if p.Pool != "" && !proxmoxIDPattern.MatchString(p.Pool) {
		e.add(pp+"pool", "%q is not a Proxmox pool ID", p.Pool)
	}
	switch b := p.Bridge; {
	case b == "":
		e.add(pp+"bridge", "required")
	case len(b) > 15 || strings.ContainsAny(b, "/: \t\n"):
		e.add(pp+"bridge", "%q is not a Linux bridge name", b)
	}
	switch {
	case p.User == "":
		e.add(pp+"user", "required")
	case !unixUserPattern.MatchString(p.User):
		e.add(pp+"user", "%q is not a user name (lowercase letters, digits, '_' and '-')", p.User)
	}
	for i, ns := range p.Nameservers {
		if a, err := netip.ParseAddr(ns); err != nil || a.Zone() != "" {
			e.add(fmt.Sprintf("%snameservers[%d]", pp, i), "%q is not an IP address", ns)
		}
	}
	if p.SearchDomain != "" && !isDNSName(p.SearchDomain) {
		e.add(pp+"searchDomain", "%q is not a DNS name", p.SearchDomain)
	}
	if p.CloneConcurrency < 1 || p.CloneConcurrency > 32 {
		e.add(pp+"cloneConcurrency", "must be 1 to 32, got %d", p.CloneConcurrency)
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"requestTimeout", p.RequestTimeout}, {"taskTimeout", p.TaskTimeout}, {"bootTimeout", p.BootTimeout}} {
		if d.v < time.Second {
			e.add(pp+d.field, "must be at least 1s, got %s", d.v)
		}
	}
}

// proxmoxReservedNames are cluster names the proxmox provider cannot tell
// from its own VM tags (kthw;<cluster>;<role>).
var proxmoxReservedNames = []string{"kthw", string(RoleControlPlane), string(RoleWorker)}

// checkSecretRef returns what is wrong with a secret reference, or "".
// The message never repeats the value, which may be a secret.
func checkSecretRef(ref string) string {
	scheme, rest, _ := strings.Cut(ref, ":")
	switch scheme {
	case "env":
		if envNamePattern.MatchString(rest) {
			return ""
		}
		return "env: needs an environment variable name, like env:PM_TOKEN"
	case "sops":
		file, key, ok := strings.Cut(rest, "#")
		if ok && file != "" && key != "" {
			return ""
		}
		return "sops: needs a file and a key, like sops:secrets.yaml#proxmox_token"
	}
	if uuidPattern.MatchString(ref) {
		return "looks like the token secret itself; never put secrets in the cluster file, refer to one with env:NAME or sops:FILE#KEY"
	}
	return "not a secret reference: want env:NAME or sops:FILE#KEY"
}

var (
	componentPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	versionPattern   = regexp.MustCompile(`^v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*|x))?` +
		`(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$`)
)

func checkVersions(e *fieldErrs, versions map[string]string) {
	keys := make([]string, 0, len(versions))
	for k := range versions {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		path := "versions." + k
		if !componentPattern.MatchString(k) {
			e.add(path, "%q is not a component name (lowercase letters, digits and '-')", k)
		}
		if v := versions[k]; !versionPattern.MatchString(v) {
			e.add(path, "%q is not a version like v1.31.2, 1.31.2 or 1.31.x", v)
		}
	}
}

var dnsLabelPattern = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// isDNSLabel reports whether s is an RFC 1123 label: lowercase letters,
// digits and '-', starting and ending with a letter or digit, at most 63.
func isDNSLabel(s string) bool {
	return len(s) <= 63 && dnsLabelPattern.MatchString(s)
}

// isDNSName reports whether s is dot-separated DNS labels, at most 253.
func isDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for l := range strings.SplitSeq(s, ".") {
		if !isDNSLabel(l) {
			return false
		}
	}
	return true
}

// isHost reports whether s is an IP address or a host name.
func isHost(s string) bool {
	if _, err := netip.ParseAddr(s); err == nil {
		return true
	}
	return isDNSName(strings.ToLower(s))
}

// isJump reports whether s is [user@]host[:port].
func isJump(s string) bool {
	if at := strings.LastIndexByte(s, '@'); at >= 0 {
		if at == 0 {
			return false
		}
		s = s[at+1:]
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return isHost(strings.Trim(s, "[]"))
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 1 && n <= 65535 && isHost(host)
}
