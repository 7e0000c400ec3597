package lab

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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
	want := []mountEntry{
		{Dev: unix.Mkdev(254, 0), Point: "/"},
		{Dev: unix.Mkdev(0, 39), Point: "/var/lib/kthw/lab/nodes/a/root"},
		{Dev: unix.Mkdev(0, 40), Point: "/mnt/with space"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
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

// The overlay's own device, not the one stat(2) reports for its root, identifies its
// superblock: ustat finds a live file system by it and fails once it is gone.
func TestWaitSuperblockGone(t *testing.T) {
	dev, err := mountDev("/proc")
	if err != nil || dev == 0 {
		t.Fatalf("mountDev(/proc) = %d, %v", dev, err)
	}
	if dev2, _ := mountDev("/proc/no/such/mount"); dev2 != 0 {
		t.Fatalf("mountDev of a non-mount point = %d", dev2)
	}
	var u unix.Ustat_t
	if err := unix.Ustat(int(dev), &u); err == unix.ENOSYS {
		t.Skip("no ustat(2) on this architecture")
	}
	if waitSuperblockGone(t.Context(), dev, 100*time.Millisecond) {
		t.Error("/proc's file system reported gone")
	}
	if !waitSuperblockGone(t.Context(), unix.Mkdev(0, 1<<19-1), time.Second) {
		t.Error("an unused device number reported present")
	}
}

func TestIsMountPoint(t *testing.T) {
	for p, want := range map[string]bool{"/": true, "/proc": true, "/proc/": true, "/proc/self": false, "/no/such/dir": false} {
		if got, err := isMountPoint(p); err != nil || got != want {
			t.Errorf("isMountPoint(%s) = %t, %v; want %t", p, got, err, want)
		}
	}
}
