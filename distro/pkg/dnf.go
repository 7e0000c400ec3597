package pkg

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

const (
	dnfReposDir = "/etc/yum.repos.d"
	dnfStamp    = "/var/cache/dnf/kthw-refreshed"
)

// dnfBackend drives dnf 4 (RHEL/Rocky 8 and 9) with its versionlock plugin
// (package python3-dnf-plugin-versionlock) and rpm.
type dnfBackend struct{ rpmTools }

var (
	_ Manager     = (*dnfBackend)(nil)
	_ StaleMarker = (*dnfBackend)(nil)
	_ KeyImporter = (*dnfBackend)(nil)
)

func (d *dnfBackend) Name() string { return DNF }

// dnf returns the argv of a non-interactive dnf command.
func (d *dnfBackend) dnf(args ...string) []string {
	argv := []string{"dnf", "-y"}
	if d.opts.InstallRoot != "" {
		argv = append(argv, "--installroot="+d.opts.InstallRoot)
	}
	return append(argv, args...)
}

func (d *dnfBackend) run(ctx context.Context, argv []string) ([]byte, error) {
	return d.r.Run(ctx, argv, nil, nil)
}

func (d *dnfBackend) stamp() stamp { return stamp(d.opts.path(dnfStamp)) }

// Refresh runs dnf makecache --refresh unless the last refresh by this
// backend is younger than maxAge (a stamp file in dnf's cache directory
// records it). dnf fetches missing or expired metadata by itself before
// any other command, so a stale index never breaks an install.
func (d *dnfBackend) Refresh(ctx context.Context, maxAge time.Duration) (bool, error) {
	now := d.opts.now()
	if fresh, err := d.stamp().fresh(now, maxAge); err != nil || fresh {
		return false, err
	}
	if _, err := d.run(ctx, d.dnf("makecache", "--refresh")); err != nil {
		return false, fmt.Errorf("refresh dnf metadata: %w", err)
	}
	return true, d.stamp().touch(now)
}

// MarkStale removes the refresh stamp.
func (d *dnfBackend) MarkStale() error { return d.stamp().remove() }

// Resolve lists the versions the repositories offer with dnf repoquery and
// a tab-separated query format (dnf list pads and wraps its columns for a
// terminal, so it is not read here). The versionlock plugin is disabled for
// the query: its excludes hide every version but the locked one.
func (d *dnfBackend) Resolve(ctx context.Context, name, want string) (string, error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	argv := d.dnf("-q", "--disableplugin=versionlock", "repoquery", "--available", "--showduplicates",
		"--qf", `%{name}\t%{epoch}\t%{version}\t%{release}\t%{arch}`, "--", name)
	stdout, err := d.run(ctx, argv)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", name, err)
	}
	return pickVersion(name, want, parseRepoquery(stdout, name), compareRPM)
}

// parseRepoquery reads name\tepoch\tversion\trelease\tarch lines.
func parseRepoquery(stdout []byte, name string) []string {
	var vs []string
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 5 || f[0] != name {
			continue
		}
		if v := rpmEVR(f[1], f[2], f[3]); !slices.Contains(vs, v) {
			vs = append(vs, v)
		}
	}
	return vs
}

// Install runs dnf install with name-version specs; dnf install also
// downgrades to an older pinned version. Locked packages are unlocked for
// the install and locked again.
func (d *dnfBackend) Install(ctx context.Context, pkgs []Package) error {
	if len(pkgs) == 0 {
		return nil
	}
	specs, err := pkgSpecs(pkgs, "-")
	if err != nil {
		return err
	}
	argv := d.dnf(append([]string{"install", "--"}, specs...)...)
	return withUnlocked(ctx, d, names(pkgs), func() error {
		if _, err := d.run(ctx, argv); err != nil {
			if strings.Contains(exitStderr(err), "Unable to find a match") {
				return fmt.Errorf("install %s: %w: %w", pkgList(pkgs), ErrNotFound, err)
			}
			return fmt.Errorf("install %s: %w", pkgList(pkgs), err)
		}
		return nil
	})
}

// Remove deletes the version locks of the installed names and removes them.
func (d *dnfBackend) Remove(ctx context.Context, names []string) error {
	return removeInstalled(ctx, d, names, func(rm []string) error {
		_, err := d.run(ctx, d.dnf(append([]string{"remove", "--"}, rm...)...))
		return err
	})
}

// Held reads dnf versionlock list: one NEVRA pattern a line
// ("kubelet-0:1.31.2-150500.1.1.*"); "!" lines are excludes, not locks.
// Without the versionlock plugin no package is held.
func (d *dnfBackend) Held(ctx context.Context, names []string) (map[string]bool, error) {
	if err := checkNames(names); err != nil {
		return nil, err
	}
	out := map[string]bool{}
	if len(names) == 0 {
		return out, nil
	}
	stdout, err := d.run(ctx, d.dnf("-q", "versionlock", "list"))
	switch {
	case err != nil && noVersionlock(err):
		// Without the plugin nothing is locked; Hold explains what to
		// install.
		return out, nil
	case err != nil:
		return nil, fmt.Errorf("query version locks: %w", err)
	}
	for _, n := range parseVersionlockList(stdout) {
		if slices.Contains(names, n) {
			out[n] = true
		}
	}
	return out, nil
}

// parseVersionlockList returns the package names of the locks.
func parseVersionlockList(stdout []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, "!") || strings.HasPrefix(l, "Last metadata expiration check") {
			continue
		}
		// name-[epoch:]version-release.arch: the name ends before the
		// second-to-last "-".
		i := strings.LastIndexByte(l, '-')
		if i <= 0 {
			continue
		}
		j := strings.LastIndexByte(l[:i], '-')
		if j <= 0 {
			continue
		}
		out = append(out, l[:j])
	}
	return out
}

// Hold runs dnf versionlock add (which locks the installed version) or
// delete.
func (d *dnfBackend) Hold(ctx context.Context, names []string, hold bool) error {
	if len(names) == 0 {
		return nil
	}
	if err := checkNames(names); err != nil {
		return err
	}
	verb := "add"
	if !hold {
		verb = "delete"
	}
	if _, err := d.run(ctx, d.dnf(append([]string{"versionlock", verb, "--"}, names...)...)); err != nil {
		return fmt.Errorf("versionlock %s %s: %w", verb, strings.Join(names, ", "), versionlockErr(err))
	}
	return nil
}

func noVersionlock(err error) bool {
	return strings.Contains(exitStderr(err), "No such command: versionlock")
}

// versionlockErr explains a missing versionlock plugin.
func versionlockErr(err error) error {
	if noVersionlock(err) {
		return fmt.Errorf("the dnf versionlock plugin is not installed (package python3-dnf-plugin-versionlock): %w", err)
	}
	return err
}

// RepoFiles renders /etc/yum.repos.d/<name>.repo and the key it names.
// Packages are signature-checked (gpgcheck=1); repository metadata is not
// (repo_gpgcheck=0), as pkgs.k8s.io and download.docker.com document it:
// Docker's rpm repositories sign packages only.
func (d *dnfBackend) RepoFiles(repo Repo) ([]File, error) {
	return d.repoFiles(repo, d.RepoPaths(repo.Name)[0], "gpgcheck=1", "repo_gpgcheck=0")
}

// RepoPaths returns the .repo file and the key file.
func (d *dnfBackend) RepoPaths(name string) []string {
	return []string{dnfReposDir + "/" + name + ".repo", d.keyPath(name)}
}
