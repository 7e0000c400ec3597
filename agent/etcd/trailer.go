package etcd

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// etcd appends the sha256 of a snapshot's content to the snapshot stream.
// A snapshot file is then the bbolt database, whose size is a multiple of
// its page size (so of 512), followed by those 32 bytes: etcd's
// hasChecksum tests size%512 == 32, and etcdutl's restore compares the
// trailer with the sha256 of everything before it. Save and Verify check
// both.

// hasTrailer reports whether a file of size n has room for etcd's trailer,
// as client/v3/snapshot's hasChecksum does.
func hasTrailer(n int64) bool { return n%512 == sha256.Size }

// trailerHash hashes everything written to it but the last sha256.Size
// bytes, which it keeps: once the whole file went through, check compares
// the two.
type trailerHash struct {
	h     hash.Hash
	tail  [sha256.Size]byte
	n     int // bytes held in tail
	total int64
}

func newTrailerHash() *trailerHash { return &trailerHash{h: sha256.New()} }

func (t *trailerHash) Write(p []byte) (int, error) {
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

// check reports whether what was written is an etcd snapshot whose trailer
// matches its content; name is for the message.
func (t *trailerHash) check(name string) error {
	if !hasTrailer(t.total) {
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
	// Revision is the store's revision in the snapshot.
	Revision int64
	// Manifest is the snapshot's manifest, nil when it has none.
	Manifest *agentv1.EtcdSnapshotManifest
}

// Verify checks the snapshot file at path: etcd's sha256 trailer against
// its content and, when a manifest lies next to it (ManifestPath), the
// file's size and sha256 against the manifest. It returns an error wrapping
// ErrNoTrailer, ErrTrailerMismatch or ErrManifestMismatch when the file
// does not verify.
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
	th, whole := newTrailerHash(), sha256.New()
	n, err := io.Copy(io.MultiWriter(th, whole), f)
	if err != nil {
		return nil, fmt.Errorf("verify snapshot: read %s: %w", path, err)
	}
	if err := th.check(path); err != nil {
		return nil, err
	}
	v := &Verified{Path: path, Size: n, SHA256: hex.EncodeToString(whole.Sum(nil))}
	if v.Revision, err = snapshotRevision(path); err != nil {
		return nil, fmt.Errorf("verify snapshot: %w", err)
	}
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
