package etcd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/encoding/protojson"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// ManifestPath is where the manifest of the snapshot at path lives:
// <path>.json.
func ManifestPath(path string) string { return path + ".json" }

// ReadManifest reads a snapshot manifest (protojson of
// EtcdSnapshotManifest). A missing file is an error wrapping
// fs.ErrNotExist.
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

// MarshalManifest renders m as the manifest file holds it: indented JSON
// with the proto field names.
func MarshalManifest(m *agentv1.EtcdSnapshotManifest) []byte {
	// protojson varies its whitespace on purpose; indent the compact form
	// for a stable file.
	b, _ := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
	var out bytes.Buffer
	json.Indent(&out, b, "", "  ")
	out.WriteByte('\n')
	return out.Bytes()
}

// writeFileAtomic writes b to path with mode through a temporary file in
// the same directory: written, synced, renamed, directory synced.
func writeFileAtomic(path string, b []byte, mode fs.FileMode) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(mode); err != nil {
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
