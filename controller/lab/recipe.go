package lab

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"strings"

	"github.com/goccy/go-yaml"
)

// Recipe describes a lab root filesystem (images/lab/<name>.yaml).
type Recipe struct {
	// Name is the recipe's name, equal to its file name without .yaml.
	Name string `yaml:"name"`
	// OS is the release the nodes run, as their os-release names it (ID,
	// VERSION_ID); optional.
	OS RecipeOS `yaml:"os"`
	// Suite is the release codename handed to mmdebstrap.
	Suite string `yaml:"suite"`
	// Variant is mmdebstrap's --variant (minbase, ...).
	Variant string `yaml:"variant"`
	// Components are the archive components (main, ...).
	Components []string `yaml:"components"`
	// Archives are the apt archives of the image; their URIs come from the host's sources.
	Archives []Archive `yaml:"archives"`
	// Include lists extra packages.
	Include []string `yaml:"include"`
	// Post are steps run on the finished tree, in order.
	Post []PostStep `yaml:"post"`
	// Proxy configures apt-cacher-ng for these archives.
	Proxy ProxyRecipe `yaml:"proxy"`

	raw []byte
}

// RecipeOS names an image's release as os-release does.
type RecipeOS struct {
	ID      string `yaml:"id"`
	Version string `yaml:"version"`
}

// Archive is one apt archive of the image.
type Archive struct {
	// Name identifies the archive (mirror, security); Proxy.Backends refers to it.
	Name string `yaml:"name"`
	// Match selects the host source that provides the URI.
	Match ArchiveMatch `yaml:"match"`
	// Suites of this archive written into the image's sources.
	Suites []string `yaml:"suites"`
}

// ArchiveMatch selects a host apt source: the first carrying Suite, else the first whose URI
// path ends with PathSuffix.
type ArchiveMatch struct {
	Suite      string `yaml:"suite"`
	PathSuffix string `yaml:"pathSuffix"`
}

// PostStep is one step on the finished tree; exactly one field is set.
type PostStep struct {
	// Remove deletes the files matching these absolute globs.
	Remove []string `yaml:"remove"`
	// Enable and Mask run systemctl enable/mask on these units, offline.
	Enable []string `yaml:"enable"`
	Mask   []string `yaml:"mask"`
	// Run runs a command chrooted in the tree.
	Run []string `yaml:"run"`
}

// ProxyRecipe is what apt-cacher-ng needs for the recipe's archives.
type ProxyRecipe struct {
	// Remap lines for acng.conf.
	Remap []string `yaml:"remap"`
	// Backends maps a backends file name to the archive whose URI it holds.
	Backends map[string]string `yaml:"backends"`
}

// LoadRecipe reads and validates <name>.yaml from fsys.
func LoadRecipe(fsys fs.FS, name string) (*Recipe, error) {
	data, err := fs.ReadFile(fsys, name+".yaml")
	if err != nil {
		return nil, fmt.Errorf("load recipe %s: %w", name, err)
	}
	r, err := ParseRecipe(data)
	if err != nil {
		return nil, fmt.Errorf("load recipe %s: %w", name, err)
	}
	if r.Name != name {
		return nil, fmt.Errorf("load recipe %s: file declares name %q", name, r.Name)
	}
	return r, nil
}

// ParseRecipe parses and validates a recipe; unknown fields are errors.
func ParseRecipe(data []byte) (*Recipe, error) {
	var r Recipe
	if err := yaml.UnmarshalWithOptions(data, &r, yaml.Strict()); err != nil {
		return nil, fmt.Errorf("parse recipe: %w", err)
	}
	r.raw = append([]byte(nil), data...)
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

var (
	wordRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9.+-]*$`)
	unitRE  = regexp.MustCompile(`^[A-Za-z0-9:_.@\\-]+\.(service|socket|target|timer|mount|path|slice)$`)
	globRE  = regexp.MustCompile(`^(/[A-Za-z0-9._*?+@-]+)+$`)
	fileRE  = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	remapRE = regexp.MustCompile(`^Remap-[A-Za-z0-9]+: [^\n]+$`)
)

// Validate reports every invalid field at once.
func (r *Recipe) Validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("recipe.%s: %s", field, fmt.Sprintf(format, a...)))
	}
	if !validName(r.Name, 64) {
		bad("name", "%q is not a valid name", r.Name)
	}
	if !wordRE.MatchString(r.Suite) {
		bad("suite", "%q is not a valid suite", r.Suite)
	}
	if (r.OS != RecipeOS{}) && (!wordRE.MatchString(r.OS.ID) || !wordRE.MatchString(r.OS.Version)) {
		bad("os", "id %q and version %q must both be set, as os-release's ID and VERSION_ID", r.OS.ID, r.OS.Version)
	}
	if !wordRE.MatchString(r.Variant) {
		bad("variant", "%q is not a valid variant", r.Variant)
	}
	if len(r.Components) == 0 {
		bad("components", "empty")
	}
	for i, c := range r.Components {
		if !wordRE.MatchString(c) {
			bad(fmt.Sprintf("components[%d]", i), "%q is not a valid component", c)
		}
	}
	if len(r.Archives) == 0 {
		bad("archives", "empty")
	}
	names := map[string]bool{}
	for i, a := range r.Archives {
		f := fmt.Sprintf("archives[%d]", i)
		if !validName(a.Name, 64) || names[a.Name] {
			bad(f+".name", "%q is not a valid, unique name", a.Name)
		}
		names[a.Name] = true
		if !wordRE.MatchString(a.Match.Suite) {
			bad(f+".match.suite", "%q is not a valid suite", a.Match.Suite)
		}
		if a.Match.PathSuffix != "" && !strings.HasPrefix(a.Match.PathSuffix, "/") {
			bad(f+".match.pathSuffix", "%q does not start with '/'", a.Match.PathSuffix)
		}
		if len(a.Suites) == 0 {
			bad(f+".suites", "empty")
		}
		for j, s := range a.Suites {
			if !wordRE.MatchString(s) {
				bad(fmt.Sprintf("%s.suites[%d]", f, j), "%q is not a valid suite", s)
			}
		}
	}
	for i, p := range r.Include {
		if !wordRE.MatchString(p) {
			bad(fmt.Sprintf("include[%d]", i), "%q is not a valid package name", p)
		}
	}
	for i, s := range r.Post {
		f := fmt.Sprintf("post[%d]", i)
		set := 0
		for _, l := range [][]string{s.Remove, s.Enable, s.Mask, s.Run} {
			if len(l) > 0 {
				set++
			}
		}
		if set != 1 {
			bad(f, "exactly one of remove, enable, mask, run must be set")
		}
		for j, g := range s.Remove {
			if !globRE.MatchString(g) || strings.Contains(g, "/..") || path.Clean(g) == "/" {
				bad(fmt.Sprintf("%s.remove[%d]", f, j), "%q is not an absolute path or glob below /", g)
			}
		}
		for j, u := range append(append([]string{}, s.Enable...), s.Mask...) {
			if !unitRE.MatchString(u) {
				bad(fmt.Sprintf("%s.unit[%d]", f, j), "%q is not a unit name", u)
			}
		}
		if len(s.Run) > 0 && s.Run[0] == "" {
			bad(f+".run", "empty command")
		}
	}
	for i, l := range r.Proxy.Remap {
		if !remapRE.MatchString(l) {
			bad(fmt.Sprintf("proxy.remap[%d]", i), "%q is not a \"Remap-<name>: ...\" line", l)
		}
	}
	for file, archive := range r.Proxy.Backends {
		if !fileRE.MatchString(file) {
			bad("proxy.backends", "%q is not a file name", file)
		}
		if !names[archive] {
			bad("proxy.backends."+file, "unknown archive %q", archive)
		}
	}
	return errors.Join(errs...)
}

// Hash identifies the image built from r with these archive URIs: a hex sha256 prefix over
// the recipe file's bytes and the resolved source lines. A change to either builds a new image.
func (r *Recipe) Hash(archives []ResolvedArchive) string {
	h := sha256.New()
	fmt.Fprintf(h, "kthw-lab-rootfs v1\n%d\n", len(r.raw))
	h.Write(r.raw)
	for _, a := range archives {
		fmt.Fprintf(h, "archive %s\n", a.Name)
		for _, l := range a.SourceLines() {
			fmt.Fprintf(h, "%s\n", l)
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// customizeHooks renders the post steps as mmdebstrap --customize-hook shell commands ("$1" is
// the tree).
func (r *Recipe) customizeHooks() []string {
	var hooks []string
	for _, s := range r.Post {
		switch {
		case len(s.Remove) > 0:
			cmd := "rm -rf --"
			for _, g := range s.Remove {
				cmd += ` "$1"` + g // globs are validated: no quoting needed, expansion wanted
			}
			hooks = append(hooks, cmd)
		case len(s.Enable) > 0:
			hooks = append(hooks, `chroot "$1" systemctl enable `+shellJoin(s.Enable))
		case len(s.Mask) > 0:
			hooks = append(hooks, `chroot "$1" systemctl mask `+shellJoin(s.Mask))
		case len(s.Run) > 0:
			hooks = append(hooks, `chroot "$1" `+shellJoin(s.Run))
		}
	}
	return hooks
}

// shellJoin quotes each argument for sh.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}
