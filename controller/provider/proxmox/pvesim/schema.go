package pvesim

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
)

// ptype is a JSON schema type of the Proxmox API.
type ptype int

const (
	tString ptype = iota
	tInt
	tBool
	tNumber
)

func (t ptype) String() string {
	return [...]string{"string", "integer", "boolean", "number"}[t]
}

// pspec is the part of a Proxmox parameter schema the simulator checks.
type pspec struct {
	typ      ptype
	optional bool
	min, max *float64
	maxLen   int
	enum     []string
	pattern  *regexp.Regexp
	// format returns the reason a value is malformed ("" if fine).
	format func(string) string
}

func bound(f float64) *float64 { return &f }

func optional(p pspec) pspec {
	p.optional = true
	return p
}

var (
	intRE = regexp.MustCompile(`^[+-]?\d+$`)
	numRE = regexp.MustCompile(`^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$`)
)

// check returns the error text for one value, as PVE::JSONSchema would put
// it in the errors map, or "".
func (p pspec) check(v string) string {
	switch p.typ {
	case tBool:
		if v != "1" && v != "0" {
			return fmt.Sprintf("type check ('boolean') failed - got '%s'", v)
		}
	case tInt:
		if !intRE.MatchString(v) {
			return fmt.Sprintf("type check ('integer') failed - got '%s'", v)
		}
	case tNumber:
		if !numRE.MatchString(v) {
			return fmt.Sprintf("type check ('number') failed - got '%s'", v)
		}
	}
	if p.format != nil {
		if msg := p.format(v); msg != "" {
			return "invalid format - " + msg
		}
	}
	if p.pattern != nil && !p.pattern.MatchString(v) {
		return "value does not match the regex pattern"
	}
	if p.maxLen > 0 && len(v) > p.maxLen {
		return fmt.Sprintf("value may only be %d characters long", p.maxLen)
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil && numRE.MatchString(v) {
		if p.max != nil && f > *p.max {
			return fmt.Sprintf("value must have a maximum value of %s", strconv.FormatFloat(*p.max, 'f', -1, 64))
		}
		if p.min != nil && f < *p.min {
			return fmt.Sprintf("value must have a minimum value of %s", strconv.FormatFloat(*p.min, 'f', -1, 64))
		}
	}
	if len(p.enum) > 0 && !slices.Contains(p.enum, v) {
		return fmt.Sprintf("value '%s' does not have a value in the enumeration '%s'", v, strings.Join(p.enum, ", "))
	}
	return ""
}

// pathParams are the URI parameters of the endpoints.
var pathParams = map[string]bool{"node": true, "vmid": true, "storage": true, "upid": true, "volume": true}

const notInSchema = "property is not defined in schema and the schema does not allow additional properties"

// validate checks params against specs (plus the standard node/vmid which
// the router checked) and returns a 400 with every error at once.
func validate(params map[string]string, specs map[string]pspec) error {
	errs := map[string]string{}
	for k, v := range params {
		if k == "node" {
			continue
		}
		spec, ok := specs[k]
		if !ok {
			if pathParams[k] {
				continue // checked by the router
			}
			errs[k] = notInSchema
			continue
		}
		if msg := spec.check(v); msg != "" {
			errs[k] = msg
		}
	}
	for k, spec := range specs {
		if _, ok := params[k]; !ok && !spec.optional {
			errs[k] = "property is missing and it is not optional"
		}
	}
	if len(errs) > 0 {
		return paramErr(errs)
	}
	return nil
}

// checkVMID checks a pve-vmid value.
func checkVMID(v string) string {
	if !intRE.MatchString(v) {
		return fmt.Sprintf("type check ('integer') failed - got '%s'", v)
	}
	if !regexp.MustCompile(`^[1-9][0-9]+$`).MatchString(v) {
		return "invalid format - value does not look like a valid VM ID\n"
	}
	n, err := strconv.Atoi(v)
	if err != nil || n > 999999999 {
		return "value must have a maximum value of 999999999"
	}
	if n < 100 {
		return "value must have a minimum value of 100"
	}
	return ""
}

var vmidSpec = pspec{typ: tInt, format: func(v string) string {
	if msg := checkVMID(v); strings.HasPrefix(msg, "invalid format - ") {
		return strings.TrimPrefix(msg, "invalid format - ")
	}
	return ""
}, min: bound(100), max: bound(999999999)}

var dnsNameRE = regexp.MustCompile(`^(([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)\.)*([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$`)

func fmtDNSName(v string) string {
	if !dnsNameRE.MatchString(v) {
		return "value does not look like a valid DNS name\n"
	}
	return ""
}

func fmtURLEncoded(v string) string {
	if !regexp.MustCompile(`^[-%a-zA-Z0-9_.!~*'()]*$`).MatchString(v) {
		return "invalid urlencoded string: " + v + "\n"
	}
	return ""
}

var tagRE = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9_\-+.]*$`)

func fmtTags(v string) string {
	for _, t := range splitList(v) {
		if !tagRE.MatchString(t) {
			return "invalid characters in tag\n"
		}
	}
	return ""
}

func fmtStorageID(v string) string {
	if !regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9\-_.]*[a-zA-Z0-9]$`).MatchString(v) {
		return "storage ID '" + v + "' contains illegal characters\n"
	}
	return ""
}

func fmtNodeName(v string) string {
	if !regexp.MustCompile(`^(?i:[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?)$`).MatchString(v) {
		return "value does not look like a valid node name\n"
	}
	return ""
}

func fmtMemory(v string) string {
	cur := v
	p := parseProps(v)
	if c, ok := p.get("current"); ok {
		cur = c
	} else if len(p) == 1 && p[0].k == "" {
		cur = p[0].v
	}
	n, err := strconv.Atoi(cur)
	if err != nil {
		return "format error\nmemory.current: type check ('integer') failed - got '" + cur + "'\n"
	}
	if n < 16 {
		return "format error\nmemory.current: value must have a minimum value of 16\n"
	}
	return ""
}

func fmtNet(key string) func(string) string {
	return func(v string) string {
		n, ok := parseNet(v)
		if !ok {
			return "format error\n" + key + ".model: property is missing and it is not optional\n"
		}
		if n.mac != "" && !macRE.MatchString(n.mac) {
			return "format error\n" + key + ".macaddr: invalid format - value does not look like a valid MAC address\n"
		}
		for _, e := range n.opts {
			switch e.k {
			case "bridge", "firewall", "link_down", "mtu", "queues", "rate", "tag", "trunks", "host_mtu":
			default:
				return "format error\n" + key + "." + e.k + ": property is not defined in schema and the schema does not allow additional properties\n"
			}
		}
		return ""
	}
}

func fmtIPConfig(key string) func(string) string {
	return func(v string) string {
		for _, e := range parseProps(v) {
			switch e.k {
			case "ip":
				if e.v == "dhcp" {
					continue
				}
				if p, err := netip.ParsePrefix(e.v); err != nil || !p.Addr().Is4() {
					return "format error\n" + key + ".ip: invalid format - value does not look like a valid IPv4 network configuration\n"
				}
			case "gw":
				if a, err := netip.ParseAddr(e.v); err != nil || !a.Is4() {
					return "format error\n" + key + ".gw: invalid format - value does not look like a valid IPv4 address\n"
				}
			case "ip6":
				if e.v == "dhcp" || e.v == "auto" {
					continue
				}
				if p, err := netip.ParsePrefix(e.v); err != nil || !p.Addr().Is6() {
					return "format error\n" + key + ".ip6: invalid format - value does not look like a valid IPv6 network configuration\n"
				}
			case "gw6":
				if a, err := netip.ParseAddr(e.v); err != nil || !a.Is6() {
					return "format error\n" + key + ".gw6: invalid format - value does not look like a valid IPv6 address\n"
				}
			case "":
				return "format error\n" + key + ": value without key, but schema does not define a default key\n"
			default:
				return "format error\n" + key + "." + e.k + ": property is not defined in schema and the schema does not allow additional properties\n"
			}
		}
		return ""
	}
}

func fmtDrive(key string) func(string) string {
	return func(v string) string {
		d := parseDrive(v)
		if d.file == "" {
			return "format error\n" + key + ".file: property is missing and it is not optional\n"
		}
		for _, e := range d.opts {
			if e.k == "size" {
				if _, ok := parseSize(e.v); !ok {
					return "format error\n" + key + ".size: invalid format - unable to parse size '" + e.v + "'\n"
				}
			}
		}
		return ""
	}
}

// configSpec returns the schema of a VM config key, and whether it exists.
func configSpec(k string) (pspec, bool) {
	if s, ok := configSchema[k]; ok {
		s.optional = true
		return s, true
	}
	switch {
	case isDriveKey(k):
		return pspec{typ: tString, optional: true, format: fmtDrive(k)}, true
	case regexp.MustCompile(`^net([0-9]|[12][0-9]|3[01])$`).MatchString(k):
		return pspec{typ: tString, optional: true, format: fmtNet(k)}, true
	case regexp.MustCompile(`^ipconfig([0-9]|[12][0-9]|3[01])$`).MatchString(k):
		return pspec{typ: tString, optional: true, format: fmtIPConfig(k)}, true
	case regexp.MustCompile(`^serial[0-3]$`).MatchString(k):
		return pspec{typ: tString, optional: true, pattern: regexp.MustCompile(`^(/dev/.+|socket)$`)}, true
	case regexp.MustCompile(`^(unused\d+|hostpci\d+|usb\d+|numa\d+|parallel[0-2]|virtiofs\d)$`).MatchString(k):
		return pspec{typ: tString, optional: true}, true
	}
	return pspec{}, false
}

// configSchema holds the typed VM config keys; drives, NICs and other
// indexed keys are matched in configSpec. The type decides the JSON type in
// GET .../config: integers and booleans are numbers, the rest strings.
var configSchema = map[string]pspec{
	"acpi":               {typ: tBool},
	"affinity":           {typ: tString},
	"agent":              {typ: tString},
	"arch":               {typ: tString, enum: []string{"x86_64", "aarch64"}},
	"args":               {typ: tString},
	"audio0":             {typ: tString},
	"autostart":          {typ: tBool},
	"balloon":            {typ: tInt, min: bound(0)},
	"bios":               {typ: tString, enum: []string{"seabios", "ovmf"}},
	"boot":               {typ: tString},
	"bootdisk":           {typ: tString},
	"cicustom":           {typ: tString},
	"cipassword":         {typ: tString},
	"citype":             {typ: tString, enum: []string{"configdrive2", "nocloud", "opennebula"}},
	"ciupgrade":          {typ: tBool},
	"ciuser":             {typ: tString},
	"cores":              {typ: tInt, min: bound(1)},
	"cpu":                {typ: tString},
	"cpulimit":           {typ: tNumber, min: bound(0), max: bound(128)},
	"cpuunits":           {typ: tInt, min: bound(1), max: bound(262144)},
	"description":        {typ: tString, maxLen: 8192},
	"freeze":             {typ: tBool},
	"hookscript":         {typ: tString},
	"hotplug":            {typ: tString},
	"hugepages":          {typ: tString, enum: []string{"any", "2", "1024"}},
	"keephugepages":      {typ: tBool},
	"keyboard":           {typ: tString},
	"kvm":                {typ: tBool},
	"localtime":          {typ: tBool},
	"lock":               {typ: tString, enum: []string{"backup", "clone", "create", "migrate", "rollback", "snapshot", "snapshot-delete", "suspending", "suspended"}},
	"machine":            {typ: tString},
	"memory":             {typ: tString, format: fmtMemory},
	"meta":               {typ: tString},
	"migrate_downtime":   {typ: tNumber, min: bound(0)},
	"migrate_speed":      {typ: tInt, min: bound(0)},
	"name":               {typ: tString, format: fmtDNSName},
	"nameserver":         {typ: tString},
	"numa":               {typ: tBool},
	"onboot":             {typ: tBool},
	"ostype":             {typ: tString, enum: []string{"other", "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11", "l24", "l26", "solaris"}},
	"protection":         {typ: tBool},
	"reboot":             {typ: tBool},
	"rng0":               {typ: tString},
	"scsihw":             {typ: tString, enum: []string{"lsi", "lsi53c810", "virtio-scsi-pci", "virtio-scsi-single", "megasas", "pvscsi"}},
	"searchdomain":       {typ: tString},
	"shares":             {typ: tInt, min: bound(0), max: bound(50000)},
	"smbios1":            {typ: tString, maxLen: 512},
	"smp":                {typ: tInt, min: bound(1)},
	"sockets":            {typ: tInt, min: bound(1)},
	"spice_enhancements": {typ: tString},
	"sshkeys":            {typ: tString, format: fmtURLEncoded},
	"startdate":          {typ: tString},
	"startup":            {typ: tString},
	"tablet":             {typ: tBool},
	"tags":               {typ: tString, format: fmtTags},
	"tdf":                {typ: tBool},
	"template":           {typ: tBool},
	"vcpus":              {typ: tInt, min: bound(1)},
	"vga":                {typ: tString},
	"vmgenid":            {typ: tString},
	"vmstatestorage":     {typ: tString},
	"watchdog":           {typ: tString},
}

// cloudInitKeys are the options Proxmox applies to a running VM's config
// right away (they only take effect on the next cloud-init run).
var cloudInitKeys = map[string]bool{
	"cicustom": true, "cipassword": true, "citype": true, "ciupgrade": true, "ciuser": true,
	"nameserver": true, "searchdomain": true, "sshkeys": true,
}

// fastPlug are the options a running VM takes without a restart
// (qemu-server's $fast_plug_option).
func fastPlug(k string) bool {
	switch k {
	case "description", "hookscript", "lock", "migrate_downtime", "migrate_speed", "name", "onboot",
		"protection", "shares", "startup", "tags", "vmstatestorage":
		return true
	}
	return cloudInitKeys[k] || strings.HasPrefix(k, "ipconfig")
}

// jsonValue converts a config value to the JSON type Proxmox answers with.
func jsonValue(k, v string) any {
	spec, ok := configSpec(k)
	if !ok {
		return v
	}
	switch spec.typ {
	case tInt, tBool:
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return n
		}
	case tNumber:
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			return f
		}
	}
	return v
}

// validateSSHKeys checks URL-decoded keys the way validate_ssh_public_keys
// runs ssh-keygen -l on each line.
func validateSSHKeys(decoded string) bool {
	for _, line := range strings.Split(decoded, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line)); err != nil {
			return false
		}
	}
	return true
}
