package lab

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseMountInfo(t *testing.T) {
	in := `22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
100 22 0:39 / /var/lib/kthw/lab/nodes/a/root rw,relatime shared:50 - overlay overlay rw,lowerdir=/x
101 22 0:40 / /mnt/with\040space rw - tmpfs tmpfs rw
short line
`
	got, err := parseMountInfo(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/", "/var/lib/kthw/lab/nodes/a/root", "/mnt/with space"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	for in, want := range map[string]string{`a\134b`: `a\b`, `tab\011x`: "tab\tx", `trailing\04`: `trailing\04`, `plain`: "plain"} {
		if got := unescapeMountPath(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

// MountsUnder must not match a sibling that merely shares a prefix.
func TestMountsUnderPrefix(t *testing.T) {
	mps, err := MountsUnder("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, mp := range mps {
		if mp != "/proc" && !strings.HasPrefix(mp, "/proc/") {
			t.Errorf("%s is not under /proc", mp)
		}
	}
	if len(mps) == 0 || mps[len(mps)-1] != "/proc" {
		t.Errorf("want /proc last (deepest first): %q", mps)
	}
}
