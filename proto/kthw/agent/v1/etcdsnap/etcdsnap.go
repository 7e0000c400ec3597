// Package etcdsnap is the on-disk form of the etcd snapshots agents write on
// nodes and controllers pull back and restore: etcd's own snapshot file (the
// bbolt database followed by the sha256 of that database, etcd's trailer)
// and the manifest kthw keeps beside it (<file>.json, protojson of
// EtcdSnapshotManifest). Both ends verify files with it.
package etcdsnap

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"

	"google.golang.org/protobuf/encoding/protojson"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// Errors callers may test for with errors.Is.
var (
	// ErrNoTrailer: the file's size does not leave room for etcd's sha256
	// trailer: it is truncated, or not an etcd snapshot.
	ErrNoTrailer = errors.New("no sha256 trailer")
	// ErrTrailerMismatch: the sha256 of the file's content differs from
	// its trailer: the file is corrupted.
	ErrTrailerMismatch = errors.New("sha256 trailer mismatch")
	// ErrManifestMismatch: the file's size or sha256 differs from what its
	// manifest recorded.
	ErrManifestMismatch = errors.New("snapshot does not match its manifest")
)

// HasTrailer reports whether a file of size n has room for etcd's trailer:
// the bbolt database's size is a multiple of its page size (so of 512),
// and client/v3/snapshot's hasChecksum tests size%512 == 32.
func HasTrailer(n int64) bool { return n%512 == sha256.Size }

// TrailerHash hashes everything written to it but the last sha256.Size
// bytes, which it keeps: once a whole snapshot went through, Check compares
// the two, as etcdutl's restore does.
type TrailerHash struct {
	h     hash.Hash
	tail  [sha256.Size]byte
	n     int // bytes held in tail
	total int64
}

// NewTrailerHash returns an empty TrailerHash.
func NewTrailerHash() *TrailerHash { return &TrailerHash{h: sha256.New()} }

// Write implements io.Writer; it never fails.
func (t *TrailerHash) Write(p []byte) (int, error) {
	t.total += int64(len(p))
	if len(p) >= len(t.tail) {
		t.h.Write(t.tail[:t.n])
		t.h.Write(p[:len(p)-len(t.tail)])
		copy(t.tail[:], p[len(p)-len(t.tail):])
		t.n = len(t.tail)
		return len(p), nil
	}
	if over := t.n + len(p) - len(t.tail); over > 0 {
		t.h.Write(t.tail[:over])
		copy(t.tail[:], t.tail[over:t.n])
		t.n -= over
	}
	copy(t.tail[t.n:], p)
	t.n += len(p)
	return len(p), nil
}

// Check reports whether what was written is an etcd snapshot whose trailer
// matches its content; name is for the message. The error wraps
// ErrNoTrailer or ErrTrailerMismatch.
func (t *TrailerHash) Check(name string) error {
	if !HasTrailer(t.total) {
		return fmt.Errorf("%w: %s is truncated or not an etcd snapshot: its size %d leaves no room for etcd's sha256 trailer (size %% 512 must be 32)",
			ErrNoTrailer, name, t.total)
	}
	if sum := t.h.Sum(nil); !bytes.Equal(sum, t.tail[:]) {
		return fmt.Errorf("%w: %s is corrupted: its content hashes to sha256 %x, its trailer says %x", ErrTrailerMismatch, name, sum, t.tail[:])
	}
	return nil
}

// Verified is what Verify found.
type Verified struct {
	Path string
	Size int64
	// SHA256 is the hex sha256 of the whole file (trailer included), the
	// hash manifests record.
	SHA256 string
	// Manifest is the snapshot's manifest, nil when it has none.
	Manifest *agentv1.EtcdSnapshotManifest
}

// Verify checks the snapshot file at path: etcd's sha256 trailer against
// its content and, when a manifest lies next to it (ManifestPath), the
// file's size and sha256 against the manifest. A file that does not verify
// is an error wrapping ErrNoTrailer, ErrTrailerMismatch or
// ErrManifestMismatch.
func Verify(path string) (*Verified, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("verify snapshot: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("verify snapshot: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("verify snapshot: %s is not a regular file", path)
	}
	th, whole := NewTrailerHash(), sha256.New()
	n, err := io.Copy(io.MultiWriter(th, whole), f)
	if err != nil {
		return nil, fmt.Errorf("verify snapshot: read %s: %w", path, err)
	}
	if err := th.Check(path); err != nil {
		return nil, err
	}
	v := &Verified{Path: path, Size: n, SHA256: hex.EncodeToString(whole.Sum(nil))}
	m, err := ReadManifest(ManifestPath(path))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return v, nil
	case err != nil:
		return nil, err
	}
	v.Manifest = m
	if m.GetSize() != v.Size || m.GetSha256() != v.SHA256 {
		return nil, fmt.Errorf("%w: %s has %d bytes with sha256 %s; its manifest %s says %d bytes with sha256 %s",
			ErrManifestMismatch, path, v.Size, v.SHA256, ManifestPath(path), m.GetSize(), m.GetSha256())
	}
	return v, nil
}

// ManifestPath is where the manifest of the snapshot at path lives:
// <path>.json.
func ManifestPath(path string) string { return path + ".json" }

// ReadManifest reads a snapshot manifest. A missing file is an error
// wrapping fs.ErrNotExist.
func ReadManifest(path string) (*agentv1.EtcdSnapshotManifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m := &agentv1.EtcdSnapshotManifest{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("read snapshot manifest %s: %w", path, err)
	}
	return m, nil
}

// MarshalManifest renders m as manifest files hold it: indented JSON with
// the proto field names.
func MarshalManifest(m *agentv1.EtcdSnapshotManifest) []byte {
	// protojson varies its whitespace on purpose; indent the compact form
	// for a stable file.
	b, _ := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
	var out bytes.Buffer
	json.Indent(&out, b, "", "  ")
	out.WriteByte('\n')
	return out.Bytes()
}
