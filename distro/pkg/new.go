package pkg

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Backend names.
const (
	APT    = "apt"
	DNF    = "dnf"
	Zypper = "zypper"
)

// Names lists the backends New knows, in Detect's order.
func Names() []string { return []string{APT, Zypper, DNF} }

// Options configure a backend.
type Options struct {
	// Root prefixes the node paths the backend reads or writes itself (apt's
	// index directory, refresh stamps, keys to import); "" means /. The agent
	// passes its own root; tests point it at a temporary directory.
	Root string
	// InstallRoot makes dnf, zypper and rpm work on another root directory
	// (dnf --installroot, zypper --root, rpm --root), for tests that run the
	// real tools without touching the host. The repository files RepoFiles
	// renders then belong under it, and their gpgkey= URLs name the key file
	// there. apt does not support it.
	InstallRoot string
	// Now is the clock for index ages; nil means time.Now.
	Now func() time.Time
}

func (o Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// path returns a node path (under InstallRoot) as the agent sees it.
func (o Options) path(p string) string {
	return filepath.Join("/", o.Root, o.InstallRoot, p)
}

// New returns the backend called name, running its commands through r.
func New(name string, r Runner, opts Options) (Manager, error) {
	if r == nil {
		return nil, errors.New("new package manager: no runner")
	}
	if opts.InstallRoot != "" && !filepath.IsAbs(opts.InstallRoot) {
		return nil, fmt.Errorf("new package manager: install root %q is not absolute", opts.InstallRoot)
	}
	switch name {
	case APT:
		if opts.InstallRoot != "" {
			return nil, fmt.Errorf("new package manager apt: install root: %w", ErrUnsupported)
		}
		return &aptBackend{r: r, opts: opts}, nil
	case DNF:
		return &dnfBackend{rpmTools{r: r, opts: opts}}, nil
	case Zypper:
		return &zypperBackend{rpmTools{r: r, opts: opts}}, nil
	}
	return nil, fmt.Errorf("new package manager %q: %w (known: %s)", name, ErrUnsupported, strings.Join(Names(), ", "))
}

// detectBinaries are what Detect looks for, per backend, in Names' order.
// apt comes first: a Debian host may have dnf or zypper installed as
// ordinary packages (this project's test machines do), while RPM
// distributions do not ship dpkg.
var detectBinaries = map[string][]string{
	APT:    {"usr/bin/apt-get", "usr/bin/dpkg"},
	Zypper: {"usr/bin/zypper", "usr/bin/rpm"},
	DNF:    {"usr/bin/dnf", "usr/bin/rpm"},
}

// Detect returns the name of the package manager installed under root (""
// means /): the first of Names whose binaries are all there (looked up in
// /usr/bin, and in /bin for systems without a merged /usr).
func Detect(root string) (string, error) {
	if root == "" {
		root = "/"
	}
	for _, name := range Names() {
		if hasAll(root, detectBinaries[name]) {
			return name, nil
		}
	}
	return "", fmt.Errorf("detect package manager under %s: none of %s found: %w", root, strings.Join(Names(), ", "), ErrUnsupported)
}

func hasAll(root string, bins []string) bool {
	for _, b := range bins {
		found := false
		for _, p := range []string{b, strings.Replace(b, "usr/bin/", "bin/", 1)} {
			if fi, err := os.Stat(filepath.Join(root, p)); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// StaleMarker is implemented by backends that can be told their index is
// out of date (a repository was added or changed), so that the next Refresh
// refreshes whatever its maxAge.
type StaleMarker interface {
	MarkStale() error
}

// KeyImporter is implemented by backends whose tools trust repository keys
// through a database of their own (rpm's), not through the key file alone.
type KeyImporter interface {
	// KeyTrusted reports whether every key in the armored block is trusted.
	KeyTrusted(ctx context.Context, key []byte) (bool, error)
	// ImportKey trusts the key file RepoFiles wrote for repository name.
	ImportKey(ctx context.Context, name string) error
}

// stamp is a file whose mtime records the last successful refresh.
type stamp string

// age returns how long ago the stamp was touched; ok is false when there
// is no stamp.
func (s stamp) age(now time.Time) (time.Duration, bool, error) {
	fi, err := os.Stat(string(s))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return 0, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("inspect %s: %w", s, err)
	}
	return now.Sub(fi.ModTime()), true, nil
}

func (s stamp) touch(now time.Time) error {
	if err := os.MkdirAll(filepath.Dir(string(s)), 0o755); err != nil {
		return fmt.Errorf("touch %s: %w", s, err)
	}
	f, err := os.OpenFile(string(s), os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("touch %s: %w", s, err)
	}
	f.Close()
	if err := os.Chtimes(string(s), now, now); err != nil {
		return fmt.Errorf("touch %s: %w", s, err)
	}
	return nil
}

func (s stamp) remove() error {
	if err := os.Remove(string(s)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("mark index stale: %w", err)
	}
	return nil
}

// fresh reports whether a refresh stamped s is younger than maxAge.
func (s stamp) fresh(now time.Time, maxAge time.Duration) (bool, error) {
	if maxAge <= 0 {
		return false, nil
	}
	age, ok, err := s.age(now)
	if err != nil || !ok {
		return false, err
	}
	return age >= 0 && age < maxAge, nil
}

// exitCode returns the exit code of a *ExitError err, or -1.
func exitCode(err error) int {
	var xe *ExitError
	if errors.As(err, &xe) {
		return xe.Code
	}
	return -1
}

// exitStderr returns the stderr tail of a *ExitError err, or "".
func exitStderr(err error) string {
	var xe *ExitError
	if errors.As(err, &xe) {
		return xe.Stderr
	}
	return ""
}

// checkNames refuses package names a tool could read as an option or a
// version expression.
func checkNames(names []string) error {
	for _, n := range names {
		if err := checkName(n); err != nil {
			return err
		}
	}
	return nil
}

// pkgSpecs checks pkgs and renders each as its name, or as name, sep and
// version when it is pinned ("kubelet=1.31.2-1.1" for apt and zypper,
// "kubelet-1.31.2-1.1" for dnf).
func pkgSpecs(pkgs []Package, sep string) ([]string, error) {
	out := make([]string, len(pkgs))
	for i, p := range pkgs {
		if err := checkName(p.Name); err != nil {
			return nil, err
		}
		if err := checkVersion(p.Name, p.Version); err != nil {
			return nil, err
		}
		out[i] = p.Name
		if p.Version != "" {
			out[i] += sep + p.Version
		}
	}
	return out, nil
}

func checkName(n string) error {
	if n == "" || strings.HasPrefix(n, "-") || strings.ContainsAny(n, " \t\n=<>*?[]/\\'\"") {
		return fmt.Errorf("package name %q is not valid", n)
	}
	return nil
}

func checkVersion(name, v string) error {
	if strings.HasPrefix(v, "-") || strings.ContainsAny(v, " \t\n=<>*?[]/\\'\"") {
		return fmt.Errorf("package %s: version %q is not valid", name, v)
	}
	return nil
}

// Validate checks what every backend needs of a repository: a name that
// can name files, a URL, an ASCII-armored public key and a one-line
// description. It reports every problem at once. Backends check their own
// fields (apt's suite and components) in RepoFiles.
func (repo Repo) Validate() error { return checkRepo(repo) }

func checkRepo(repo Repo) error {
	var errs []error
	if err := CheckRepoName(repo.Name); err != nil {
		errs = append(errs, err)
	}
	if repo.URI == "" {
		errs = append(errs, errors.New("uri is empty"))
	} else if i := strings.Index(repo.URI, "://"); i <= 0 || strings.ContainsAny(repo.URI, " \t\n") {
		errs = append(errs, fmt.Errorf("uri %q is not a URL", repo.URI))
	}
	if len(repo.Key) == 0 {
		errs = append(errs, errors.New("key is empty: the repository's ASCII-armored public signing key is required"))
	} else if err := checkArmoredKey(repo.Key); err != nil {
		errs = append(errs, fmt.Errorf("key: %w", err))
	}
	if strings.ContainsAny(repo.Description, "\n\r") {
		errs = append(errs, errors.New("description must be one line"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("repository %q: %w", repo.Name, err)
	}
	return nil
}

// CheckRepoName checks that name can name a repository's files: lowercase
// letters, digits, ".", "_" and "-", not starting with "." or "-".
func CheckRepoName(name string) error {
	if !validRepoName(name) {
		return fmt.Errorf("name %q must be lowercase letters, digits, '.', '_' or '-'", name)
	}
	return nil
}

func validRepoName(n string) bool {
	if n == "" || n[0] == '.' || n[0] == '-' || len(n) > 100 {
		return false
	}
	for _, c := range []byte(n) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
