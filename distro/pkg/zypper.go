package pkg

import (
	"context"
	"encoding/xml"
	"fmt"
	"slices"
	"strings"
	"time"
)

const (
	zypperReposDir = "/etc/zypp/repos.d"
	zypperStamp    = "/var/cache/zypp/kthw-refreshed"
	// zypperSystemRepo is what zypper calls the installed packages.
	zypperSystemRepo = "(System Packages)"
)

// zypper exit codes (zypper(8) EXIT CODES).
const (
	zypperCapNotFound = 104 // ZYPPER_EXIT_INF_CAP_NOT_FOUND
	// 100-103 report that updates, a reboot or a zypper restart are due
	// after a successful run.
	zypperInfoFirst = 100
	zypperInfoLast  = 103
)

// zypperBackend drives zypper (openSUSE Leap, SLES) and rpm. It never runs
// zypper with --gpg-auto-import-keys, which would trust whatever key a
// repository serves next to its metadata: the repository's key is
// imported into rpm's database from the file RepoFiles wrote (KeyImporter),
// and a repository signed by any other key fails.
type zypperBackend struct{ rpmTools }

var (
	_ Manager     = (*zypperBackend)(nil)
	_ StaleMarker = (*zypperBackend)(nil)
	_ KeyImporter = (*zypperBackend)(nil)
)

func (z *zypperBackend) Name() string { return Zypper }

// zypper returns the argv of a non-interactive zypper command.
func (z *zypperBackend) zypper(args ...string) []string {
	argv := []string{"zypper", "--non-interactive"}
	if z.opts.InstallRoot != "" {
		argv = append(argv, "--root", z.opts.InstallRoot)
	}
	return append(argv, args...)
}

// run runs zypper; the informational exit codes 100-103 count as success.
func (z *zypperBackend) run(ctx context.Context, argv []string) ([]byte, error) {
	out, err := z.r.Run(ctx, argv, nil, nil)
	if c := exitCode(err); c >= zypperInfoFirst && c <= zypperInfoLast {
		err = nil
	}
	return out, err
}

func (z *zypperBackend) stamp() stamp { return stamp(z.opts.path(zypperStamp)) }

// Refresh runs zypper refresh unless the last refresh by this backend is
// younger than maxAge (a stamp file in zypp's cache records it); zypper
// itself downloads only metadata whose checksum changed.
func (z *zypperBackend) Refresh(ctx context.Context, maxAge time.Duration) (bool, error) {
	now := z.opts.now()
	if fresh, err := z.stamp().fresh(now, maxAge); err != nil || fresh {
		return false, err
	}
	if _, err := z.run(ctx, z.zypper("refresh")); err != nil {
		return false, fmt.Errorf("refresh zypper repositories: %w", err)
	}
	return true, z.stamp().touch(now)
}

// MarkStale removes the refresh stamp.
func (z *zypperBackend) MarkStale() error { return z.stamp().remove() }

// zypperSearch is zypper --xmlout search's result.
type zypperSearch struct {
	Solvables []struct {
		Name       string `xml:"name,attr"`
		Kind       string `xml:"kind,attr"`
		Edition    string `xml:"edition,attr"`
		Arch       string `xml:"arch,attr"`
		Repository string `xml:"repository,attr"`
	} `xml:"search-result>solvable-list>solvable"`
}

// Resolve lists the versions the repositories offer with zypper --xmlout
// search -s --match-exact (exit code 104: no such package).
func (z *zypperBackend) Resolve(ctx context.Context, name, want string) (string, error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	argv := z.zypper("--xmlout", "--no-refresh", "search", "-s", "--match-exact", "-t", "package", "--", name)
	stdout, err := z.run(ctx, argv)
	switch {
	case exitCode(err) == zypperCapNotFound:
		return pickVersion(name, want, nil, compareRPM)
	case err != nil:
		return "", fmt.Errorf("resolve %s: %w", name, err)
	}
	vs, err := parseZypperSearch(stdout, name)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", name, err)
	}
	return pickVersion(name, want, vs, compareRPM)
}

func parseZypperSearch(stdout []byte, name string) ([]string, error) {
	var res zypperSearch
	if err := xml.Unmarshal(stdout, &res); err != nil {
		return nil, fmt.Errorf("parse zypper search output: %w", err)
	}
	var vs []string
	for _, s := range res.Solvables {
		if s.Name != name || s.Kind != "package" || s.Repository == zypperSystemRepo {
			continue
		}
		if !slices.Contains(vs, s.Edition) {
			vs = append(vs, s.Edition)
		}
	}
	return vs, nil
}

// Install runs zypper install --oldpackage with name=version, which also
// downgrades. Locked packages are unlocked for the install and locked
// again. Exit code 104 (a package or version not found) wraps ErrNotFound.
func (z *zypperBackend) Install(ctx context.Context, pkgs []Package) error {
	if len(pkgs) == 0 {
		return nil
	}
	specs, err := pkgSpecs(pkgs, "=")
	if err != nil {
		return err
	}
	argv := z.zypper(append([]string{"install", "--oldpackage", "--auto-agree-with-licenses", "--"}, specs...)...)
	return withUnlocked(ctx, z, names(pkgs), func() error {
		_, err := z.run(ctx, argv)
		switch {
		case strings.Contains(exitStderr(err), "Signature verification failed"):
			return fmt.Errorf("install %s: a repository failed signature verification: %w", pkgList(pkgs), err)
		case exitCode(err) == zypperCapNotFound:
			return fmt.Errorf("install %s: %w: %w", pkgList(pkgs), ErrNotFound, err)
		case err != nil:
			return fmt.Errorf("install %s: %w", pkgList(pkgs), err)
		}
		return nil
	})
}

// Remove removes the locks of the installed names and removes them.
func (z *zypperBackend) Remove(ctx context.Context, names []string) error {
	return removeInstalled(ctx, z, names, func(rm []string) error {
		_, err := z.run(ctx, z.zypper(append([]string{"remove", "--"}, rm...)...))
		return err
	})
}

// zypperLocks is zypper --xmlout locks' result.
type zypperLocks struct {
	Locks []struct {
		Name string `xml:"name"`
		Type string `xml:"type"`
		Repo string `xml:"repo"`
	} `xml:"locks>lock"`
}

// Held reads zypper --xmlout locks: a package is held by a lock of its
// exact name, of type package (or no type), on any repository.
func (z *zypperBackend) Held(ctx context.Context, names []string) (map[string]bool, error) {
	if err := checkNames(names); err != nil {
		return nil, err
	}
	out := map[string]bool{}
	if len(names) == 0 {
		return out, nil
	}
	stdout, err := z.run(ctx, z.zypper("--xmlout", "locks"))
	if err != nil {
		return nil, fmt.Errorf("query locks: %w", err)
	}
	locked, err := parseZypperLocks(stdout)
	if err != nil {
		return nil, err
	}
	for _, n := range locked {
		if slices.Contains(names, n) {
			out[n] = true
		}
	}
	return out, nil
}

func parseZypperLocks(stdout []byte) ([]string, error) {
	var res zypperLocks
	if err := xml.Unmarshal(stdout, &res); err != nil {
		return nil, fmt.Errorf("parse zypper locks output: %w", err)
	}
	var out []string
	for _, l := range res.Locks {
		if (l.Type == "" || l.Type == "package") && (l.Repo == "" || l.Repo == "(any)") {
			out = append(out, l.Name)
		}
	}
	return out, nil
}

// Hold runs zypper addlock or removelock.
func (z *zypperBackend) Hold(ctx context.Context, names []string, hold bool) error {
	if len(names) == 0 {
		return nil
	}
	if err := checkNames(names); err != nil {
		return err
	}
	verb := "addlock"
	if !hold {
		verb = "removelock"
	}
	if _, err := z.run(ctx, z.zypper(append([]string{verb, "--"}, names...)...)); err != nil {
		return fmt.Errorf("%s %s: %w", verb, strings.Join(names, ", "), err)
	}
	return nil
}

// RepoFiles renders /etc/zypp/repos.d/<name>.repo and the key it names.
// Repository metadata and packages are both signature-checked, as zypper
// does by default; the repository refreshes itself before use
// (autorefresh).
func (z *zypperBackend) RepoFiles(repo Repo) ([]File, error) {
	return z.repoFiles(repo, z.RepoPaths(repo.Name)[0],
		"autorefresh=1", "type=rpm-md", "gpgcheck=1", "repo_gpgcheck=1", "pkg_gpgcheck=1")
}

// RepoPaths returns the .repo file and the key file.
func (z *zypperBackend) RepoPaths(name string) []string {
	return []string{zypperReposDir + "/" + name + ".repo", z.keyPath(name)}
}
