// Package etcd is the controller's side of kubeadm's stacked etcd:
// snapshots kept in the workspace (store.go), their verification
// (verify.go: etcd's sha256 trailer and the manifest), and the parts of a
// restore that run here: the snapshot restored into a fresh data directory
// with etcdutl's own library (restore.go: revision bump and mark-compacted),
// the data directory packed for the node (archive.go), and the etcd
// static-pod manifest read and pointed at the new directory
// (podmanifest.go). The node half (manifests moved out and back, the
// directory swapped in) is the agent's etcd restore module.
//
// etcdutl's restore links etcd's server packages; keeping it here keeps
// the agent, which every node downloads, small (docs/etcd.md).
package etcd

import (
	"errors"

	"github.com/kthw/kthw/proto/kthw/agent/v1/etcdsnap"
)

// Errors callers may test for with errors.Is.
var (
	// ErrNoTrailer, ErrTrailerMismatch, ErrManifestMismatch: a snapshot
	// file that does not verify (see etcdsnap).
	ErrNoTrailer        = etcdsnap.ErrNoTrailer
	ErrTrailerMismatch  = etcdsnap.ErrTrailerMismatch
	ErrManifestMismatch = etcdsnap.ErrManifestMismatch
	// ErrPodManifest: the etcd static-pod manifest is not one kthw can
	// restore (not kubeadm's layout).
	ErrPodManifest = errors.New("unusable etcd static-pod manifest")
)
