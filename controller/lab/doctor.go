package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// MinFreeDisk is the free space Doctor wants under the lab directory: an image is about
// 300 MB and every node writes its own changes.
const MinFreeDisk = 2 << 30

// Finding is one prerequisite check.
type Finding struct {
	// Check names what was checked.
	Check string
	OK    bool
	// Detail says what was found.
	Detail string
	// Fix says what to do when not OK (a package to install, ...).
	Fix string
}

func (f Finding) String() string {
	if f.OK {
		return fmt.Sprintf("ok    %s: %s", f.Check, f.Detail)
	}
	return fmt.Sprintf("FAIL  %s: %s; fix: %s", f.Check, f.Detail, f.Fix)
}

// Doctor checks what the lab needs on this machine, without changing anything. Every check is
// reported, passed or not; Problems filters the failures.
func (l *Lab) Doctor(ctx context.Context) []Finding {
	var out []Finding
	add := func(check string, ok bool, detail, fix string) {
		out = append(out, Finding{Check: check, OK: ok, Detail: detail, Fix: fix})
	}
	if uid := os.Geteuid(); uid == 0 {
		add("root", true, "running as root", "")
	} else {
		add("root", false, fmt.Sprintf("running as uid %d", uid), "run as root (mounts, network and containers need it)")
	}
	for _, p := range []struct{ check, prog, pkg string }{
		{"systemd-nspawn", l.cfg.Nspawn, "systemd-container"},
		{"mmdebstrap", l.cfg.Mmdebstrap, "mmdebstrap"},
		{"apt-cacher-ng", l.cfg.AptCacherNg, "apt-cacher-ng"},
	} {
		if path, err := exec.LookPath(p.prog); err == nil {
			add(p.check, true, path, "")
		} else {
			add(p.check, false, fmt.Sprintf("%s not found", p.prog), "apt-get install "+p.pkg)
		}
	}
	if ok, detail := overlaySupported(); ok {
		add("overlay", true, detail, "")
	} else {
		add("overlay", false, detail, "a kernel with overlayfs (modprobe overlay)")
	}
	if ok, detail := freeDisk(l.cfg.Dir); ok {
		add("disk", true, detail, "")
	} else {
		add("disk", false, detail, fmt.Sprintf("free at least %d GiB under %s, or set the lab directory elsewhere", MinFreeDisk>>30, l.cfg.Dir))
	}
	if r, archives, err := l.recipe(); err != nil {
		add("apt sources", false, err.Error(), "give the host apt sources (/etc/apt/sources.list.d/*.sources) for the recipe's archives")
	} else {
		var uris []string
		for _, a := range archives {
			uris = append(uris, a.Name+"="+a.URI)
		}
		add("apt sources", true, r.Name+": "+strings.Join(uris, " "), "")
	}
	return out
}

// Problems returns the findings that failed, as one error (nil when all passed).
func Problems(findings []Finding) error {
	var errs []error
	for _, f := range findings {
		if !f.OK {
			errs = append(errs, fmt.Errorf("%s: %s (fix: %s)", f.Check, f.Detail, f.Fix))
		}
	}
	return errors.Join(errs...)
}

func overlaySupported() (bool, string) {
	data, err := os.ReadFile("/proc/filesystems")
	if err == nil && strings.Contains(string(data), "\toverlay\n") {
		return true, "overlay in /proc/filesystems"
	}
	if _, err := os.Stat("/sys/module/overlay"); err == nil {
		return true, "/sys/module/overlay exists"
	}
	return false, "overlay filesystem not available"
}

// freeDisk checks the free space of the file system that holds dir (or its nearest existing
// parent).
func freeDisk(dir string) (bool, string) {
	p := dir
	for !isDir(p) && p != "/" {
		p = filepath.Dir(p)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		return false, fmt.Sprintf("statfs %s: %v", p, err)
	}
	free := st.Bavail * uint64(st.Bsize)
	detail := fmt.Sprintf("%.1f GiB free under %s", float64(free)/(1<<30), p)
	return free >= MinFreeDisk, detail
}
