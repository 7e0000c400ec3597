package lab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// Start boots the node described by spec and returns when its sshd answers on the node's
// address (bounded by Config.BootTimeout). A new node gets its directory and an overlay on the
// lab's current image; an existing one keeps its own image and disk. The spec's files are
// (re)written on every start. A running node is left alone; a crashed one is cleaned up (stale
// mount, link, orphaned processes) and booted again. The bridge must exist (EnsureNetwork);
// the node's apt goes through the lab's proxy (EnsureProxy).
//
// Start is safe to call for several nodes in parallel.
func (l *Lab) Start(ctx context.Context, spec NodeSpec) (_ NodeInfo, err error) {
	spec.setDefaults()
	pub, err := spec.validate()
	if err != nil {
		return NodeInfo{}, fmt.Errorf("start node: %w", err)
	}
	dir := l.nodeDir(spec.Name)
	if err := l.makeNodeDir(ctx, dir); err != nil {
		return NodeInfo{}, fmt.Errorf("start node %s: %w", spec.Name, err)
	}
	unlock, err := lockFile(ctx, filepath.Join(dir, nodeLock))
	if err != nil {
		return NodeInfo{}, fmt.Errorf("start node %s: %w", spec.Name, err)
	}
	defer unlock()

	rec, err := readRecord(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return NodeInfo{}, err
	}
	if rec == nil {
		// A new node that does not come up leaves nothing behind (its console's tail is in
		// the error).
		defer func() {
			if err != nil {
				ctx := context.WithoutCancel(ctx)
				unlock() // its file is in dir: an open file would keep the nodes mount busy
				if rerr := removeTree(dir); rerr != nil {
					err = errors.Join(err, rerr)
				} else if rerr := l.releaseNodesDir(ctx); rerr != nil {
					err = errors.Join(err, rerr)
				}
			}
		}()
	}
	root := filepath.Join(dir, mergedDir)
	if state, pid := l.state(dir); state == StateRunning {
		if rec != nil && rec.Address != spec.Address {
			return NodeInfo{}, fmt.Errorf("start node %s: running with address %s, not %s", spec.Name, rec.Address, spec.Address)
		}
		return l.info(spec.Name, dir, rec, state, pid), nil
	}
	if err := l.cleanup(ctx, dir, rec); err != nil {
		return NodeInfo{}, fmt.Errorf("start node %s: %w", spec.Name, err)
	}
	if err := l.checkBridge(); err != nil {
		return NodeInfo{}, fmt.Errorf("start node %s: %w", spec.Name, err)
	}
	if err := l.checkAddressFree(spec.Name, spec.Address); err != nil {
		return NodeInfo{}, err
	}

	image, layers := "", spec.Layers
	if rec != nil && rec.Image != "" {
		layers = rec.Layers
		for _, ly := range layers {
			if !isDir(ly) {
				return NodeInfo{}, fmt.Errorf("start node %s: its layer %s is gone; destroy and re-create the node", spec.Name, ly)
			}
		}
		if !isDir(rec.Image) {
			return NodeInfo{}, fmt.Errorf("start node %s: its image %s is gone; destroy and re-create the node", spec.Name, rec.Image)
		}
		image = rec.Image
	} else {
		img, err := l.EnsureImage(ctx)
		if err != nil {
			return NodeInfo{}, fmt.Errorf("start node %s: %w", spec.Name, err)
		}
		image = img.Dir
	}
	for _, d := range []string{upperDir, workDir, mergedDir} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return NodeInfo{}, fmt.Errorf("start node %s: %w", spec.Name, err)
		}
	}
	lower := strings.Join(append(slices.Clone(layers), image), ":")
	if err := mountOverlay(lower, filepath.Join(dir, upperDir), filepath.Join(dir, workDir), root); err != nil {
		return NodeInfo{}, fmt.Errorf("start node %s: %w", spec.Name, err)
	}
	created := time.Now().UTC()
	if rec != nil && !rec.Created.IsZero() {
		created = rec.Created
	}
	rec = &nodeRecord{
		Name: spec.Name, Hostname: spec.Hostname, Address: spec.Address, Gateway: spec.Gateway,
		HostPublicKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))),
		Image:         image, Layers: layers, Created: created,
	}
	fail := func(err error) (NodeInfo, error) {
		if cerr := l.stop(context.WithoutCancel(ctx), dir, rec); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return NodeInfo{}, err
	}
	_, archives, err := l.recipe()
	if err != nil {
		return fail(fmt.Errorf("start node %s: %w", spec.Name, err))
	}
	files := nodeFiles(spec, pub, aptProxy{url: l.ProxyURL(), hosts: archiveHosts(archives)}, dir)
	if err := writeNodeFiles(root, files); err != nil {
		return fail(fmt.Errorf("start node %s: %w", spec.Name, err))
	}
	if err := writeUsers(root, spec.Users); err != nil {
		return fail(fmt.Errorf("start node %s: %w", spec.Name, err))
	}
	if err := writeRecord(dir, rec); err != nil {
		return fail(err)
	}

	start := time.Now()
	pid, err := l.spawn(spec.Name, dir)
	if err != nil {
		return fail(err)
	}
	if err := l.waitSSH(ctx, spec.Name, pid, spec.Address.Addr(), filepath.Join(dir, consoleLog)); err != nil {
		return fail(err)
	}
	veth, err := l.vethOf(pid)
	if err != nil {
		return fail(fmt.Errorf("start node %s: %w", spec.Name, err))
	}
	rec.Veth = veth
	if err := writeRecord(dir, rec); err != nil {
		return fail(err)
	}
	l.log.InfoContext(ctx, "lab node up", "node", spec.Name, "address", spec.Address, "pid", pid,
		"took", time.Since(start).Round(time.Millisecond))
	return l.info(spec.Name, dir, rec, StateRunning, pid), nil
}

// Stop shuts a node down: SIGTERM to systemd-nspawn (the container's systemd halts), and when
// that does not end it within Config.StopTimeout, SIGKILL to the container's PID 1 (never to
// nspawn first: that would orphan the container). Then the overlay is unmounted. Stopping a
// stopped node is a no-op; a crashed one is cleaned up.
func (l *Lab) Stop(ctx context.Context, name string) error {
	dir := l.nodeDir(name)
	if !validName(name, 63) || !isDir(dir) {
		return fmt.Errorf("stop node %s: %w", name, ErrNotFound)
	}
	unlock, err := lockFile(ctx, filepath.Join(dir, nodeLock))
	if err != nil {
		return fmt.Errorf("stop node %s: %w", name, err)
	}
	defer unlock()
	rec, _ := readRecord(dir)
	return l.stop(ctx, dir, rec)
}

// Destroy stops a node and removes its directory (disk, keys, logs). A missing node is not an
// error.
func (l *Lab) Destroy(ctx context.Context, name string) error {
	if !validName(name, 63) {
		return fmt.Errorf("destroy node %q: invalid name", name)
	}
	dir := l.nodeDir(name)
	if !isDir(dir) {
		return l.releaseNodesDir(ctx)
	}
	unlock, err := lockFile(ctx, filepath.Join(dir, nodeLock))
	if err != nil {
		return fmt.Errorf("destroy node %s: %w", name, err)
	}
	defer unlock()
	rec, _ := readRecord(dir)
	if err := l.stop(ctx, dir, rec); err != nil {
		return fmt.Errorf("destroy node %s: %w", name, err)
	}
	if err := removeTree(dir); err != nil {
		return fmt.Errorf("destroy node %s: %w", name, err)
	}
	unlock() // its file was in dir: an open file would keep the nodes mount busy
	l.log.InfoContext(ctx, "lab node destroyed", "node", name)
	return l.releaseNodesDir(ctx)
}

// makeNodeDir creates a node's directory below the shared nodes mount (see ensureSharedMount).
// The lab lock orders it against releaseNodesDir.
func (l *Lab) makeNodeDir(ctx context.Context, dir string) error {
	if err := os.MkdirAll(l.cfg.Dir, 0o755); err != nil {
		return err
	}
	unlock, err := lockFile(ctx, filepath.Join(l.cfg.Dir, "lock"))
	if err != nil {
		return err
	}
	defer unlock()
	if err := os.MkdirAll(l.nodesDir(), 0o755); err != nil {
		return err
	}
	if err := ensureSharedMount(l.nodesDir()); err != nil {
		return err
	}
	return os.MkdirAll(dir, 0o700)
}

// releaseNodesDir unmounts the nodes directory's bind mount once no node is left.
func (l *Lab) releaseNodesDir(ctx context.Context) error {
	if !isDir(l.nodesDir()) {
		return nil
	}
	unlock, err := lockFile(ctx, filepath.Join(l.cfg.Dir, "lock"))
	if err != nil {
		return err
	}
	defer unlock()
	ents, err := os.ReadDir(l.nodesDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil || len(ents) > 0 {
		return err
	}
	if err := unmountAll(l.nodesDir()); err != nil {
		return fmt.Errorf("release %s: %w", l.nodesDir(), err)
	}
	return nil
}

// Status reports a node's state.
func (l *Lab) Status(ctx context.Context, name string) (NodeInfo, error) {
	dir := l.nodeDir(name)
	if !validName(name, 63) || !isDir(dir) {
		return NodeInfo{}, fmt.Errorf("node %s: %w", name, ErrNotFound)
	}
	rec, _ := readRecord(dir)
	state, pid := l.state(dir)
	return l.info(name, dir, rec, state, pid), nil
}

// List returns the nodes on disk, by name.
func (l *Lab) List(ctx context.Context) ([]NodeInfo, error) {
	ents, err := os.ReadDir(l.nodesDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	var out []NodeInfo
	for _, e := range ents {
		if !e.IsDir() || !validName(e.Name(), 63) {
			continue
		}
		n, err := l.Status(ctx, e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Leader returns the PID (in the host's PID namespace) of a running node's PID 1, e.g. for
// nsenter -t <pid> -a.
func (l *Lab) Leader(ctx context.Context, name string) (int, error) {
	n, err := l.Status(ctx, name)
	if err != nil {
		return 0, err
	}
	if n.State != StateRunning {
		return 0, fmt.Errorf("node %s is %s: %w", name, n.State, ErrNotRunning)
	}
	return leaderOf(n.PID)
}

// state reads a node's state from its pid file and /proc.
func (l *Lab) state(dir string) (State, int) {
	pid, err := readPIDFile(filepath.Join(dir, pidFile))
	switch {
	case err != nil:
		return StateCrashed, 0
	case pid == 0:
		return StateStopped, 0
	case isOurNspawn(pid, filepath.Join(dir, mergedDir)):
		return StateRunning, pid
	default:
		return StateCrashed, 0
	}
}

func (l *Lab) info(name, dir string, rec *nodeRecord, state State, pid int) NodeInfo {
	n := NodeInfo{Name: name, Dir: dir, State: state, PID: pid,
		Upper: filepath.Join(dir, upperDir), Root: filepath.Join(dir, mergedDir)}
	if rec != nil {
		n.Hostname, n.Address, n.Gateway = rec.Hostname, rec.Address, rec.Gateway
		n.HostPublicKey, n.Image, n.Layers = rec.HostPublicKey, rec.Image, rec.Layers
	}
	return n
}

// stop ends a node's processes and cleans up after it; the caller holds the node's lock.
func (l *Lab) stop(ctx context.Context, dir string, rec *nodeRecord) error {
	root := filepath.Join(dir, mergedDir)
	pid, _ := readPIDFile(filepath.Join(dir, pidFile))
	if isOurNspawn(pid, root) {
		start := time.Now()
		if err := signal(pid, syscall.SIGTERM); err != nil {
			return err
		}
		if !waitGone(ctx, pid, l.cfg.StopTimeout) {
			l.log.WarnContext(ctx, "lab node did not halt; killing its init", "dir", dir, "pid", pid)
			if leader, err := leaderOf(pid); err == nil {
				_ = signal(leader, syscall.SIGKILL)
			}
			if !waitGone(ctx, pid, 10*time.Second) {
				_ = signal(pid, syscall.SIGKILL) // nothing left to orphan
				waitGone(ctx, pid, 5*time.Second)
			}
		}
		l.log.DebugContext(ctx, "lab node stopped", "dir", dir, "took", time.Since(start).Round(time.Millisecond))
	}
	return l.cleanup(ctx, dir, rec)
}

// cleanup removes what a dead node leaves: an orphaned container (its nspawn was killed), the
// overlay mount, its host-side link, the pid file.
func (l *Lab) cleanup(ctx context.Context, dir string, rec *nodeRecord) error {
	var errs []error
	for _, pid := range orphans(dir) {
		l.log.WarnContext(ctx, "killing an orphaned lab container", "dir", dir, "pid", pid)
		_ = signal(pid, syscall.SIGKILL)
		if !waitGone(ctx, pid, 10*time.Second) {
			errs = append(errs, fmt.Errorf("kill orphaned container %d: still alive", pid))
		}
	}
	root := filepath.Join(dir, mergedDir)
	dev, _ := mountDev(root)
	if err := unmountAll(root); err != nil {
		errs = append(errs, err)
	} else if dev != 0 {
		// A dead container's mount namespace holds the overlay's superblock a little longer
		// (it syncs the node's writes); mounting the same upper dir again before it is gone
		// would share it between two overlays.
		waitSuperblockGone(ctx, dev, 30*time.Second)
	}
	if rec != nil && rec.Veth != "" {
		if err := deleteVeth(rec.Veth, l.cfg.Bridge); err != nil {
			errs = append(errs, err)
		}
	}
	// What a killed systemd-nspawn leaves on the host (it removes it on a normal exit).
	if err := os.Remove(filepath.Join(nspawnPropagateDir, filepath.Base(dir))); err != nil && !errors.Is(err, fs.ErrNotExist) {
		l.log.WarnContext(ctx, "cannot remove systemd-nspawn's propagation directory", "err", err)
	}
	if err := os.Remove(filepath.Join(dir, pidFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// orphans finds container inits running the node's tree: PID-namespace inits whose root holds
// the node's marker file.
func orphans(dir string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == 1 || !nsPID1(pid) {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/root%s", pid, markerFile))
		if err == nil && strings.TrimSpace(string(data)) == dir && alive(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// checkAddressFree fails when another node of the lab has addr.
func (l *Lab) checkAddressFree(name string, addr netip.Prefix) error {
	ents, err := os.ReadDir(l.nodesDir())
	if err != nil {
		return fmt.Errorf("check node addresses: %w", err)
	}
	for _, e := range ents {
		if e.Name() == name || !e.IsDir() {
			continue
		}
		rec, err := readRecord(filepath.Join(l.nodesDir(), e.Name()))
		if err == nil && rec.Address.Addr() == addr.Addr() {
			return fmt.Errorf("start node %s: address %s belongs to node %s", name, addr.Addr(), rec.Name)
		}
	}
	if addr.Addr() == l.Gateway() {
		return fmt.Errorf("start node %s: address %s is the bridge's", name, addr.Addr())
	}
	return nil
}
