package proxmox

import (
	"slices"
	"testing"

	"github.com/kthw/kthw/controller/config"
)

func TestTags(t *testing.T) {
	if got := TagString(Tags("lab", config.RoleWorker)); got != "kthw;lab;worker" {
		t.Fatalf("TagString = %q", got)
	}
	for in, want := range map[string][]string{
		"kthw;lab;worker":       {"kthw", "lab", "worker"},
		"worker;KTHW;lab":       {"kthw", "lab", "worker"},
		"kthw,lab worker;;kthw": {"kthw", "lab", "worker"},
		"":                      nil,
	} {
		if got := ParseTags(in); !slices.Equal(got, want) {
			t.Errorf("ParseTags(%q) = %v, want %v", in, got, want)
		}
	}
	for _, tt := range []struct {
		tags, cluster string
		want          bool
	}{
		{"kthw;lab;worker", "lab", true},
		{"control-plane;kthw;lab", "lab", true},
		{"kthw;lab2;worker", "lab", false},
		{"lab;worker", "lab", false},
		{"kthw-template;debian", "debian", false},
		{"", "lab", false},
	} {
		if got := ClusterTagged(tt.tags, tt.cluster); got != tt.want {
			t.Errorf("ClusterTagged(%q, %q) = %v, want %v", tt.tags, tt.cluster, got, tt.want)
		}
	}
}

func TestMarker(t *testing.T) {
	m := Marker{Cluster: "lab", Node: "worker-2", Role: config.RoleWorker}
	got, ok := ParseMarker(m.Description())
	if !ok || got != m {
		t.Fatalf("ParseMarker(Description()) = %+v, %v; want %+v", got, ok, m)
	}
	// Proxmox hands descriptions back with a trailing newline.
	if got, ok := ParseMarker(m.Description() + "\n"); !ok || got != m {
		t.Fatalf("with a newline: %+v, %v", got, ok)
	}
	for _, d := range []string{"", "qmclone temporary file\n", "kthw node cp-1", "kthw node cp-1 of cluster lab control-plane", "my notes\nkthw node cp-1 of cluster lab (worker)"} {
		if _, ok := ParseMarker(d); ok {
			t.Errorf("ParseMarker(%q) found a marker", d)
		}
	}
}
