package pkg

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests run the real dnf, zypper and rpm (Debian packages them)
// against an RPM repository built in the test: two versions of a tiny
// noarch package, signed with a test key (packages with rpmsign, the
// repository metadata with a detached signature), served over HTTP on
// loopback. The managers work on a temporary install root, so the host is
// left alone.

// execRunner is a real Runner for the tests: it runs argv with the
// minimal environment the agent uses plus env and extra, keeps every
// output for assertions and logs it.
type execRunner struct {
	t     *testing.T
	extra []string

	mu   sync.Mutex
	outs []string
}

func (r *execRunner) Run(ctx context.Context, argv, env []string, stdin io.Reader) ([]byte, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}, env...)
	cmd.Env = append(cmd.Env, r.extra...)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r.t.Logf("%s (%s)\n%s%s", strings.Join(argv, " "), time.Since(start).Round(time.Millisecond), stdout.String(), stderr.String())
	r.mu.Lock()
	r.outs = append(r.outs, stdout.String()+stderr.String())
	r.mu.Unlock()
	var xe *exec.ExitError
	if errors.As(err, &xe) {
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		return stdout.Bytes(), &ExitError{Argv: argv, Code: xe.ExitCode(), Stderr: strings.Join(lines[max(0, len(lines)-8):], "\n")}
	}
	return stdout.Bytes(), err
}

// last returns the combined output of the last command.
func (r *execRunner) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.outs) == 0 {
		return ""
	}
	return r.outs[len(r.outs)-1]
}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the package managers need root to write an install root")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (scripts/setup.sh installs it: apt-get install rpm createrepo-c dnf zypper gnupg)", tool)
		}
	}
}

func mustRun(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// testGPG is a GnuPG home with one signing key, no passphrase.
type testGPG struct {
	env    []string // GNUPGHOME=...
	uid    string
	public []byte // ASCII-armored public key
}

func newTestGPG(t *testing.T, uid string) *testGPG {
	t.Helper()
	home, err := os.MkdirTemp("", "kthw-gnupg-") // short: gpg-agent's socket path is limited
	if err != nil {
		t.Fatal(err)
	}
	g := &testGPG{env: []string{"GNUPGHOME=" + home}, uid: uid}
	t.Cleanup(func() {
		exec.Command("gpgconf", "--homedir", home, "--kill", "all").Run()
		os.RemoveAll(home)
	})
	if err := os.Chmod(home, 0o700); err != nil {
		t.Fatal(err)
	}
	mustRun(t, g.env, "gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
		"--quick-gen-key", uid, "rsa2048", "sign", "never")
	g.public = []byte(mustRun(t, g.env, "gpg", "--armor", "--export", uid))
	return g
}

// rpmRepo builds a signed repository of kthw-<name> at the given versions
// in dir and serves it; it returns the URL.
func rpmRepo(t *testing.T, g *testGPG, name string, versions ...string) string {
	t.Helper()
	work := t.TempDir()
	spec := filepath.Join(work, "pkg.spec")
	err := os.WriteFile(spec, []byte(`Name: kthw-`+name+`
Version: %{ver}
Release: 1
Summary: kthw test package
License: MIT
BuildArch: noarch
%description
A test package.
%install
mkdir -p %{buildroot}/usr/share/kthw-`+name+`
echo %{version} > %{buildroot}/usr/share/kthw-`+name+`/version
%files
/usr/share/kthw-`+name+`/version
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	repo := filepath.Join(work, "repo")
	if err := os.MkdirAll(repo, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, v := range versions {
		mustRun(t, nil, "rpmbuild", "--define", "_topdir "+filepath.Join(work, "top"), "--define", "ver "+v, "-bb", spec)
	}
	rpms, _ := filepath.Glob(filepath.Join(work, "top", "RPMS", "noarch", "*.rpm"))
	for _, p := range rpms {
		if err := os.Rename(p, filepath.Join(repo, filepath.Base(p))); err != nil {
			t.Fatal(err)
		}
	}
	signed, _ := filepath.Glob(filepath.Join(repo, "*.rpm"))
	// Debian's rpm macros name gpg2; Debian ships gpg.
	mustRun(t, g.env, "rpmsign", append([]string{"--define", "__gpg /usr/bin/gpg", "--define", "_gpg_name " + g.uid, "--addsign"}, signed...)...)
	mustRun(t, nil, "createrepo_c", repo)
	mustRun(t, g.env, "gpg", "--batch", "--yes", "--armor", "--detach-sign", filepath.Join(repo, "repodata", "repomd.xml"))
	srv := httptest.NewServer(http.FileServer(http.Dir(repo)))
	t.Cleanup(srv.Close)
	return srv.URL + "/"
}

// writeFiles writes what RepoFiles rendered under root.
func writeFiles(t *testing.T, root string, files []File) {
	t.Helper()
	for _, f := range files {
		p := filepath.Join(root, f.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.Content, os.FileMode(f.Mode)); err != nil {
			t.Fatal(err)
		}
	}
}

func installedVersion(t *testing.T, ctx context.Context, m Manager, name string) string {
	t.Helper()
	got, err := m.Installed(ctx, []string{name})
	if err != nil {
		t.Fatalf("Installed: %v", err)
	}
	return got[name]
}

func isHeld(t *testing.T, ctx context.Context, m Manager, name string) bool {
	t.Helper()
	got, err := m.Held(ctx, []string{name})
	if err != nil {
		t.Fatalf("Held: %v", err)
	}
	return got[name]
}

// dnfVersionlock finds the versionlock plugin: installed with
// dnf-plugins-core, or extracted from its package by scripts/setup.sh
// (Debian's dnf-plugins-core conflicts with zypper, so setup.sh does not
// install it).
func dnfVersionlock() (plugin, pythonPath string, ok bool) {
	for _, base := range []string{"/usr/local/lib/kthw/dnf-plugins-core/usr/lib/python3/dist-packages", "/usr/lib/python3/dist-packages"} {
		p := filepath.Join(base, "dnf-plugins", "versionlock.py")
		if _, err := os.Stat(p); err == nil {
			if _, err := os.Stat(filepath.Join(base, "dnfpluginscore")); err == nil {
				return p, base, true
			}
		}
	}
	return "", "", false
}

// rpmWorld is a repository, an install root and a backend on it.
type rpmWorld struct {
	m      Manager
	r      *execRunner
	root   string
	gpg    *testGPG
	locks  bool // the manager can lock (dnf needs the versionlock plugin)
	noLock string
}

func newRPMWorld(t *testing.T, manager string) *rpmWorld {
	t.Helper()
	w := &rpmWorld{r: &execRunner{t: t}, root: t.TempDir(), locks: true}
	if manager == DNF {
		plugin, pythonPath, ok := dnfVersionlock()
		if ok {
			// dnf reads dnf.conf from the install root; the plugin and
			// its lock list live outside it.
			pluginDir, confDir := t.TempDir(), t.TempDir()
			b, err := os.ReadFile(plugin)
			if err != nil {
				t.Fatal(err)
			}
			writeFiles(t, "/", []File{
				{Path: filepath.Join(pluginDir, "versionlock.py"), Content: b, Mode: 0o644},
				{Path: filepath.Join(confDir, "versionlock.conf"), Content: []byte("[main]\nenabled=1\nlocklist=" + filepath.Join(confDir, "versionlock.list") + "\n"), Mode: 0o644},
				{Path: filepath.Join(confDir, "versionlock.list"), Mode: 0o644},
			})
			writeFiles(t, w.root, []File{{Path: "/etc/dnf/dnf.conf", Mode: 0o644,
				Content: []byte("[main]\ngpgcheck=1\npluginpath=" + pluginDir + "\npluginconfpath=" + confDir + "\n")}})
			w.r.extra = []string{"PYTHONPATH=" + pythonPath}
		} else {
			w.locks = false
			w.noLock = "the dnf versionlock plugin is missing (scripts/setup.sh extracts it from dnf-plugins-core)"
		}
	}
	w.gpg = newTestGPG(t, "kthw test <test@kthw.invalid>")
	var err error
	w.m, err = New(manager, w.r, Options{InstallRoot: w.root})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// addRepo writes the repository files and trusts its key.
func (w *rpmWorld) addRepo(t *testing.T, ctx context.Context, repo Repo) {
	t.Helper()
	files, err := w.m.RepoFiles(repo)
	if err != nil {
		t.Fatal(err)
	}
	writeFiles(t, w.root, files)
	ki := w.m.(KeyImporter)
	trusted, err := ki.KeyTrusted(ctx, repo.Key)
	if err != nil {
		t.Fatal(err)
	}
	if !trusted {
		if err := ki.ImportKey(ctx, repo.Name); err != nil {
			t.Fatal(err)
		}
	}
	if trusted, err := ki.KeyTrusted(ctx, repo.Key); err != nil || !trusted {
		t.Fatalf("KeyTrusted after import = %v, %v", trusted, err)
	}
	if err := w.m.(StaleMarker).MarkStale(); err != nil {
		t.Fatal(err)
	}
}

func TestDnfReal(t *testing.T) {
	needTools(t, "dnf", "rpm", "rpmbuild", "rpmsign", "createrepo_c", "gpg")
	testRPMManager(t, DNF)
}

func TestZypperReal(t *testing.T) {
	needTools(t, "zypper", "rpm", "rpmbuild", "rpmsign", "createrepo_c", "gpg")
	testRPMManager(t, Zypper)
}

func testRPMManager(t *testing.T, manager string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	w := newRPMWorld(t, manager)
	m := w.m
	url := rpmRepo(t, w.gpg, "hello", "1.30.1", "1.31.2")
	t.Logf("repository built in %s", time.Since(start).Round(time.Millisecond))
	w.addRepo(t, ctx, Repo{Name: "kthwtest", Description: "kthw test", URI: url, Key: w.gpg.public})

	step := func(name string, f func(t *testing.T)) {
		if !t.Run(name, f) {
			t.FailNow()
		}
	}
	step("refresh only when stale", func(t *testing.T) {
		if got, err := m.Refresh(ctx, time.Hour); err != nil || !got {
			t.Fatalf("first Refresh = %v, %v; want refreshed", got, err)
		}
		if got, err := m.Refresh(ctx, time.Hour); err != nil || got {
			t.Fatalf("second Refresh = %v, %v; want fresh", got, err)
		}
	})
	step("resolve", func(t *testing.T) {
		for want, exp := range map[string]string{"1.30.1": "1.30.1-1", "v1.31.2": "1.31.2-1", "v1.31": "1.31.2-1", "": "1.31.2-1"} {
			if got, err := m.Resolve(ctx, "kthw-hello", want); err != nil || got != exp {
				t.Errorf("Resolve(%q) = %q, %v; want %q", want, got, err, exp)
			}
		}
		_, err := m.Resolve(ctx, "kthw-hello", "1.29.0")
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "offer 1.31.2-1, 1.30.1-1") {
			t.Errorf("Resolve(1.29.0): %v; want ErrNotFound listing the versions", err)
		}
		if _, err := m.Resolve(ctx, "kthw-nosuch", ""); !errors.Is(err, ErrNotFound) {
			t.Errorf("Resolve(kthw-nosuch): %v; want ErrNotFound", err)
		}
	})
	step("install pinned", func(t *testing.T) {
		if v := installedVersion(t, ctx, m, "kthw-hello"); v != "" {
			t.Fatalf("installed before: %q", v)
		}
		if err := m.Install(ctx, []Package{{"kthw-hello", "1.30.1-1"}}); err != nil {
			t.Fatal(err)
		}
		if v := installedVersion(t, ctx, m, "kthw-hello"); v != "1.30.1-1" {
			t.Fatalf("installed %q, want 1.30.1-1", v)
		}
		if b, err := os.ReadFile(filepath.Join(w.root, "usr/share/kthw-hello/version")); err != nil || string(b) != "1.30.1\n" {
			t.Fatalf("package content = %q, %v", b, err)
		}
	})
	step("second install has nothing to do", func(t *testing.T) {
		if err := m.Install(ctx, []Package{{"kthw-hello", "1.30.1-1"}}); err != nil {
			t.Fatal(err)
		}
		if out := w.r.last(); !strings.Contains(out, "Nothing to do") {
			t.Errorf("second install output does not say Nothing to do:\n%s", out)
		}
	})
	step("lock", func(t *testing.T) {
		if !w.locks {
			t.Skip(w.noLock)
		}
		if isHeld(t, ctx, m, "kthw-hello") {
			t.Fatal("held before Hold")
		}
		if err := m.Hold(ctx, []string{"kthw-hello"}, true); err != nil {
			t.Fatal(err)
		}
		if !isHeld(t, ctx, m, "kthw-hello") {
			t.Fatal("not held after Hold")
		}
		// A plain upgrade leaves the locked package alone: dnf filters the
		// newer version out, zypper refuses with a conflict.
		upgrade := []string{"dnf", "-y", "--installroot=" + w.root, "upgrade", "kthw-hello"}
		if manager == Zypper {
			upgrade = []string{"zypper", "--non-interactive", "--root", w.root, "update", "kthw-hello"}
		}
		_, err := w.r.Run(ctx, upgrade, nil, nil)
		t.Logf("upgrade while locked: %v", err)
		if v := installedVersion(t, ctx, m, "kthw-hello"); v != "1.30.1-1" {
			t.Fatalf("a locked package was upgraded to %q", v)
		}
		// Asked for a version, the backend changes a held package and
		// holds it again, as apt-get --allow-change-held-packages does.
		if err := m.Install(ctx, []Package{{"kthw-hello", "1.31.2-1"}}); err != nil {
			t.Fatal(err)
		}
		if v := installedVersion(t, ctx, m, "kthw-hello"); v != "1.31.2-1" || !isHeld(t, ctx, m, "kthw-hello") {
			t.Fatalf("after pinned upgrade: %q held=%v; want 1.31.2-1 held", v, isHeld(t, ctx, m, "kthw-hello"))
		}
		if err := m.Install(ctx, []Package{{"kthw-hello", "1.30.1-1"}}); err != nil {
			t.Fatalf("downgrade: %v", err)
		}
		if v := installedVersion(t, ctx, m, "kthw-hello"); v != "1.30.1-1" {
			t.Fatalf("after downgrade: %q", v)
		}
	})
	step("unknown package", func(t *testing.T) {
		err := m.Install(ctx, []Package{{"kthw-nosuch", "1.0-1"}})
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("Install(kthw-nosuch) = %v; want ErrNotFound", err)
		}
	})
	step("bad signature", func(t *testing.T) {
		// A repository whose packages and metadata are signed by a key
		// that is not the one configured (and trusted) for it.
		other := newTestGPG(t, "kthw other <other@kthw.invalid>")
		evil := rpmRepo(t, other, "evil", "1.0")
		files, err := m.RepoFiles(Repo{Name: "kthwevil", URI: evil, Key: w.gpg.public})
		if err != nil {
			t.Fatal(err)
		}
		writeFiles(t, w.root, files)
		t.Cleanup(func() {
			for _, p := range m.RepoPaths("kthwevil") {
				os.Remove(filepath.Join(w.root, p))
			}
		})
		err = m.Install(ctx, []Package{{"kthw-evil", ""}})
		if err == nil {
			t.Fatal("installed a package signed by an untrusted key")
		}
		t.Logf("refused: %v", err)
		if errors.Is(err, ErrNotFound) {
			t.Errorf("a signature failure reported as not found: %v", err)
		}
		if want := map[string]string{DNF: "GPG check FAILED", Zypper: "Signature verification failed"}[manager]; !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
		if v := installedVersion(t, ctx, m, "kthw-evil"); v != "" {
			t.Fatalf("kthw-evil %s installed", v)
		}
	})
	step("remove", func(t *testing.T) {
		err := m.Remove(ctx, []string{"kthw-hello", "kthw-nosuch"})
		// On Debian, zypper 1.14 removes the package but then fails to
		// re-cache the rpm database that Debian's rpm keeps in
		// ~/.rpmdb (exit 8, "Failed to cache rpm database"); openSUSE
		// does not do this. Accept exactly that, once the package is gone.
		if err != nil && !(manager == Zypper && strings.Contains(err.Error(), "Failed to cache rpm database")) {
			t.Fatal(err)
		}
		if err != nil {
			t.Logf("Debian zypper quirk: %v", err)
		}
		if v := installedVersion(t, ctx, m, "kthw-hello"); v != "" {
			t.Fatalf("still installed: %s", v)
		}
		if w.locks && isHeld(t, ctx, m, "kthw-hello") {
			t.Error("lock left behind after Remove")
		}
		if err := m.Remove(ctx, []string{"kthw-hello"}); err != nil {
			t.Fatalf("second Remove (nothing installed: no command): %v", err)
		}
	})
	t.Logf("%s: whole run %s", manager, time.Since(start).Round(time.Millisecond))
}
