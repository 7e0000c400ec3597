// Package etcd is the node side of kubeadm's stacked etcd: snapshots saved
// on the node the way etcd's own client/v3/snapshot saves them (one
// endpoint, a .part file, etcd's sha256 trailer checked, fsync, rename),
// each with a manifest and kept to a retention count; their listing and
// verification; the member's status; and the node half of a restore (the
// static-pod manifests moved out and back, the restored data directory put
// in place).
//
// It uses go.etcd.io/etcd/client/v3 only. The restore itself (etcdutl's
// library, which links etcd's server packages) runs on the controller, so
// the agent stays small; see docs/etcd.md.
//
// Files, one concern each: endpoint.go (how to reach etcd), client.go
// (connecting, and errors that say what is wrong), save.go (a snapshot),
// verify.go (etcdsnap's checks of a file, and its revision), revision.go (a
// snapshot's revision), manifest.go (crash-safe writes of manifests),
// list.go, retention.go, lock.go, status.go, restore.go and archive.go (the
// node half of a restore). The file format itself, etcd's trailer and the
// manifest, is package etcdsnap's, shared with the controller.
package etcd

import (
	"errors"

	"github.com/kthw/kthw/proto/kthw/agent/v1/etcdsnap"
)

// Defaults: kubeadm's stacked etcd and where kthw keeps snapshots.
const (
	DefaultEndpoint = "https://127.0.0.1:2379"
	// DefaultPKIDir holds kubeadm's etcd CA and certificates.
	DefaultPKIDir = "/etc/kubernetes/pki/etcd"
	// DefaultDir is where snapshots are kept on the node.
	DefaultDir = "/var/lib/kthw/etcd-snapshots"
	// DefaultManifestDir is the kubelet's static-pod directory.
	DefaultManifestDir = "/etc/kubernetes/manifests"
)

// Errors callers may test for with errors.Is.
var (
	// ErrUnreachable: nothing answered at the endpoint (wrong URL, etcd
	// down, a firewall).
	ErrUnreachable = errors.New("etcd unreachable")
	// ErrTLS: the certificates could not be loaded, or the TLS handshake
	// with etcd failed (wrong CA, a client certificate etcd does not
	// trust).
	ErrTLS = errors.New("etcd TLS")
	// ErrNoTrailer, ErrTrailerMismatch, ErrManifestMismatch: a snapshot
	// file that does not verify (see etcdsnap).
	ErrNoTrailer        = etcdsnap.ErrNoTrailer
	ErrTrailerMismatch  = etcdsnap.ErrTrailerMismatch
	ErrManifestMismatch = etcdsnap.ErrManifestMismatch
	// ErrBusy: another snapshot is being written into the same directory.
	ErrBusy = errors.New("snapshot directory busy")
)
