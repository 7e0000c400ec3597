package proxmox

import (
	"slices"
	"strings"

	"github.com/kthw/kthw/controller/config"
)

// TagKthw marks every VM kthw makes; the cluster's name and the node's role
// are the other two tags: kthw;<cluster>;<role>.
const TagKthw = "kthw"

// Tags are the tags of a node VM, in the order kthw writes them.
func Tags(cluster string, role config.Role) []string {
	return []string{TagKthw, cluster, string(role)}
}

// TagString renders tags as Proxmox stores them, ';'-separated.
func TagString(tags []string) string { return strings.Join(tags, ";") }

// ParseTags splits a Proxmox tag string. Proxmox stores tags ';'-separated
// but accepts ',', ';' and spaces on input and may reorder them; tags
// compare case-insensitively. The result is lowercase, sorted and without
// duplicates.
func ParseTags(s string) []string {
	f := strings.FieldsFunc(strings.ToLower(s), func(r rune) bool { return r == ';' || r == ',' || r == ' ' })
	slices.Sort(f)
	return slices.Compact(f)
}

// sameTags reports whether two tag strings hold the same set.
func sameTags(a, b string) bool { return slices.Equal(ParseTags(a), ParseTags(b)) }

// ClusterTagged reports whether a VM's tags mark it as cluster's.
func ClusterTagged(tags, cluster string) bool {
	t := ParseTags(tags)
	return slices.Contains(t, TagKthw) && slices.Contains(t, strings.ToLower(cluster))
}

// Marker is the first line of the description of a VM kthw made: it names
// the cluster, node and role. It is given at clone time already, before the
// tags are set, so that a clone whose run was killed is still recognized.
type Marker struct {
	Cluster string
	Node    string
	Role    config.Role
}

const markerPrefix = "kthw node "

// Description is the VM description holding the marker.
func (m Marker) Description() string {
	return markerPrefix + m.Node + " of cluster " + m.Cluster + " (" + string(m.Role) + ")\n" +
		"Made by kthw-controller, which finds this VM by its name and tags: do not rename or retag it."
}

// ParseMarker reads the marker from a VM description; ok is false when the
// description holds none.
func ParseMarker(desc string) (m Marker, ok bool) {
	line, _, _ := strings.Cut(strings.TrimSpace(desc), "\n")
	rest, found := strings.CutPrefix(strings.TrimSpace(line), markerPrefix)
	if !found {
		return Marker{}, false
	}
	f := strings.Fields(rest)
	// <node> of cluster <cluster> (<role>)
	if len(f) != 5 || f[1] != "of" || f[2] != "cluster" || !strings.HasPrefix(f[4], "(") || !strings.HasSuffix(f[4], ")") {
		return Marker{}, false
	}
	return Marker{Node: f[0], Cluster: f[3], Role: config.Role(strings.Trim(f[4], "()"))}, true
}
