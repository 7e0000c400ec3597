package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// mountOverlay mounts an overlay of lower (read-only) and upper/work at target.
func mountOverlay(lower, upper, work, target string) error {
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)
	if err := unix.Mount("overlay", target, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay on %s: %w", target, err)
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
	for _, mp := range all {
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, nil
}

// isMountPoint reports whether p is a mount point in this mount namespace.
func isMountPoint(p string) (bool, error) {
	all, err := mountPoints()
	if err != nil {
		return false, err
	}
	p = filepath.Clean(p)
	for _, mp := range all {
		if mp == p {
			return true, nil
		}
	}
	return false, nil
}

// mountPoints reads the mount points from /proc/self/mountinfo.
func mountPoints() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	return parseMountInfo(f)
}

func parseMountInfo(f io.Reader) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		out = append(out, unescapeMountPath(fields[4]))
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
