package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// mountOverlay mounts an overlay of lower (read-only; several directories separated by ':',
// topmost first) and upper/work at target.
func mountOverlay(lower, upper, work, target string) error {
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)
	if err := unix.Mount("overlay", target, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay on %s: %w", target, err)
	}
	return nil
}

// ensureSharedMount makes dir a mount point with shared propagation (a bind mount onto itself
// when it is not a mount point yet).
//
// Why: a new mount namespace starts as a copy of all mounts. Each systemd-nspawn container
// thus holds copies of the overlays of the nodes already running, hidden outside its root,
// which keep their superblocks alive: a node stopped and started again would get a second
// overlay on an upper dir that is still in use. Below a shared mount, the copies are slaves
// (systemd-nspawn makes its namespace a slave) and our unmount propagates to them. On hosts
// whose / is shared (systemd as PID 1) this is the case already.
func ensureSharedMount(dir string) error {
	mounted, err := isMountPoint(dir)
	if err != nil {
		return err
	}
	if !mounted {
		if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind mount %s: %w", dir, err)
		}
	}
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", dir, err)
	}
	return nil
}

// waitSuperblockGone waits until no file system with device number dev exists in any mount
// namespace: ustat(2) looks superblocks up globally, and blocks while one is being shut down.
// Where ustat is not implemented (arm64), it waits a fixed short time instead.
func waitSuperblockGone(ctx context.Context, dev uint64, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		var u unix.Ustat_t
		err := unix.Ustat(int(dev), &u)
		switch {
		case errors.Is(err, unix.ENOSYS):
			time.Sleep(500 * time.Millisecond)
			return true
		case err != nil:
			return true // EINVAL: no such file system
		case time.Now().After(deadline) || ctx.Err() != nil:
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// unmountAll unmounts everything at or below dir, deepest first; busy mounts are detached.
func unmountAll(dir string) error {
	for range 3 {
		mps, err := MountsUnder(dir)
		if err != nil || len(mps) == 0 {
			return err
		}
		for _, mp := range mps {
			err := unix.Unmount(mp, 0)
			for i := 0; errors.Is(err, unix.EBUSY) && i < 20; i++ {
				time.Sleep(50 * time.Millisecond)
				err = unix.Unmount(mp, 0)
			}
			if errors.Is(err, unix.EBUSY) {
				// Still busy after a second: detach it now, it goes when no longer used.
				err = unix.Unmount(mp, unix.MNT_DETACH)
			}
			if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("unmount %s: %w", mp, err)
			}
		}
	}
	if mps, err := MountsUnder(dir); err != nil || len(mps) > 0 {
		return errors.Join(err, fmt.Errorf("unmount under %s: still mounted: %s", dir, strings.Join(mps, ", ")))
	}
	return nil
}

// removeTree unmounts whatever is mounted below dir, then removes it. It refuses to remove
// anything while a mount is left (os.RemoveAll would descend into it).
func removeTree(dir string) error {
	if err := unmountAll(dir); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}

// MountsUnder lists this mount namespace's mount points at or below dir, deepest first.
func MountsUnder(dir string) ([]string, error) {
	all, err := mountPoints()
	if err != nil {
		return nil, err
	}
	dir = filepath.Clean(dir)
	var out []string
	for _, m := range all {
		if m.Point == dir || strings.HasPrefix(m.Point, dir+"/") {
			out = append(out, m.Point)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, nil
}

// mountDev returns the device number of the file system mounted (last) at p, 0 when p is not
// a mount point. For an overlay this is the overlay's own device, which stat(2) may not show.
func mountDev(p string) (uint64, error) {
	all, err := mountPoints()
	if err != nil {
		return 0, err
	}
	p = filepath.Clean(p)
	var dev uint64
	for _, m := range all {
		if m.Point == p {
			dev = m.Dev
		}
	}
	return dev, nil
}

// isMountPoint reports whether p is a mount point in this mount namespace.
func isMountPoint(p string) (bool, error) {
	all, err := mountPoints()
	if err != nil {
		return false, err
	}
	p = filepath.Clean(p)
	return slices.ContainsFunc(all, func(m mountEntry) bool { return m.Point == p }), nil
}

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	Dev   uint64 // unix.Mkdev(major, minor)
	Point string
}

// mountPoints reads /proc/self/mountinfo.
func mountPoints() ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	return parseMountInfo(f)
}

func parseMountInfo(f io.Reader) ([]mountEntry, error) {
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		var dev uint64
		if maj, min, ok := strings.Cut(fields[2], ":"); ok {
			a, err1 := strconv.ParseUint(maj, 10, 32)
			b, err2 := strconv.ParseUint(min, 10, 32)
			if err1 == nil && err2 == nil {
				dev = unix.Mkdev(uint32(a), uint32(b))
			}
		}
		out = append(out, mountEntry{Dev: dev, Point: unescapeMountPath(fields[4])})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	return out, nil
}

// unescapeMountPath decodes mountinfo's octal escapes (\040 for a space, ...).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
