package etcd

import (
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// keyBucket is etcd's bucket of key revisions: keys are revisions (8 bytes
// big-endian main revision, '_', 8 bytes sub revision, and a 't' for a
// tombstone), so the last key holds the latest revision.
var keyBucket = []byte("key")

// snapshotRevision reads the store's revision from a snapshot file, as
// etcdutl's snapshot status does: the main revision of the last key of
// the key bucket. etcd's snapshot stream carries no revision, and asking
// the member before the snapshot would be off by the writes in between.
// The file is opened read-only; etcd's trailer after the database does not
// disturb bbolt.
func snapshotRevision(path string) (int64, error) {
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return 0, fmt.Errorf("open snapshot database %s: %w", path, err)
	}
	defer db.Close()
	var rev int64
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(keyBucket)
		if b == nil {
			return fmt.Errorf("snapshot %s has no %q bucket: not an etcd v3 database", path, keyBucket)
		}
		k, _ := b.Cursor().Last()
		if k == nil {
			return nil // no keys ever written
		}
		if len(k) < 17 || k[8] != '_' {
			return fmt.Errorf("snapshot %s: malformed revision key %x", path, k)
		}
		rev = int64(binary.BigEndian.Uint64(k[:8]))
		return nil
	})
	return rev, err
}
