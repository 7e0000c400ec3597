package etcd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pmezard/go-difflib/difflib"
)

// Static-pod manifest file names kubeadm writes.
const (
	EtcdManifest      = "etcd.yaml"
	APIServerManifest = "kube-apiserver.yaml"
	// origSuffix names the etcd manifest as it was before the restore, kept
	// in the holding directory.
	origSuffix = ".orig"
)

// Restore defaults.
const (
	DefaultStopTimeout = 120 * time.Second
	defaultWatchAddr   = "127.0.0.1:2379"
)

// ErrManifestChanged: the node's etcd manifest is not the one the restore
// was prepared from.
var ErrManifestChanged = errors.New("etcd manifest changed")

// RestoreOptions are the node half of a kubeadm stacked-etcd restore. The
// controller restored the snapshot into a data directory (etcdutl's
// library) and sent it as Archive; this side swaps it in.
type RestoreOptions struct {
	// Root prefixes every node path (tests); "" means /.
	Root string
	// Archive is the local path of the gzip'd tar of the restored data
	// directory (a blob; not under Root).
	Archive string
	// DataDir is the new data directory (node path); it must not exist.
	DataDir string
	// ManifestDir is the kubelet's static-pod directory; default
	// DefaultManifestDir.
	ManifestDir string
	// HoldingDir keeps the manifests while etcd is down and the original
	// etcd manifest afterwards; default <ManifestDir>/../kthw-etcd-restore.
	HoldingDir string
	// EtcdManifest is the etcd manifest to install; EtcdManifestSHA256 is
	// the sha256 of the one it was made from.
	EtcdManifest       []byte
	EtcdManifestSHA256 string
	// WatchAddr is the host:port watched until etcd stopped listening;
	// default 127.0.0.1:2379.
	WatchAddr string
	// StopTimeout bounds the wait for etcd to stop; default
	// DefaultStopTimeout.
	StopTimeout time.Duration
	// Log receives a line per step.
	Log func(string)
}

func (o *RestoreOptions) setDefaults() {
	if o.ManifestDir == "" {
		o.ManifestDir = DefaultManifestDir
	}
	if o.HoldingDir == "" {
		o.HoldingDir = filepath.Join(filepath.Dir(o.ManifestDir), "kthw-etcd-restore")
	}
	if o.WatchAddr == "" {
		o.WatchAddr = defaultWatchAddr
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = DefaultStopTimeout
	}
	if o.Log == nil {
		o.Log = func(string) {}
	}
}

func (o *RestoreOptions) path(p string) string { return filepath.Join(o.Root, p) }

// RestorePlan is what a restore will do (or did).
type RestorePlan struct {
	// Done is true when the node already runs etcd from DataDir with the
	// new manifest: nothing to do.
	Done bool
	// Resume is true when an earlier run moved the manifests out and
	// stopped; the restore continues from there.
	Resume bool
	// Diff describes the change: the steps and the manifest's diff.
	Diff string
}

// PlanRestore checks that the restore can run on this node and describes
// it, changing nothing.
func PlanRestore(o RestoreOptions) (*RestorePlan, error) {
	o.setDefaults()
	for _, p := range []string{o.DataDir, o.ManifestDir, o.HoldingDir} {
		if !filepath.IsAbs(p) || filepath.Clean(p) != p || p == "/" {
			return nil, fmt.Errorf("restore etcd: %q is not an absolute, clean path", p)
		}
	}
	live := o.path(filepath.Join(o.ManifestDir, EtcdManifest))
	held := o.path(filepath.Join(o.HoldingDir, EtcdManifest))
	newSum := sha256Hex(o.EtcdManifest)
	plan := &RestorePlan{}
	cur, err := os.ReadFile(live)
	switch {
	case err == nil:
		sum := sha256Hex(cur)
		if sum == newSum && exists(o.path(o.DataDir)) {
			plan.Done = true
			return plan, nil
		}
		if sum != o.EtcdManifestSHA256 {
			return nil, fmt.Errorf("%w: %s has sha256 %s, the restore was prepared from %s: read it again (run the restore again)",
				ErrManifestChanged, filepath.Join(o.ManifestDir, EtcdManifest), sum, o.EtcdManifestSHA256)
		}
	case errors.Is(err, fs.ErrNotExist):
		// An earlier run may have stopped with the manifests held.
		held, herr := os.ReadFile(held)
		if herr != nil {
			return nil, fmt.Errorf("restore etcd: no static-pod manifest %s (is this a kubeadm control-plane node with stacked etcd?)",
				filepath.Join(o.ManifestDir, EtcdManifest))
		}
		if s := sha256Hex(held); s != o.EtcdManifestSHA256 && s != newSum {
			return nil, fmt.Errorf("%w: the held %s has sha256 %s, the restore was prepared from %s",
				ErrManifestChanged, filepath.Join(o.HoldingDir, EtcdManifest), s, o.EtcdManifestSHA256)
		}
		plan.Resume = true
		cur = held
	default:
		return nil, fmt.Errorf("restore etcd: %w", err)
	}
	if !plan.Resume && exists(o.path(o.DataDir)) {
		return nil, fmt.Errorf("restore etcd: data directory %s exists already; restore into a new one", o.DataDir)
	}
	if fi, err := os.Stat(o.path(filepath.Dir(o.DataDir))); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("restore etcd: the parent of data directory %s is missing or not a directory", o.DataDir)
	}
	var b strings.Builder
	if plan.Resume {
		fmt.Fprintf(&b, "resume an interrupted restore (manifests held in %s)\n", o.HoldingDir)
	}
	if !exists(o.path(o.DataDir)) {
		fmt.Fprintf(&b, "unpack the restored data directory into %s\n", o.DataDir)
	}
	fmt.Fprintf(&b, "move %s and %s from %s to %s; wait until etcd stopped listening on %s\n",
		APIServerManifest, EtcdManifest, o.ManifestDir, o.HoldingDir, o.WatchAddr)
	diff, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: difflib.SplitLines(string(cur)), B: difflib.SplitLines(string(o.EtcdManifest)),
		FromFile: filepath.Join(o.ManifestDir, EtcdManifest), ToFile: filepath.Join(o.ManifestDir, EtcdManifest), Context: 2,
	})
	b.WriteString(diff)
	fmt.Fprintf(&b, "move %s, then %s back into %s\n", EtcdManifest, APIServerManifest, o.ManifestDir)
	plan.Diff = b.String()
	return plan, nil
}

// ApplyRestore swaps the restored data directory in, following kubeadm's
// procedure: unpack the data directory (before anything stops), move the
// kube-apiserver and etcd manifests out of the manifest directory, wait
// until etcd stopped listening, install the new etcd manifest (the old one
// is kept as <holding>/etcd.yaml.orig), and move etcd's then the
// apiserver's manifest back. When etcd does not stop in time, the
// manifests go back as they were and the new data directory is removed.
// A second run after success changes nothing.
func ApplyRestore(ctx context.Context, o RestoreOptions) (*RestorePlan, error) {
	o.setDefaults()
	plan, err := PlanRestore(o)
	if err != nil || plan.Done {
		return plan, err
	}
	dataDir := o.path(o.DataDir)
	createdData := false
	if !exists(dataDir) {
		f, err := os.Open(o.Archive)
		if err != nil {
			return nil, fmt.Errorf("restore etcd: open data archive: %w", err)
		}
		files, n, err := Extract(f, dataDir)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("restore etcd: %w", err)
		}
		createdData = true
		o.Log(fmt.Sprintf("unpacked %d files (%d bytes) into %s", files, n, o.DataDir))
	}
	hold := o.path(o.HoldingDir)
	mdir := o.path(o.ManifestDir)
	if err := os.MkdirAll(hold, 0o700); err != nil {
		return nil, fmt.Errorf("restore etcd: create %s: %w", o.HoldingDir, err)
	}
	// Out: the apiserver first, so that it stops using etcd, then etcd.
	moved, err := moveAll(mdir, hold, APIServerManifest, EtcdManifest)
	if err != nil {
		return nil, fmt.Errorf("restore etcd: %w", err)
	}
	for _, m := range moved {
		o.Log(fmt.Sprintf("moved %s to %s", m, o.HoldingDir))
	}
	if err := waitStopped(ctx, o.WatchAddr, o.StopTimeout); err != nil {
		// Put everything back as it was.
		_, berr := moveAll(hold, mdir, EtcdManifest, APIServerManifest)
		if createdData {
			os.RemoveAll(dataDir)
		}
		if berr != nil {
			return nil, fmt.Errorf("restore etcd: %w; and moving the manifests back failed: %w", err, berr)
		}
		return nil, fmt.Errorf("restore etcd: %w; the manifests are back in %s and nothing changed", err, o.ManifestDir)
	}
	o.Log("etcd stopped listening on " + o.WatchAddr)
	heldEtcd := filepath.Join(hold, EtcdManifest)
	cur, err := os.ReadFile(heldEtcd)
	if err != nil {
		return nil, fmt.Errorf("restore etcd: %w", err)
	}
	if sha256Hex(cur) == o.EtcdManifestSHA256 {
		fi, err := os.Stat(heldEtcd)
		if err != nil {
			return nil, fmt.Errorf("restore etcd: %w", err)
		}
		if err := writeFileAtomic(heldEtcd+origSuffix, cur, fi.Mode().Perm()); err != nil {
			return nil, fmt.Errorf("restore etcd: keep the original manifest: %w", err)
		}
		if err := writeFileAtomic(heldEtcd, o.EtcdManifest, fi.Mode().Perm()); err != nil {
			return nil, fmt.Errorf("restore etcd: write the new manifest: %w", err)
		}
		o.Log(fmt.Sprintf("pointed the etcd manifest at %s (the original is %s)", o.DataDir, filepath.Join(o.HoldingDir, EtcdManifest+origSuffix)))
	}
	// Back: etcd first, so that the apiserver finds it.
	back, err := moveAll(hold, mdir, EtcdManifest, APIServerManifest)
	if err != nil {
		return nil, fmt.Errorf("restore etcd: %w (the manifests wait in %s)", err, o.HoldingDir)
	}
	for _, m := range back {
		o.Log(fmt.Sprintf("moved %s back to %s", m, o.ManifestDir))
	}
	return plan, nil
}

// moveAll renames the named files that exist in from into to, in order,
// and syncs both directories.
func moveAll(from, to string, names ...string) ([]string, error) {
	var moved []string
	for _, n := range names {
		src := filepath.Join(from, n)
		if !exists(src) {
			continue
		}
		if err := os.Rename(src, filepath.Join(to, n)); err != nil {
			return moved, fmt.Errorf("move %s: %w", n, err)
		}
		moved = append(moved, n)
	}
	for _, d := range []string{from, to} {
		if err := syncDir(d); err != nil {
			return moved, fmt.Errorf("sync %s: %w", d, err)
		}
	}
	return moved, nil
}

// waitStopped waits until nothing accepts connections at addr. When ctx
// ends first, the error wraps ctx's.
func waitStopped(ctx context.Context, addr string, timeout time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		d := net.Dialer{Timeout: time.Second}
		c, err := d.DialContext(wctx, "tcp", addr)
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return nil // stopped
		case err == nil:
			c.Close()
		}
		select {
		case <-wctx.Done():
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("wait for etcd to stop: %w", err)
			}
			return fmt.Errorf("etcd still listens on %s %s after its manifest was moved out (is the kubelet running?)", addr, timeout)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
