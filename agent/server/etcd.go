package server

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/kthw/kthw/agent/etcd"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// ListEtcdSnapshots lists the etcd snapshots in a directory of the node.
func (s *Server) ListEtcdSnapshots(_ context.Context, req *agentv1.ListEtcdSnapshotsRequest) (*agentv1.ListEtcdSnapshotsResponse, error) {
	dir := req.GetDir()
	if dir == "" {
		dir = etcd.DefaultDir
	}
	if !filepath.IsAbs(dir) || filepath.Clean(dir) != dir {
		return nil, toStatus(fmt.Errorf("%w: dir %q is not absolute and clean", errInvalid, dir))
	}
	list, err := etcd.List(s.root, dir)
	if err != nil {
		return nil, toStatus(err)
	}
	return &agentv1.ListEtcdSnapshotsResponse{Dir: dir, Snapshots: list}, nil
}
