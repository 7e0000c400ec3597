package pvesim

import (
	"crypto/rand"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// prop is one element of a Proxmox property string ("key=value", or a
// bare value for the format's default key, stored with key "").
type prop struct{ k, v string }

type props []prop

// parseProps splits "a,b=c,d=e" into its elements.
func parseProps(s string) props {
	var out props
	if s == "" {
		return out
	}
	for _, part := range strings.Split(s, ",") {
		if k, v, ok := strings.Cut(part, "="); ok {
			out = append(out, prop{k, v})
		} else {
			out = append(out, prop{"", part})
		}
	}
	return out
}

func (p props) get(k string) (string, bool) {
	for _, e := range p {
		if e.k == k {
			return e.v, true
		}
	}
	return "", false
}

func (p *props) set(k, v string) {
	for i := range *p {
		if (*p)[i].k == k {
			(*p)[i].v = v
			return
		}
	}
	*p = append(*p, prop{k, v})
}

func (p *props) del(k string) {
	*p = slices.DeleteFunc(*p, func(e prop) bool { return e.k == k })
}

// String prints the default key first and the others sorted by key, as
// PVE::JSONSchema::print_property_string does.
func (p props) String() string {
	var head []string
	rest := slices.Clone(p)
	rest = slices.DeleteFunc(rest, func(e prop) bool {
		if e.k == "" {
			head = append(head, e.v)
			return true
		}
		return false
	})
	slices.SortStableFunc(rest, func(a, b prop) int { return strings.Compare(a.k, b.k) })
	parts := head
	for _, e := range rest {
		parts = append(parts, e.k+"="+e.v)
	}
	return strings.Join(parts, ",")
}

// drive is a parsed disk option (scsi0, ide2, ...): the volume and its
// options.
type drive struct {
	file string
	opts props // without the file
}

var driveKeyRE = regexp.MustCompile(`^(ide[0-3]|sata[0-5]|scsi([0-9]|[12][0-9]|30)|virtio([0-9]|1[0-5])|efidisk0|tpmstate0)$`)

func isDriveKey(k string) bool { return driveKeyRE.MatchString(k) }

func parseDrive(s string) drive {
	p := parseProps(s)
	d := drive{}
	for _, e := range p {
		switch e.k {
		case "", "file", "volume":
			if d.file == "" {
				d.file = e.v
			}
		default:
			d.opts = append(d.opts, e)
		}
	}
	return d
}

func (d drive) String() string {
	p := append(props{{"", d.file}}, d.opts...)
	return p.String()
}

func (d drive) media() string {
	m, _ := d.opts.get("media")
	return m
}

// isCloudInitDrive reports whether a drive value is a cloud-init drive
// ("local-lvm:vm-100-cloudinit,media=cdrom").
func isCloudInitDrive(v string) bool {
	d := parseDrive(v)
	_, volname, ok := strings.Cut(d.file, ":")
	if !ok {
		return false
	}
	base := volname[strings.LastIndex(volname, "/")+1:]
	return regexp.MustCompile(`^vm-\d+-cloudinit(\.(qcow2|raw))?$`).MatchString(base) || volname == "cloudinit"
}

// isCDROM reports whether a drive is a CD-ROM that is not a cloud-init
// drive (nothing to clone or resize).
func isCDROM(v string) bool {
	d := parseDrive(v)
	if isCloudInitDrive(v) {
		return false
	}
	return d.media() == "cdrom" || d.file == "none" || d.file == "cdrom"
}

// net is a parsed netN option.
type netDev struct {
	model, mac string
	opts       props
}

var netModels = []string{"e1000", "e1000-82540em", "e1000-82544gc", "e1000-82545em", "e1000e", "i82551", "i82557b", "i82559er", "ne2k_isa", "ne2k_pci", "pcnet", "rtl8139", "virtio", "vmxnet3"}

var macRE = regexp.MustCompile(`^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$`)

func parseNet(s string) (netDev, bool) {
	n := netDev{}
	for _, e := range parseProps(s) {
		switch {
		case e.k == "" && slices.Contains(netModels, e.v):
			n.model = e.v
		case slices.Contains(netModels, e.k):
			n.model, n.mac = e.k, e.v
		case e.k == "model":
			n.model = e.v
		case e.k == "macaddr":
			n.mac = e.v
		case e.k == "":
			return n, false
		default:
			n.opts = append(n.opts, e)
		}
	}
	return n, n.model != ""
}

func (n netDev) String() string {
	head := n.model
	if n.mac != "" {
		head += "=" + n.mac
	}
	return append(props{{"", head}}, n.opts...).String()
}

// randomMAC returns a MAC with the given prefix ("BC:24:11"), upper case,
// unicast and locally unique enough.
func randomMAC(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	parts := strings.Split(prefix, ":")
	out := make([]string, 6)
	for i := range out {
		if i < len(parts) && parts[i] != "" {
			out[i] = strings.ToUpper(parts[i])
		} else {
			out[i] = fmt.Sprintf("%02X", b[i])
		}
	}
	if v, err := strconv.ParseUint(out[0], 16, 8); err == nil && v&1 == 1 {
		out[0] = fmt.Sprintf("%02X", v&^1)
	}
	return strings.Join(out, ":")
}

// randomUUID returns a random (version 4) UUID in lower case.
func randomUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// formatSize prints bytes like PVE::JSONSchema::format_size: the largest
// unit that divides evenly.
func formatSize(n int64) string {
	if n%1024 != 0 {
		return strconv.FormatInt(n, 10)
	}
	kb := n / 1024
	if kb%1024 != 0 {
		return fmt.Sprintf("%dK", kb)
	}
	mb := kb / 1024
	if mb%1024 != 0 {
		return fmt.Sprintf("%dM", mb)
	}
	gb := mb / 1024
	if gb%1024 != 0 {
		return fmt.Sprintf("%dG", gb)
	}
	return fmt.Sprintf("%dT", gb/1024)
}

var sizeRE = regexp.MustCompile(`^(\d+(?:\.\d+)?)([KMGT]?)$`)

// parseSize parses "40G", "512M", "1.5T" or plain bytes.
func parseSize(s string) (int64, bool) {
	m := sizeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, false
	}
	f, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, false
	}
	mult := map[string]float64{"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m[2]]
	return int64(f * mult), true
}

// splitList splits a Proxmox list ("a;b c,d").
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool {
		return r == ',' || r == ';' || r == ' ' || r == '\t' || r == '\n' || r == 0
	})
}

// uniqueTags normalizes tags as PVE::GuestHelpers::get_unique_tags does
// with the default tag style: lower case, sorted, without duplicates,
// joined with ";".
func uniqueTags(s string) string {
	tags := splitList(s)
	for i := range tags {
		tags[i] = strings.ToLower(tags[i])
	}
	slices.Sort(tags)
	return strings.Join(slices.Compact(tags), ";")
}
