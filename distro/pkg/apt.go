package pkg

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// apt paths.
const (
	aptListsDir   = "/var/lib/apt/lists"
	aptSourcesDir = "/etc/apt/sources.list.d"
	aptKeyringDir = "/etc/apt/keyrings"
)

// aptLockTimeout is how long apt waits for the dpkg lock (cloud images run
// unattended-upgrades right after boot) before it fails.
const aptLockTimeout = "300"

// aptEnv keeps apt, dpkg and their hooks from asking questions.
var aptEnv = []string{
	"DEBIAN_FRONTEND=noninteractive",
	"APT_LISTCHANGES_FRONTEND=none",
	"NEEDRESTART_SUSPEND=1", // Ubuntu's needrestart hook
}

// aptBackend drives apt-get, apt-cache, apt-mark and dpkg-query.
type aptBackend struct {
	r    Runner
	opts Options
}

var (
	_ Manager     = (*aptBackend)(nil)
	_ StaleMarker = (*aptBackend)(nil)
)

func (a *aptBackend) Name() string { return APT }

func (a *aptBackend) run(ctx context.Context, argv ...string) ([]byte, error) {
	return a.r.Run(ctx, argv, aptEnv, nil)
}

// Refresh runs apt-get update unless the index is younger than maxAge. The
// index's age is the mtime of /var/lib/apt/lists, which Refresh sets after
// every successful update (an update that fetched nothing new leaves it
// alone otherwise); an index directory without any index files is stale
// whatever its age (container images ship it empty). pkgcache.bin is not
// used: apt rebuilds it on demand and many images delete it.
func (a *aptBackend) Refresh(ctx context.Context, maxAge time.Duration) (bool, error) {
	fresh, err := a.fresh(maxAge)
	if err != nil || fresh {
		return false, err
	}
	// --error-on=any: a source that fails to download or verify is an
	// error, not a warning with the old index used.
	if _, err := a.run(ctx, "apt-get", "update", "-q", "--error-on=any", "-o", "DPkg::Lock::Timeout="+aptLockTimeout); err != nil {
		return false, fmt.Errorf("refresh apt index: %w", err)
	}
	now := a.opts.now()
	if err := os.Chtimes(a.opts.path(aptListsDir), now, now); err != nil {
		return true, fmt.Errorf("refresh apt index: stamp %s: %w", aptListsDir, err)
	}
	return true, nil
}

func (a *aptBackend) fresh(maxAge time.Duration) (bool, error) {
	if maxAge <= 0 {
		return false, nil
	}
	dir := a.opts.path(aptListsDir)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("inspect apt index: %w", err)
	}
	if age := a.opts.now().Sub(fi.ModTime()); age < 0 || age >= maxAge {
		return false, nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, fmt.Errorf("inspect apt index: %w", err)
	}
	for _, e := range entries {
		if n := e.Name(); strings.HasSuffix(n, "_Packages") || strings.Contains(n, "_Packages.") {
			return true, nil
		}
	}
	return false, nil
}

// MarkStale makes the next Refresh update the index: it sets the mtime of
// /var/lib/apt/lists to the epoch.
func (a *aptBackend) MarkStale() error {
	err := os.Chtimes(a.opts.path(aptListsDir), time.Unix(0, 0), time.Unix(0, 0))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("mark apt index stale: %w", err)
	}
	return nil
}

// Installed asks dpkg-query for the status of each name; a package counts
// as installed when dpkg's status is "installed" (not config-files only,
// half-installed, ...).
func (a *aptBackend) Installed(ctx context.Context, names []string) (map[string]string, error) {
	if err := checkNames(names); err != nil {
		return nil, err
	}
	out := map[string]string{}
	if len(names) == 0 {
		return out, nil
	}
	argv := append([]string{"dpkg-query", "-W", "-f=${Package}\\t${db:Status-Abbrev}\\t${Version}\\n", "--"}, names...)
	stdout, err := a.run(ctx, argv...)
	// dpkg-query exits 1 when it knows nothing of some name.
	if err != nil && !(exitCode(err) == 1 && onlyLines(exitStderr(err), "dpkg-query: no packages found matching ")) {
		return nil, fmt.Errorf("query installed packages: %w", err)
	}
	return parseDpkgQuery(stdout, names), nil
}

// parseDpkgQuery reads "name\tii \tversion" lines.
func parseDpkgQuery(stdout []byte, names []string) map[string]string {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 3 || !slices.Contains(names, f[0]) {
			continue
		}
		// db:Status-Abbrev is want, status, error flag: "ii ", "hi ", "rc ".
		if st := f[1]; len(st) >= 2 && st[1] == 'i' {
			out[f[0]] = f[2]
		}
	}
	return out
}

// onlyLines reports whether every non-blank line of s starts with prefix.
func onlyLines(s, prefix string) bool {
	seen := false
	for l := range strings.Lines(s) {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		if !strings.HasPrefix(l, prefix) {
			return false
		}
		seen = true
	}
	return seen
}

// Resolve picks from apt-cache madison's list the newest version that
// matches want.
func (a *aptBackend) Resolve(ctx context.Context, name, want string) (string, error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	stdout, err := a.run(ctx, "apt-cache", "madison", name)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", name, err)
	}
	return pickVersion(name, want, parseMadison(stdout, name), compareDeb)
}

// parseMadison reads "name | version | uri suite/component arch Packages"
// lines, skipping source packages.
func parseMadison(stdout []byte, name string) []string {
	var vs []string
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	for sc.Scan() {
		f := strings.Split(sc.Text(), "|")
		if len(f) != 3 || strings.TrimSpace(f[0]) != name || !strings.HasSuffix(strings.TrimSpace(f[2]), " Packages") {
			continue
		}
		if v := strings.TrimSpace(f[1]); v != "" && !slices.Contains(vs, v) {
			vs = append(vs, v)
		}
	}
	return vs
}

// Install runs apt-get install with name=version for pinned packages,
// allowing downgrades and changes of held packages, keeping changed
// configuration files (--force-confold). apt drops the hold of a package it
// changes; held packages are held again afterwards, as dnf and zypper
// keep their locks.
func (a *aptBackend) Install(ctx context.Context, pkgs []Package) error {
	if len(pkgs) == 0 {
		return nil
	}
	argv := []string{"apt-get", "install", "-y", "-q",
		"--allow-downgrades", "--allow-change-held-packages",
		"-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold",
		"-o", "DPkg::Lock::Timeout=" + aptLockTimeout, "--"}
	specs, err := pkgSpecs(pkgs, "=")
	if err != nil {
		return err
	}
	argv = append(argv, specs...)
	return withUnlocked(ctx, a, names(pkgs), func() error {
		if _, err := a.run(ctx, argv...); err != nil {
			return fmt.Errorf("install %s: %w", pkgList(pkgs), err)
		}
		return nil
	})
}

// Remove releases holds on the installed names and removes them.
func (a *aptBackend) Remove(ctx context.Context, names []string) error {
	return removeInstalled(ctx, a, names, func(rm []string) error {
		argv := append([]string{"apt-get", "remove", "-y", "-q", "--allow-change-held-packages",
			"-o", "DPkg::Lock::Timeout=" + aptLockTimeout, "--"}, rm...)
		_, err := a.run(ctx, argv...)
		return err
	})
}

// Held asks apt-mark showhold which of names are held.
func (a *aptBackend) Held(ctx context.Context, names []string) (map[string]bool, error) {
	if err := checkNames(names); err != nil {
		return nil, err
	}
	out := map[string]bool{}
	if len(names) == 0 {
		return out, nil
	}
	stdout, err := a.run(ctx, append([]string{"apt-mark", "showhold", "--"}, names...)...)
	if err != nil {
		return nil, fmt.Errorf("query held packages: %w", err)
	}
	for l := range strings.Lines(string(stdout)) {
		// Multi-arch packages may be listed as name:arch.
		n, _, _ := strings.Cut(strings.TrimSpace(l), ":")
		if slices.Contains(names, n) {
			out[n] = true
		}
	}
	return out, nil
}

// Hold runs apt-mark hold or unhold.
func (a *aptBackend) Hold(ctx context.Context, names []string, hold bool) error {
	if len(names) == 0 {
		return nil
	}
	if err := checkNames(names); err != nil {
		return err
	}
	verb := "hold"
	if !hold {
		verb = "unhold"
	}
	if _, err := a.run(ctx, append([]string{"apt-mark", verb, "--"}, names...)...); err != nil {
		return fmt.Errorf("%s %s: %w", verb, strings.Join(names, ", "), err)
	}
	return nil
}

// RepoFiles renders a deb822 sources file that names the repository's key
// file with Signed-By, so the key signs this repository only, and the key
// itself, as given, in /etc/apt/keyrings.
func (a *aptBackend) RepoFiles(repo Repo) ([]File, error) {
	if err := checkRepo(repo); err != nil {
		return nil, err
	}
	if repo.Suite == "" {
		return nil, fmt.Errorf("repository %q: suite is empty (\"/\" for a flat repository such as pkgs.k8s.io)", repo.Name)
	}
	flat := strings.HasSuffix(repo.Suite, "/")
	if flat && len(repo.Components) > 0 {
		return nil, fmt.Errorf("repository %q: a flat repository (suite %q) has no components", repo.Name, repo.Suite)
	}
	if !flat && len(repo.Components) == 0 {
		return nil, fmt.Errorf("repository %q: suite %q needs components (e.g. main)", repo.Name, repo.Suite)
	}
	for _, c := range repo.Components {
		if c == "" || strings.ContainsAny(c, " \t\n") {
			return nil, fmt.Errorf("repository %q: component %q is not valid", repo.Name, c)
		}
	}
	if strings.ContainsAny(repo.Suite, " \t\n") {
		return nil, fmt.Errorf("repository %q: suite %q is not valid", repo.Name, repo.Suite)
	}
	sources, key := a.RepoPaths(repo.Name)[0], a.RepoPaths(repo.Name)[1]
	var b strings.Builder
	b.WriteString("# Managed by kthw; changes are overwritten.\n")
	if repo.Description != "" {
		fmt.Fprintf(&b, "# %s\n", repo.Description)
	}
	b.WriteString("Types: deb\n")
	fmt.Fprintf(&b, "URIs: %s\n", repo.URI)
	fmt.Fprintf(&b, "Suites: %s\n", repo.Suite)
	if len(repo.Components) > 0 {
		fmt.Fprintf(&b, "Components: %s\n", strings.Join(repo.Components, " "))
	}
	fmt.Fprintf(&b, "Signed-By: %s\n", key)
	return []File{
		{Path: key, Content: repo.Key, Mode: 0o644},
		{Path: sources, Content: []byte(b.String()), Mode: 0o644},
	}, nil
}

// RepoPaths returns the sources file and the key file.
func (a *aptBackend) RepoPaths(name string) []string {
	return []string{
		filepath.Join(aptSourcesDir, name+".sources"),
		filepath.Join(aptKeyringDir, name+".asc"),
	}
}

func pkgList(pkgs []Package) string {
	s := make([]string, len(pkgs))
	for i, p := range pkgs {
		s[i] = p.Name
		if p.Version != "" {
			s[i] += " " + p.Version
		}
	}
	return strings.Join(s, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func trueKeys(m map[string]bool) []string {
	var keys []string
	for k, v := range m {
		if v {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}
