package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Image is a built root filesystem in the cache.
type Image struct {
	Recipe string
	Hash   string
	// Dir is the tree, <ImageDir>/<Hash>; nodes use it read-only as their overlay's lower dir.
	Dir string
	// Built is true when this call built it (false: it was cached).
	Built bool
	// BuildTime is how long the build took (zero when cached).
	BuildTime time.Duration
}

// tmpPrefix starts the name of an image build in progress inside ImageDir.
const tmpPrefix = ".tmp-"

// recipe loads the lab's recipe and resolves its archives against the host's apt sources.
func (l *Lab) recipe() (*Recipe, []ResolvedArchive, error) {
	r, err := LoadRecipe(l.cfg.Recipes, l.cfg.Recipe)
	if err != nil {
		return nil, nil, err
	}
	sources, err := ReadAptSources(l.cfg.AptDir)
	if err != nil {
		return nil, nil, err
	}
	archives, err := ResolveArchives(r, sources)
	if err != nil {
		return nil, nil, err
	}
	return r, archives, nil
}

// NodeOS is the release the lab's nodes run (its recipe's os); zero when
// the recipe does not say.
func (l *Lab) NodeOS() (RecipeOS, error) {
	r, err := LoadRecipe(l.cfg.Recipes, l.cfg.Recipe)
	if err != nil {
		return RecipeOS{}, err
	}
	return r.OS, nil
}

// EnsureImage returns the lab's root filesystem, building it with mmdebstrap when the cache
// has none for the current recipe and host mirrors. A build goes to a temporary directory
// beside the cache and is renamed into place when complete, so a crash never leaves a partial
// image; the next build removes stale temporary directories. Builds are serialized by a lock
// file, across processes too.
func (l *Lab) EnsureImage(ctx context.Context) (Image, error) {
	r, archives, err := l.recipe()
	if err != nil {
		return Image{}, err
	}
	img := Image{Recipe: r.Name, Hash: r.Hash(archives)}
	img.Dir = filepath.Join(l.cfg.ImageDir, img.Hash)
	if isDir(img.Dir) {
		return img, nil
	}
	if err := os.MkdirAll(l.cfg.ImageDir, 0o755); err != nil {
		return Image{}, fmt.Errorf("build image: %w", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(l.cfg.ImageDir, ".lock"))
	if err != nil {
		return Image{}, fmt.Errorf("build image: %w", err)
	}
	defer unlock()
	if isDir(img.Dir) { // built by someone else while we waited
		return img, nil
	}
	// Holding the lock, every temporary directory is a dead build's.
	if err := l.removeStaleBuilds(); err != nil {
		return Image{}, err
	}
	start := time.Now()
	if err := l.build(ctx, r, archives, img); err != nil {
		return Image{}, err
	}
	img.Built, img.BuildTime = true, time.Since(start)
	l.log.InfoContext(ctx, "lab image built", "recipe", r.Name, "hash", img.Hash, "took", img.BuildTime.Round(time.Millisecond))
	return img, nil
}

func (l *Lab) build(ctx context.Context, r *Recipe, archives []ResolvedArchive, img Image) error {
	tmp, err := os.MkdirTemp(l.cfg.ImageDir, tmpPrefix+img.Hash+"-")
	if err != nil {
		return fmt.Errorf("build image: %w", err)
	}
	// mmdebstrap wants an empty target directory readable by all (it becomes the image's /).
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("build image: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			if err := removeTree(tmp); err != nil {
				l.log.Warn("lab image: leaving failed build for the next run", "dir", tmp, "err", err)
			}
		}
	}()
	logPath := filepath.Join(l.cfg.ImageDir, "build-"+img.Hash+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("build image: %w", err)
	}
	defer logf.Close()

	args := mmdebstrapArgs(r, archives, tmp)
	l.log.InfoContext(ctx, "building lab image", "recipe", r.Name, "hash", img.Hash, "log", logPath)
	cmd := exec.CommandContext(ctx, l.cfg.Mmdebstrap, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "DEBIAN_FRONTEND=noninteractive")
	// A private mount namespace: whatever mmdebstrap mounts inside the tree (proc, sys, dev)
	// disappears with it, even when it is killed. A PID namespace with mmdebstrap as its init:
	// killing mmdebstrap (on cancel, or when we die) kills apt and dpkg too.
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Unshareflags: syscall.CLONE_NEWNS,
		Cloneflags:   syscall.CLONE_NEWPID,
		Pdeathsig:    syscall.SIGKILL,
	}
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build image %s with mmdebstrap: %w\n%s", r.Name, err, tailFile(logPath, 20))
	}
	if err := os.Rename(tmp, img.Dir); err != nil {
		return fmt.Errorf("build image: %w", err)
	}
	ok = true
	return syncDir(l.cfg.ImageDir)
}

// mmdebstrapArgs renders the mmdebstrap command line for r into target.
func mmdebstrapArgs(r *Recipe, archives []ResolvedArchive, target string) []string {
	args := []string{
		"--mode=root", "--format=directory",
		"--variant=" + r.Variant,
		"--components=" + strings.Join(r.Components, ","),
	}
	if len(r.Include) > 0 {
		args = append(args, "--include="+strings.Join(r.Include, ","))
	}
	for _, h := range r.customizeHooks() {
		args = append(args, "--customize-hook="+h)
	}
	args = append(args, r.Suite, target)
	for _, a := range archives {
		args = append(args, a.SourceLines()...)
	}
	return args
}

// removeStaleBuilds removes the temporary directories of earlier, dead builds.
func (l *Lab) removeStaleBuilds() error {
	entries, err := os.ReadDir(l.cfg.ImageDir)
	if err != nil {
		return fmt.Errorf("clean image cache: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), tmpPrefix) {
			continue
		}
		p := filepath.Join(l.cfg.ImageDir, e.Name())
		l.log.Info("lab image: removing an interrupted build", "dir", p)
		if err := removeTree(p); err != nil {
			return fmt.Errorf("clean image cache: %w", err)
		}
	}
	return nil
}

// lockFile takes an exclusive flock on path, waiting until ctx is done. The returned function
// releases it (calling it again is a no-op). A holder's death releases the lock.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	// Holders are mostly brief (a node's directory made, a record read), so the wait starts
	// short and backs off to 100 ms.
	wait := time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			var once sync.Once
			return func() { once.Do(func() { f.Close() }) }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// tailFile returns the last n lines of a file, for error messages.
func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "--- " + path + " (last lines) ---\n" + strings.Join(lines, "\n")
}
