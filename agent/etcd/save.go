package etcd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/kthw/kthw/proto/kthw/agent/v1/etcdsnap"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// SaveOptions configure Save.
type SaveOptions struct {
	Endpoint Endpoint
	// Dir is where snapshots are kept on the node; default DefaultDir.
	// It is created (0700) when missing.
	Dir string
	// Keep is how many snapshots Dir keeps, the new one included; 0 keeps
	// all.
	Keep int
	// Root prefixes Dir and the certificate paths (tests); "" means /.
	Root string
	// Node names the node in the manifest; default the host name.
	Node string
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Progress, when set, is called as data arrives; total is an estimate
	// (the member's database size) and 0 when unknown.
	Progress func(done, total int64)
}

// Saved is a snapshot Save wrote.
type Saved struct {
	// Path of the snapshot on the node (without Root).
	Path     string
	Manifest *agentv1.EtcdSnapshotManifest
	// Pruned are the snapshots retention removed.
	Pruned []string
	Took   time.Duration
}

// Save fetches a snapshot from the one member at o.Endpoint and keeps it in
// o.Dir, the way etcd's client/v3/snapshot SaveWithVersion does: a .part
// file (0600) written from the snapshot stream, etcd's sha256 trailer
// checked (SaveWithVersion checks only that there is room for it; Save
// compares it with the content too), fsync, rename, and the directory
// synced. A manifest (<snapshot>.json) is written next to it, then
// retention keeps the newest o.Keep. On any error nothing is left behind
// but the snapshots that were there before.
func Save(ctx context.Context, o SaveOptions) (*Saved, error) {
	start := time.Now()
	if o.Dir == "" {
		o.Dir = DefaultDir
	}
	if !filepath.IsAbs(o.Dir) {
		return nil, fmt.Errorf("save snapshot: directory %q is not absolute", o.Dir)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Node == "" {
		o.Node, _ = os.Hostname()
	}
	o.Endpoint.Root = o.Root
	ep := o.Endpoint.WithDefaults()
	dir := filepath.Join(o.Root, o.Dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("save snapshot: create directory: %w", err)
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("save snapshot: %w", err)
	}
	defer unlock()
	removeStaleParts(dir)

	cli, st, err := ep.connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("save snapshot: %w", err)
	}
	defer cli.Close()
	m := &agentv1.EtcdSnapshotManifest{
		Node:        o.Node,
		Endpoint:    ep.URL,
		MemberId:    memberID(st.Header.GetMemberId()),
		ClusterId:   memberID(st.Header.GetClusterId()),
		EtcdVersion: st.Version,
	}
	m.MemberName = memberName(ctx, cli, ep, st.Header.GetMemberId())

	now := o.Now().UTC()
	name, err := freeName(dir, now)
	if err != nil {
		return nil, fmt.Errorf("save snapshot: %w", err)
	}
	final := filepath.Join(dir, name)
	sum, size, rev, version, err := fetch(ctx, cli, ep, final, st.DbSize+sha256.Size, o.Progress)
	if err != nil {
		return nil, fmt.Errorf("save snapshot: %w", err)
	}
	m.Name, m.Time = name, now.Format(time.RFC3339Nano)
	m.Revision, m.StorageVersion = rev, version
	m.Size, m.Sha256 = size, sum
	if err := writeFileAtomic(etcdsnap.ManifestPath(final), etcdsnap.MarshalManifest(m), 0o600); err != nil {
		os.Remove(final)
		syncDir(dir)
		return nil, fmt.Errorf("save snapshot: write manifest: %w", err)
	}
	saved := &Saved{Path: filepath.Join(o.Dir, name), Manifest: m}
	saved.Pruned, err = Prune(o.Root, o.Dir, o.Keep)
	saved.Took = time.Since(start)
	if err != nil {
		return saved, fmt.Errorf("save snapshot: saved %s, but %w", saved.Path, err)
	}
	return saved, nil
}

// fetch streams the snapshot into final+".part", checks etcd's trailer,
// syncs and renames it to final, and returns the file's sha256 and size.
// The .part file is gone when it returns, whatever happened.
func fetch(ctx context.Context, cli *clientv3.Client, ep Endpoint, final string, estimate int64, progress func(done, total int64)) (sum string, size, rev int64, version string, err error) {
	part := final + ".part"
	f, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return "", 0, 0, "", fmt.Errorf("create %s: %w", part, err)
	}
	defer func() {
		f.Close()
		os.Remove(part)
	}()
	resp, err := cli.SnapshotWithVersion(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return "", 0, 0, "", ctx.Err()
		}
		return "", 0, 0, "", fmt.Errorf("open snapshot stream: %w", ep.explain(err))
	}
	defer resp.Snapshot.Close()
	th, whole := etcdsnap.NewTrailerHash(), sha256.New()
	w := &fileWriter{f: f, path: part}
	size, err = copyProgress(io.MultiWriter(w, th, whole), resp.Snapshot, estimate, progress)
	if err != nil {
		if w.err != nil {
			return "", 0, 0, "", w.err
		}
		if ctx.Err() != nil {
			return "", 0, 0, "", ctx.Err()
		}
		return "", 0, 0, "", fmt.Errorf("receive snapshot from %s: %w", ep.URL, err)
	}
	if err := th.Check("the snapshot etcd sent"); err != nil {
		return "", 0, 0, "", err
	}
	if err := f.Sync(); err != nil {
		return "", 0, 0, "", fmt.Errorf("sync %s: %w", part, err)
	}
	if err := f.Close(); err != nil {
		return "", 0, 0, "", fmt.Errorf("close %s: %w", part, err)
	}
	if rev, err = snapshotRevision(part); err != nil {
		return "", 0, 0, "", err
	}
	if err := os.Rename(part, final); err != nil {
		return "", 0, 0, "", fmt.Errorf("rename %s to %s: %w", part, final, err)
	}
	if err := syncDir(filepath.Dir(final)); err != nil {
		os.Remove(final)
		return "", 0, 0, "", fmt.Errorf("sync directory: %w", err)
	}
	return hex.EncodeToString(whole.Sum(nil)), size, rev, resp.Version, nil
}

// fileWriter remembers a write error, so that a full disk is reported as
// such and not as a broken stream.
type fileWriter struct {
	f    *os.File
	path string
	err  error
}

func (w *fileWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	if err != nil {
		w.err = fmt.Errorf("write snapshot: %w", err)
		return n, w.err
	}
	return n, nil
}

// progressEvery is how often (in bytes) copyProgress reports.
const progressEvery = 1 << 20

func copyProgress(w io.Writer, r io.Reader, total int64, progress func(done, total int64)) (int64, error) {
	if progress == nil {
		return io.Copy(w, r)
	}
	buf := make([]byte, 256<<10)
	var done, last int64
	progress(0, total)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return done, werr
			}
			done += int64(n)
			if done-last >= progressEvery {
				progress(done, max(total, done))
				last = done
			}
		}
		if errors.Is(err, io.EOF) {
			progress(done, done)
			return done, nil
		}
		if err != nil {
			return done, err
		}
	}
}

// freeName returns a snapshot file name for t that is not taken in dir.
func freeName(dir string, t time.Time) (string, error) {
	base := namePrefix + t.Format(timeLayout)
	for i := 1; i < 100; i++ {
		name := base + nameSuffix
		if i > 1 {
			name = base + "-" + strconv.Itoa(i) + nameSuffix
		}
		if _, err := os.Lstat(filepath.Join(dir, name)); errors.Is(err, fs.ErrNotExist) {
			return name, nil
		}
	}
	return "", fmt.Errorf("no free snapshot name for %s in %s", base, dir)
}

// removeStaleParts removes the .part files of snapshot runs that died; the
// caller holds the directory's lock, so no live run owns one.
func removeStaleParts(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if n := e.Name(); strings.HasPrefix(n, namePrefix) && strings.HasSuffix(n, ".part") {
			os.Remove(filepath.Join(dir, n))
		}
	}
}

// memberName asks the member list for the name of member id; "" when it
// cannot tell.
func memberName(ctx context.Context, cli *clientv3.Client, ep Endpoint, id uint64) string {
	ctx, cancel := context.WithTimeout(ctx, ep.DialTimeout)
	defer cancel()
	resp, err := cli.MemberList(ctx, clientv3.WithSerializable())
	if err != nil {
		return ""
	}
	for _, m := range resp.Members {
		if m.ID == id {
			return m.Name
		}
	}
	return ""
}

// memberID formats an etcd ID as etcdctl prints it.
func memberID(id uint64) string { return strconv.FormatUint(id, 16) }
