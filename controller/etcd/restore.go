package etcd

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/kthw/kthw/proto/kthw/agent/v1/etcdsnap"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.uber.org/zap"
)

// DefaultRevisionBump is how far a restore moves the revision forward, as
// the Kubernetes documentation recommends for etcdutl's --bump-revision:
// clients (the apiserver's watch cache, controllers) never see revisions
// go backwards, and the bumped revision is marked compacted so that they
// relist instead of watching from a revision that no longer exists.
const DefaultRevisionBump = 1_000_000_000

// DefaultInitialClusterToken is etcd's default, which kubeadm keeps.
const DefaultInitialClusterToken = "etcd-cluster"

// Member is the etcd member a data directory is restored for: kubeadm's
// --name and --initial-advertise-peer-urls of that node.
type Member struct {
	Name     string
	PeerURLs []string
	// InitialClusterToken; default DefaultInitialClusterToken.
	InitialClusterToken string
}

// RestoreOptions configure RestoreDataDir.
type RestoreOptions struct {
	// Snapshot is the snapshot file; it must verify (Verify).
	Snapshot string
	// DataDir is the data directory to create; it must not exist.
	DataDir string
	// Member is the one member of the restored cluster.
	Member Member
	// RevisionBump moves the revision forward and marks it compacted;
	// 0 turns both off. Callers usually pass DefaultRevisionBump.
	RevisionBump uint64
	// Logger receives etcdutl's log; nil discards it.
	Logger *zap.Logger
}

// Restored describes a restored data directory.
type Restored struct {
	Verified *etcdsnap.Verified
	Took     time.Duration
}

// RestoreDataDir verifies the snapshot, then restores it into o.DataDir
// with etcdutl's own restore (etcdutl/v3/snapshot: the database copied and
// checked against etcd's trailer, membership replaced by o.Member, the
// revision bumped and marked compacted, a new WAL and raft snapshot). It
// restores into a staging directory next to DataDir and renames it only
// when etcdutl succeeded: a failed restore leaves nothing.
func RestoreDataDir(o RestoreOptions) (*Restored, error) {
	start := time.Now()
	v, err := etcdsnap.Verify(o.Snapshot)
	if err != nil {
		return nil, fmt.Errorf("refusing to restore: %w", err)
	}
	if o.Member.Name == "" || len(o.Member.PeerURLs) == 0 {
		return nil, errors.New("restore snapshot: the member needs a name and peer URLs")
	}
	if _, err := os.Lstat(o.DataDir); err == nil {
		return nil, fmt.Errorf("restore snapshot: data directory %s exists already", o.DataDir)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("restore snapshot: %w", err)
	}
	token := o.Member.InitialClusterToken
	if token == "" {
		token = DefaultInitialClusterToken
	}
	var cluster []string
	for _, u := range o.Member.PeerURLs {
		cluster = append(cluster, o.Member.Name+"="+u)
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	stage := o.DataDir + ".part-" + hex.EncodeToString(rnd[:])
	defer os.RemoveAll(stage)
	lg := o.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	err = snapshot.NewV3(lg).Restore(snapshot.RestoreConfig{
		SnapshotPath:        o.Snapshot,
		Name:                o.Member.Name,
		OutputDataDir:       stage,
		PeerURLs:            o.Member.PeerURLs,
		InitialCluster:      strings.Join(cluster, ","),
		InitialClusterToken: token,
		InitialMmapSize:     backend.InitialMmapSize,
		RevisionBump:        o.RevisionBump,
		MarkCompacted:       o.RevisionBump > 0,
	})
	if err != nil {
		return nil, fmt.Errorf("restore snapshot %s: %w", o.Snapshot, err)
	}
	if err := os.Rename(stage, o.DataDir); err != nil {
		return nil, fmt.Errorf("restore snapshot: %w", err)
	}
	if d, err := os.Open(filepath.Dir(o.DataDir)); err == nil {
		d.Sync()
		d.Close()
	}
	return &Restored{Verified: v, Took: time.Since(start)}, nil
}
