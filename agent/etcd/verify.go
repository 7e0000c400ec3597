package etcd

import (
	"fmt"

	"github.com/kthw/kthw/proto/kthw/agent/v1/etcdsnap"
)

// Verified is what Verify found: the file (etcdsnap.Verified) and the
// store's revision in it.
type Verified struct {
	etcdsnap.Verified
	// Revision is the store's revision in the snapshot.
	Revision int64
}

// Verify checks the snapshot file at path as etcdsnap.Verify does (etcd's
// sha256 trailer, the manifest beside it) and reads the revision it holds.
func Verify(path string) (*Verified, error) {
	v, err := etcdsnap.Verify(path)
	if err != nil {
		return nil, err
	}
	rev, err := snapshotRevision(path)
	if err != nil {
		return nil, fmt.Errorf("verify snapshot: %w", err)
	}
	return &Verified{Verified: *v, Revision: rev}, nil
}
