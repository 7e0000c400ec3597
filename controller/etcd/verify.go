package etcd

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

// A snapshot file is etcd's bbolt database followed by the sha256 of that
// database (etcd's trailer); client/v3/snapshot's hasChecksum tests that
// size%512 == 32, etcdutl's restore compares the trailer with the content.
// The agent checks the same on the node (agent/etcd); this is the
// controller's own copy, for files it holds.

// Verified is what Verify found.
type Verified struct {
	Path string
	Size int64
	// SHA256 is the hex sha256 of the whole file, the hash manifests keep.
	SHA256 string
	// Manifest is the snapshot's manifest (ManifestPath), nil without one.
	Manifest *agentv1.EtcdSnapshotManifest
}

// ManifestPath is where the manifest of the snapshot at path lives.
func ManifestPath(path string) string { return path + ".json" }

// Verify checks etcd's sha256 trailer of the snapshot at path and, when it
// has a manifest, size and sha256 against it. A file that does not verify
// is an error wrapping ErrNoTrailer, ErrTrailerMismatch or
// ErrManifestMismatch.
func Verify(path string) (*Verified, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("verify snapshot: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return nil, fmt.Errorf("verify snapshot: %w", err)
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("verify snapshot: %s is not a regular file", path)
	}
	th, whole := &trailerHash{h: sha256.New()}, sha256.New()
	n, err := io.Copy(io.MultiWriter(th, whole), f)
	if err != nil {
		return nil, fmt.Errorf("verify snapshot: read %s: %w", path, err)
	}
	if n%512 != sha256.Size {
		return nil, fmt.Errorf("%w: %s is truncated or not an etcd snapshot: its size %d leaves no room for etcd's sha256 trailer (size %% 512 must be 32)",
			ErrNoTrailer, path, n)
	}
	if sum := th.h.Sum(nil); !bytes.Equal(sum, th.tail[:]) {
		return nil, fmt.Errorf("%w: %s is corrupted: its content hashes to sha256 %x, its trailer says %x", ErrTrailerMismatch, path, sum, th.tail[:])
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

// ReadManifest reads a snapshot manifest (protojson). A missing file is an
// error wrapping fs.ErrNotExist.
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

// MarshalManifest renders m as manifest files hold it.
func MarshalManifest(m *agentv1.EtcdSnapshotManifest) []byte {
	// protojson varies its whitespace on purpose; indent the compact form
	// for a stable file.
	b, _ := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
	var out bytes.Buffer
	json.Indent(&out, b, "", "  ")
	out.WriteByte('\n')
	return out.Bytes()
}

// trailerHash hashes all but the last sha256.Size bytes written to it and
// keeps those.
type trailerHash struct {
	h    hash.Hash
	tail [sha256.Size]byte
	n    int
}

func (t *trailerHash) Write(p []byte) (int, error) {
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
