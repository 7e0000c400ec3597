package pkg

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// rpmKeyDir is where dnf and zypper repository keys are stored.
const rpmKeyDir = "/etc/pki/rpm-gpg"

// rpmTools is what the dnf and zypper backends share: rpm queries
// (Installed), key import and repository file rendering.
type rpmTools struct {
	r    Runner
	opts Options
}

// rpm returns the argv of an rpm command, on the install root if any.
func (t *rpmTools) rpm(args ...string) []string {
	argv := []string{"rpm"}
	if t.opts.InstallRoot != "" {
		argv = append(argv, "--root", t.opts.InstallRoot)
	}
	return append(argv, args...)
}

// Installed asks rpm for the installed version ([epoch:]version-release) of
// each name. rpm exits with the number of names it does not know and says
// "package X is not installed" on stdout for each.
func (t *rpmTools) Installed(ctx context.Context, names []string) (map[string]string, error) {
	if err := checkNames(names); err != nil {
		return nil, err
	}
	out := map[string]string{}
	if len(names) == 0 {
		return out, nil
	}
	argv := t.rpm(append([]string{"-q", "--qf", `%{NAME}\t%{EPOCH}\t%{VERSION}\t%{RELEASE}\t%{ARCH}\n`, "--"}, names...)...)
	stdout, err := t.r.Run(ctx, argv, nil, nil)
	res, missing := parseRPMQuery(stdout, names)
	if err != nil && exitCode(err) != missing {
		return nil, fmt.Errorf("query installed packages: %w", err)
	}
	for n, v := range res {
		out[n] = v
	}
	return out, nil
}

// parseRPMQuery reads name\tepoch\tversion\trelease\tarch lines and counts
// "package X is not installed" lines. Of several installed arches of one
// name it keeps the newest version.
func parseRPMQuery(stdout []byte, names []string) (map[string]string, int) {
	out := map[string]string{}
	missing := 0
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "package ") && strings.HasSuffix(line, " is not installed") {
			missing++
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 5 || !slices.Contains(names, f[0]) {
			continue
		}
		v := rpmEVR(f[1], f[2], f[3])
		if cur, ok := out[f[0]]; !ok || compareRPM(v, cur) > 0 {
			out[f[0]] = v
		}
	}
	return out, missing
}

// rpmEVR renders epoch, version and release as [epoch:]version-release; an
// epoch of 0 or "(none)" is left out.
func rpmEVR(epoch, version, release string) string {
	v := version + "-" + release
	if epoch != "" && epoch != "0" && epoch != "(none)" {
		v = epoch + ":" + v
	}
	return v
}

func (t *rpmTools) keyPath(name string) string {
	return filepath.Join(rpmKeyDir, "RPM-GPG-KEY-"+name)
}

// keyURL is the gpgkey= URL of a repository's key: the tools read it from
// the host, so under an install root it names the file there.
func (t *rpmTools) keyURL(name string) string {
	return "file://" + filepath.Join("/", t.opts.InstallRoot, t.keyPath(name))
}

// KeyTrusted asks rpm whether the gpg-pubkey package of every key in the
// block is installed.
func (t *rpmTools) KeyTrusted(ctx context.Context, key []byte) (bool, error) {
	keys, err := parseArmoredKeys(key)
	if err != nil {
		return false, err
	}
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.rpmName()
	}
	stdout, err := t.r.Run(ctx, t.rpm(append([]string{"-q", "--"}, names...)...), nil, nil)
	_, missing := parseRPMQuery(stdout, nil)
	switch {
	case err == nil:
		return true, nil
	case exitCode(err) == missing:
		return false, nil
	}
	return false, fmt.Errorf("query trusted keys: %w", err)
}

// ImportKey runs rpm --import on the key file RepoFiles wrote.
func (t *rpmTools) ImportKey(ctx context.Context, name string) error {
	path := t.opts.path(t.keyPath(name))
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("import key of repository %s: %w", name, err)
	}
	if _, err := t.r.Run(ctx, t.rpm("--import", path), nil, nil); err != nil {
		return fmt.Errorf("import key of repository %s: %w", name, err)
	}
	return nil
}

// repoFile renders an rpm-md .repo file; extra lines are the backend's own.
func (t *rpmTools) repoFiles(repo Repo, repoPath string, extra ...string) ([]File, error) {
	if err := checkRepo(repo); err != nil {
		return nil, err
	}
	name := repo.Description
	if name == "" {
		name = repo.Name
	}
	var b strings.Builder
	b.WriteString("# Managed by kthw; changes are overwritten.\n")
	fmt.Fprintf(&b, "[%s]\n", repo.Name)
	fmt.Fprintf(&b, "name=%s\n", name)
	fmt.Fprintf(&b, "baseurl=%s\n", repo.URI)
	b.WriteString("enabled=1\n")
	for _, l := range extra {
		b.WriteString(l + "\n")
	}
	fmt.Fprintf(&b, "gpgkey=%s\n", t.keyURL(repo.Name))
	return []File{
		{Path: t.keyPath(repo.Name), Content: repo.Key, Mode: 0o644},
		{Path: repoPath, Content: []byte(b.String()), Mode: 0o644},
	}, nil
}

// withUnlocked releases the holds among names, runs fn and holds them
// again, whether fn failed or not: asked to install a held package, the
// backends change it (as apt-get --allow-change-held-packages does) and it
// stays held.
func withUnlocked(ctx context.Context, m Manager, names []string, fn func() error) error {
	held, err := m.Held(ctx, names)
	if err != nil {
		return err
	}
	locked := trueKeys(held)
	if err := m.Hold(ctx, locked, false); err != nil {
		return err
	}
	ferr := fn()
	if err := m.Hold(ctx, locked, true); err != nil && ferr == nil {
		return fmt.Errorf("lock again: %w", err)
	}
	return ferr
}

func names(pkgs []Package) []string {
	n := make([]string, len(pkgs))
	for i, p := range pkgs {
		n[i] = p.Name
	}
	return n
}
